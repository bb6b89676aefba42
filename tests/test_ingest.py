"""Group commit of beacons (ingest.py): concurrent beacons, the cap inside a batch, failures."""

from __future__ import annotations

import threading
import typing as t
from datetime import datetime

import pytest
import sqlalchemy as sa
from flask_utm_tracker import ingest, touch_recorded
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from .conftest import HostApp, make_app
from .test_beacon import beacon, touch, touches


def test_concurrent_beacons_are_batched_and_each_stored_once(
    env: HostApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    write = ingest._write_batch

    def counted(engine: t.Any, table: t.Any, cap: int, batch: list[t.Any]) -> None:
        sizes.append(len(batch))
        write(engine, table, cap, batch)

    monkeypatch.setattr(ingest, "_write_batch", counted)
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
        rows = ingest.rows_of([touch(n) for n in range(5)], context, "visitor")
    items = [ingest._Beacon("visitor", rows[:2], True), ingest._Beacon("visitor", rows[2:], True)]
    with env.app.app_context():
        ingest._write_batch(env.db.engine, table, 3, items)
    assert [len(item.stored) for item in items] == [2, 1]
    assert [t.touch_id for t in touches(env)] == ["touch-0", "touch-1", "touch-2"]


def test_a_bad_beacon_fails_alone(env: HostApp) -> None:
    table = env.tracker.Touch.__table__
    with env.app.test_request_context():
        context = env.tracker.context(env.tracker.settings())
        good = ingest.rows_of([touch(1)], context, "good")
        bad = [dict(ingest.rows_of([touch(2)], context, "bad")[0], channel=None)]  # NOT NULL
    items = [ingest._Beacon("good", good, True), ingest._Beacon("bad", bad, True)]
    with env.app.app_context():
        ingest._write_batch(env.db.engine, table, 200, items)
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


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5), st.floats())
_ids = st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True), _values)
_touch = st.one_of(
    _values,
    st.fixed_dictionaries(
        {"id": _ids},
        optional={
            "ts": _values,
            "url": _values,
            "referrer": _values,
            "params": st.one_of(_values, st.dictionaries(st.text(max_size=101), _values)),
            "other": _values,
        },
    ),
)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        _values,
        st.fixed_dictionaries(
            {}, optional={"v": _ids, "touches": st.one_of(_values, st.lists(_touch, max_size=3))}
        ),
    )
)
def test_plain_beacon_agrees_with_the_schema(data: t.Any) -> None:
    from flask_utm_tracker.schemas import BeaconSchema

    _agrees(ingest.plain_beacon, BeaconSchema(), data)


@settings(max_examples=500, deadline=None)
@given(_touch)
def test_plain_touch_agrees_with_the_schema(data: t.Any) -> None:
    """The cookie's touches at login skip marshmallow the same way."""
    from flask_utm_tracker.schemas import TouchSchema

    _agrees(ingest.plain_touch, TouchSchema(), data)


def _agrees(fast_path: t.Callable[[t.Any], t.Any], schema: t.Any, data: t.Any) -> None:
    """What the fast path accepts, the schema accepts too, and loads to the same value."""
    fast = fast_path(data)
    if fast is None:
        return
    try:
        assert schema.load(data) == fast
    except ValidationError:  # pragma: no cover - the assertion's message says it
        pytest.fail(f"{fast_path.__name__} accepted what the schema rejects: {data!r}")


def test_the_hot_path_stores_what_sqlalchemy_stores(db_url: str) -> None:
    """The group-commit statement (driver SQL; JSON rows on PostgreSQL) and a Core insert of
    the same touch give the same row back: text beyond ASCII, JSON columns, time zones."""
    from flask_utm_tracker import reconcile

    env = make_app(db_url, UTM_TRACKER_CUSTOM_TAGS=["ref"])
    table = env.tracker.Touch.__table__
    raw = {
        "id": "touch-1",
        "ts": 1_750_000_000_123,
        "url": "https://example.com/caf\u00e9?utm_source=X&gclid=abc&ref=friend",
        "referrer": "https://www.google.com/search?q=caf%C3%A9+cr\u00e8me",
        "params": {
            "utm_source": "\u00dcn\u00efcode \u2603 \U0001f600",
            "utm_campaign": 'quote " back\\slash',
            "gclid": "abc",
            "fbclid": "xyz",
            "ref": "friend",
        },
    }
    with env.app.test_request_context():
        context = env.tracker.context(env.tracker.settings())
        [row] = ingest.rows_of([raw], context, "hot")
    with env.app.app_context():
        engine = env.db.engine
        item = ingest._Beacon("hot", [row], True)
        ingest._write_batch(engine, table, 200, [item])
        assert item.error is None and len(item.stored) == 1
        with engine.begin() as conn:
            reconcile.store_touches(conn, table, [dict(row, visitor_id="core")])
        with engine.connect() as conn:
            stored = {r.visitor_id: r._asdict() for r in conn.execute(sa.select(table)).all()}
    assert set(stored) == {"hot", "core"}
    skip = {"id", "visitor_id", "received_at"}
    hot = {k: v for k, v in stored["hot"].items() if k not in skip}
    core = {k: v for k, v in stored["core"].items() if k not in skip}
    assert hot == core
    assert hot["source"] == "\u00fcn\u00efcode \u2603 \U0001f600"
    assert hot["click_ids"] == {"gclid": "abc", "fbclid": "xyz"}
    assert hot["custom_tags"] == {"ref": "friend"}
    assert hot["timestamp"].replace(tzinfo=None) == datetime(2025, 6, 15, 15, 6, 40, 123000)


def test_a_lone_beacon_does_not_wait_for_company(
    env: HostApp, client: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader gives other threads turns (each a system call) only when the last write
    carried several beacons, so a beacon on a quiet site is stored at once."""
    turns: list[float] = []
    monkeypatch.setattr(ingest.time, "sleep", turns.append)
    for n in range(3):
        assert beacon(client, {"v": f"visitor-{n}", "touches": [touch(n)]}).status_code == 204
    assert turns == []
    with env.app.app_context():
        ingest.group_commit(env.db.engine)._last_batch = 5  # as after a busy moment
    assert beacon(client, {"v": "visitor-9", "touches": [touch(9)]}).status_code == 204
    assert turns == [0] * ingest.GATHER_TURNS
    assert len(touches(env)) == 4
