"""The store: group commit of beacons (concurrent beacons, the cap inside a batch, failures),
through SQLAlchemy so that the host's engine events see every statement."""

from __future__ import annotations

import threading
import typing as t
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_login import LoginManager, UserMixin, login_user
from flask_sqlalchemy import SQLAlchemy
from flask_utm_tracker import UTMTracker, store, touch_recorded
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


class HexUUID(sa.TypeDecorator[uuid.UUID]):
    """A host's user id type: a UUID kept as 32 hex digits (no dashes) in CHAR(32)."""

    impl = sa.CHAR(32)
    cache_ok = True

    def process_bind_param(self, value: t.Any, dialect: t.Any) -> str | None:
        return None if value is None else uuid.UUID(str(value)).hex

    def process_result_value(self, value: t.Any, dialect: t.Any) -> uuid.UUID | None:
        return None if value is None else uuid.UUID(value)


def test_a_user_id_type_of_the_hosts_own_is_written_through_it(db_url: str) -> None:
    """The rows a login writes go through the user id column's own type (here 32 hex digits in
    CHAR(32)), on PostgreSQL's one-parameter insert too: a UUID written in its usual 36-character
    form would not fit, and the user's rows would not join."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test-secret", TESTING=True, SQLALCHEMY_DATABASE_URI=db_url)
    db = SQLAlchemy()

    class Member(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "members"
        id = sa.Column(HexUUID, primary_key=True, default=uuid.uuid4)
        email = sa.Column(sa.String(200), unique=True, nullable=False)

    login_manager = LoginManager(app)
    login_manager.user_loader(lambda user_id: db.session.get(Member, uuid.UUID(user_id)))
    db.init_app(app)
    tracker = UTMTracker(app, db=db, user_model=Member)

    @app.post("/login")
    def sign_in() -> str:
        member = Member(email="ann@example.com")
        db.session.add(member)
        db.session.commit()
        login_user(member)
        return str(member.id)

    with app.app_context():
        db.create_all()
    client = app.test_client()
    sent = [touch(n, params={"utm_source": "news", "gclid": "G'\"ü"}) for n in range(10)]
    assert beacon(client, {"v": "visitor", "touches": sent}).status_code == 204
    member_id = uuid.UUID(client.post("/login").get_data(as_text=True))
    with app.app_context():
        member = db.session.get(Member, member_id)
        written = sorted(member.lead_sources, key=lambda row: row.touch_id)
        stored = db.session.execute(sa.text("SELECT DISTINCT user_id FROM utm_lead_source"))
        assert [value.strip() for (value,) in stored] == [member_id.hex]
        claimed = db.session.scalars(sa.select(tracker.Touch.claimed_by)).all()
        db.session.remove()
        db.engine.dispose()
    assert [row.touch_id for row in written] == sorted(f"touch-{n}" for n in range(10))
    assert {row.user_id for row in written} == {member_id}
    assert {row.gclid for row in written} == {"G'\"ü"}
    assert written[0].click_ids == {"gclid": "G'\"ü"}
    at = written[0].timestamp  # the visitor's first contact: a moment ago, in UTC
    at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
    assert abs(datetime.now(timezone.utc) - at) < timedelta(minutes=1)
    assert claimed == [member_id] * 10


def test_insert_ignore_returns_only_the_rows_it_inserted(env: HostApp) -> None:
    """Rows already there (a resent touch) come back neither as inserted nor as errors, on each
    dialect's statement, for one row and for many."""
    table = env.tracker.Touch.__table__
    with env.app.test_request_context():
        context = env.tracker.context(env.tracker.settings())
        values = store.touch_values(rows_of([touch(n) for n in range(12)], context, "visitor"))
    keys = ("visitor_id", "touch_id")
    with env.app.app_context(), env.db.engine.begin() as conn:
        first = store.insert_ignore(conn, table, values[:1], keys)
        more = store.insert_ignore(conn, table, values[:7], keys)
        rest = store.insert_ignore(conn, table, values, keys)
    assert [row["touch_id"] for row in first] == ["touch-0"]
    assert sorted(row["touch_id"] for row in more) == [f"touch-{n}" for n in range(1, 7)]
    assert sorted(row["touch_id"] for row in rest) == sorted(f"touch-{n}" for n in range(7, 12))
    ids = [row["id"] for row in first + more + rest]
    assert len(set(ids)) == 12
    stored = touches(env)
    assert sorted(t.id for t in stored) == sorted(ids)
    assert {t.received_at.replace(tzinfo=None) for t in stored} == {
        values[0]["received_at"].replace(tzinfo=None)
    }


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgresql_inserts_any_number_of_rows_with_one_statement(db_url: str) -> None:
    """psycopg converts the placeholders of a statement with more than 50 parameters anew on
    every run, and the server plans it anew: PostgreSQL gets the same short statement with one
    parameter for one row or a hundred."""
    env = make_app(db_url)
    table = env.tracker.Touch.__table__
    with env.app.test_request_context():
        context = env.tracker.context(env.tracker.settings())
        values = store.touch_values(rows_of([touch(n) for n in range(100)], context, "visitor"))
    seen: list[tuple[str, t.Any]] = []

    def record(conn: t.Any, cursor: t.Any, statement: str, parameters: t.Any, *_: t.Any) -> None:
        if statement.startswith("INSERT INTO utm_touch"):
            seen.append((statement, parameters))

    with env.app.app_context():
        sa.event.listen(env.db.engine, "before_cursor_execute", record)
        with env.db.engine.begin() as conn:
            for part in (values[:1], values[1:10], values[10:]):
                store.insert_ignore(conn, table, part, ("visitor_id", "touch_id"))
    assert len(seen) == 3
    assert len({statement for statement, _ in seen}) == 1
    assert all(len(parameters) == 1 for _, parameters in seen)
    assert len(touches(env)) == 100


def test_a_value_with_no_json_form_is_inserted_all_the_same(db_url: str) -> None:
    """A column whose values JSON cannot carry (bytes) takes the multi-row ``VALUES``."""
    engine = sa.create_engine(db_url)
    table = sa.Table(
        "blobs",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(20), nullable=False, unique=True),
        sa.Column("data", sa.LargeBinary),
    )
    table.create(engine)
    rows = [{"key": f"k{n}", "data": bytes([n, 0, 255])} for n in range(3)]
    with engine.begin() as conn:
        assert len(store.insert_ignore(conn, table, rows, ("key",))) == 3
        assert store.insert_ignore(conn, table, rows, ("key",)) == []
        assert conn.scalar(sa.select(table.c.data).where(table.c.key == "k2")) == b"\x02\x00\xff"
    engine.dispose()
