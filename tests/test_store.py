"""The store: group commit of beacons (concurrent beacons, the cap inside a batch, failures),
through SQLAlchemy so that the host's engine events see every statement."""

from __future__ import annotations

import threading
import typing as t

import pytest
import sqlalchemy as sa
from flask_utm_tracker import store, touch_recorded
from flask_utm_tracker.touches import rows_of

from .conftest import HostApp, make_app
from .helpers import beacon, touch, touches


def test_concurrent_beacons_are_batched_and_each_stored_once(
    env: HostApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    write = store._write_batch

    def counted(engine: t.Any, table: t.Any, cap: int, batch: list[t.Any]) -> None:
        sizes.append(len(batch))
        write(engine, table, cap, batch)

    monkeypatch.setattr(store, "_write_batch", counted)
    barrier = threading.Barrier(12)
    statuses: list[int] = []

    def send(n: int) -> None:
        client = env.app.test_client()
        body = {"v": f"visitor-{n}", "touches": [touch(n), touch(100 + n)]}
        barrier.wait(timeout=10)
        for _ in range(3):  # resent: stored once
            statuses.append(beacon(client, body).status_code)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == [204] * 36
    assert len(touches(env)) == 24
    assert sum(sizes) == 36 and len(sizes) <= 36


def test_the_cap_holds_inside_one_batch(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_MAX_TOUCHES_PER_VISITOR=3)
    table = env.tracker.Touch.__table__
    with env.app.test_request_context():
        context = env.tracker.context(env.tracker.settings())
        rows = rows_of([touch(n) for n in range(5)], context, "visitor")
    items = [store._Beacon("visitor", rows[:2]), store._Beacon("visitor", rows[2:])]
    with env.app.app_context():
        store._write_batch(env.db.engine, table, 3, items)
    assert [len(item.stored) for item in items] == [2, 1]
    assert [t.touch_id for t in touches(env)] == ["touch-0", "touch-1", "touch-2"]


def test_a_bad_beacon_fails_alone(env: HostApp) -> None:
    table = env.tracker.Touch.__table__
    with env.app.test_request_context():
        context = env.tracker.context(env.tracker.settings())
        good = rows_of([touch(1)], context, "good")
        bad = [dict(rows_of([touch(2)], context, "bad")[0], channel=None)]  # NOT NULL
    items = [store._Beacon("good", good), store._Beacon("bad", bad)]
    with env.app.app_context():
        store._write_batch(env.db.engine, table, 200, items)
    assert items[0].error is None and len(items[0].stored) == 1
    assert isinstance(items[1].error, sa.exc.IntegrityError)


def test_a_failed_write_is_503_with_retry_after(env: HostApp, client: t.Any) -> None:
    with env.app.app_context():
        env.tracker.Touch.__table__.drop(env.db.engine)
    response = beacon(client, {"v": "visitor", "touches": [touch(1)]})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"


def test_touch_recorded_gets_the_new_rows_only(env: HostApp, client: t.Any) -> None:
    got: list[str] = []
    with touch_recorded.connected_to(lambda sender, touch, user_id: got.append(touch["touch_id"])):
        for _ in range(2):
            assert beacon(client, {"v": "visitor", "touches": [touch(1)]}).status_code == 204
    assert got == ["touch-1"]


def test_a_hosts_engine_listener_sees_the_beacon_insert(env: HostApp, client: t.Any) -> None:
    """APM tools, ``echo`` and ``SQLALCHEMY_RECORD_QUERIES`` hook the engine's cursor events."""
    seen: list[str] = []

    def before(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        seen.append(statement)

    with env.app.app_context():
        engine = env.db.engine
    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        assert beacon(client, {"v": "visitor", "touches": [touch(1)]}).status_code == 204
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)
    table = env.tracker.Touch.__table__.name
    assert any(s.lstrip().upper().startswith("INSERT INTO " + table.upper()) for s in seen), seen


def test_the_cap_counts_unclaimed_rows_only(db_url: str) -> None:
    """A visitor who logged in is not refused new touches for the ones their login claimed."""
    env = make_app(db_url, UTM_TRACKER_MAX_TOUCHES_PER_VISITOR=2)
    client = env.app.test_client()
    body = {"v": "visitor", "touches": [touch(1), touch(2), touch(3)]}
    assert beacon(client, body).status_code == 204
    assert [t.touch_id for t in touches(env)] == ["touch-1", "touch-2"]  # the cap
    assert client.post("/login/a@example.com").status_code == 200  # claims them
    assert client.post("/logout").status_code == 200
    assert beacon(client, {"v": "visitor", "touches": [touch(4), touch(5)]}).status_code == 204
    assert sorted(t.touch_id for t in touches(env)) == [f"touch-{n}" for n in (1, 2, 4, 5)]
