"""Parallel logins of one visitor write each touch once (PostgreSQL and SQLite)."""

from __future__ import annotations

import threading

import pytest
from flask_utm_tracker import cookie as cookies

from .conftest import HostApp
from .helpers import VISITOR, beacon, login, rows

TOUCHES = [
    {"id": f"pending-{n:02d}", "ts": 1_750_000_000_000 + n, "params": {"utm_source": f"s{n}"}}
    for n in range(20)
]


@pytest.mark.parametrize("parallel", [8])
def test_parallel_logins_write_each_touch_once(
    env: HostApp, parallel: int, caplog: pytest.LogCaptureFixture
) -> None:
    login(env.app.test_client())  # the account exists before the race
    # Half of the touches reached the server by beacon, all of them are in the cookie.
    assert beacon(env.app.test_client(), {"v": VISITOR, "touches": TOUCHES[:10]}).status_code == 204
    value = cookies.encode(cookies.CookieState(VISITOR, pending=[dict(x) for x in TOUCHES]))
    assert len(cookies.decode(value).pending) == 20  # type: ignore[union-attr]

    barrier = threading.Barrier(parallel)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        client = env.app.test_client()
        client.set_cookie("utm_tracker", value)
        try:
            barrier.wait(timeout=10)
            statuses.append(client.post("/login/ann@example.com").status_code)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert statuses == [200] * parallel
    got = rows(env)
    assert sorted(r.touch_id for r in got) == [x["id"] for x in TOUCHES]
    assert len({r.user_id for r in got}) == 1
    # No transaction failed and retried: ON CONFLICT DO NOTHING absorbed every clash.
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == []


def test_lead_sources_unique_per_user_and_touch(env: HostApp) -> None:
    import sqlalchemy as sa

    client = env.app.test_client()
    client.get("/landing?utm_source=once")
    login(client)
    (row,) = rows(env)
    with env.app.app_context(), pytest.raises(sa.exc.IntegrityError):
        env.db.session.add(env.tracker.LeadSource(user_id=row.user_id, touch_id=row.touch_id))
        env.db.session.commit()
