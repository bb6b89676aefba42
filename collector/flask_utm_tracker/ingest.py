"""The beacon's hot path: anonymous ``Touch`` rows stored by group commit.

A beacon is answered 2xx only once its own rows are committed. Committed one beacon at a time,
each request pays a transaction of its own (on PostgreSQL ``BEGIN``, a count for the per-visitor
cap, the ``INSERT`` and ``COMMIT`` with its WAL flush; on SQLite the database's one write lock),
and under load the commits, not Python, set the pace.

Here the request threads of one process queue their beacons, and the thread that finds no write
in progress becomes the *leader*: it takes every queued beacon and writes all of their rows with
one multi-row ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` that also applies the per-visitor
cap, run in autocommit so that the statement is the transaction; then it wakes the others. A
request returns once the statement that carried its rows has committed, so "a 2xx means it is
stored" holds for each beacon. When that statement fails, every beacon in it gets the error (the
caller answers 503); a failure that is not a lost connection is retried one beacon at a time, so
one bad beacon cannot fail its neighbours. Under light load a batch holds one beacon; batches grow
by themselves as requests arrive during a write. No thread is started (nothing to restart after
gunicorn forks), and with one thread per process it is one beacon per statement.

The validated beacon is turned into rows without validating it again, its body is checked by a
plain-Python fast path before marshmallow, and crawlerdetect's verdict is cached per user agent.
See bench/README.md for the measured effect of each choice.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import time
import typing as t
import weakref
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import reconcile
from .abuse import is_bot as _is_bot
from .cookie import ID_RE as _ID
from .models import TOUCH_FIELDS, utcnow
from .params import MAX_PARAMS
from .schemas import MAX_TOUCHES
from .touches import Context, fields

logger = logging.getLogger("flask_utm_tracker")

#: Most beacons written by one commit.
MAX_BATCH = 256
#: A leader finding fewer beacons queued lets the other threads run before writing, at most
#: :data:`GATHER_TURNS` times.
GATHER_BELOW = 4
GATHER_TURNS = 3
#: User agents up to this length have their crawler check cached.
_UA_CACHED = 512


class StoreError(Exception):
    """The database did not store a beacon (the caller answers 503)."""


@functools.lru_cache(maxsize=4096)
def _is_bot_cached(user_agent: str) -> bool:
    return _is_bot(user_agent)


def is_bot(user_agent: str | None) -> bool:
    """:func:`flask_utm_tracker.abuse.is_bot`, cached per user agent: crawlerdetect runs a few
    hundred regular expressions per call, and real traffic repeats a few thousand browser agents.
    """
    if user_agent and len(user_agent) <= _UA_CACHED:
        return _is_bot_cached(user_agent)
    return _is_bot(user_agent)


def plain_beacon(data: t.Any) -> dict[str, t.Any] | None:
    """The beacon the schema would load from ``data``, when ``data`` has the snippet's plain
    shape; ``None`` for anything else, which then goes through
    :class:`~flask_utm_tracker.schemas.BeaconSchema` (it says what is wrong, or accepts it).

    Accepts only what the schema accepts and returns what it returns (unknown keys dropped,
    missing optional fields ``None``), at a tenth of its cost: marshmallow's load was the largest
    part of a beacon's Python time.
    """
    if type(data) is not dict:
        return None
    visitor = data.get("v")
    touches = data.get("touches")
    if (
        type(visitor) is not str
        or not _ID.fullmatch(visitor)
        or type(touches) is not list
        or not 1 <= len(touches) <= MAX_TOUCHES
    ):
        return None
    loaded = []
    for touch in touches:
        clean = plain_touch(touch)
        if clean is None:
            return None
        loaded.append(clean)
    return {"v": visitor, "touches": loaded}


def plain_touch(touch: t.Any) -> dict[str, t.Any] | None:
    """What :class:`~flask_utm_tracker.schemas.TouchSchema` loads from ``touch`` when it has the
    plain shape (beacon or cookie); ``None`` for anything else."""
    if type(touch) is not dict:
        return None
    id_ = touch.get("id")
    ts = touch.get("ts")
    url = touch.get("url")
    referrer = touch.get("referrer")
    params = touch.get("params")
    if (
        type(id_) is not str
        or not _ID.fullmatch(id_)
        or (ts is not None and type(ts) is not int)
        or (url is not None and type(url) is not str)
        or (referrer is not None and type(referrer) is not str)
        or not (url or params)
    ):
        return None
    if params is not None:
        if type(params) is not dict or len(params) > MAX_PARAMS:
            return None
        for key, value in params.items():
            if type(key) is not str or len(key) > 100 or type(value) is not str:
                return None
        params = dict(params)
    return {"id": id_, "ts": ts, "url": url, "referrer": referrer, "params": params}


def rows_of(
    touches: t.Iterable[t.Mapping[str, t.Any]], context: Context, visitor_id: str
) -> list[dict[str, t.Any]]:
    """Row fields of touches already validated by the beacon schema (not validated again)."""
    rows = []
    for touch in touches:
        row = fields(touch, context, visitor_id)
        if row is not None:
            rows.append(row)
    return rows


@dataclass(eq=False)
class _Beacon:
    visitor_id: str
    rows: list[dict[str, t.Any]]
    returning: bool
    done: bool = False
    stored: list[dict[str, t.Any]] = field(default_factory=list)
    error: BaseException | None = None
    #: Held until the beacon is done or its thread is to lead the next write.
    wake: threading.Lock = field(default_factory=threading.Lock)


class GroupCommit:
    """One per engine and process: the queue of beacons waiting for a write.

    A thread that finds no write in progress leads: it writes the queued beacons, wakes their
    threads, and hands the lead to the thread of the first beacon still queued, if any. Only the
    threads whose beacons are done, and the next leader, are woken.
    """

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self._mutex = threading.Lock()
        self._queue: list[_Beacon] = []
        self._writing = False
        self._last_batch = 0

    def store(
        self,
        engine: Engine,
        table: sa.Table,
        cap: int,
        visitor_id: str,
        rows: list[dict[str, t.Any]],
        returning: bool = True,
    ) -> list[dict[str, t.Any]]:
        """Store ``rows`` of ``visitor_id`` (at most ``cap`` rows per visitor) and return once
        they are committed.

        :param returning: whether to return the rows inserted (for the ``touch_recorded``
            signal); without it the statement skips ``RETURNING``.
        :return: the rows inserted now (a resent touch is not inserted again), or ``[]``
            unless ``returning``.
        :raises StoreError: the commit carrying these rows failed.
        """
        item = _Beacon(visitor_id, rows, returning)
        item.wake.acquire()
        with self._mutex:
            self._queue.append(item)
            lead = not self._writing
            self._writing = True
        if not lead:
            item.wake.acquire()  # released when done, or when this thread is to lead
        if not item.done:
            try:
                while not item.done:
                    # Only under load (the last write carried more than one beacon): a lone
                    # request would wait for nothing (each turn is a system call, ~0.1 ms).
                    turns = 0 if self._last_batch > 1 else GATHER_TURNS
                    while len(self._queue) < GATHER_BELOW and turns < GATHER_TURNS:
                        # The GIL to the other threads first: the beacons they are reading
                        # join this write instead of waiting for the next one.
                        time.sleep(0)
                        turns += 1
                    with self._mutex:
                        batch = self._queue[: self.max_batch]
                        del self._queue[: self.max_batch]
                    self._last_batch = len(batch)
                    try:
                        _write_batch(engine, table, cap, batch)
                    finally:
                        for other in batch:
                            if other is not item:
                                other.wake.release()
            finally:
                with self._mutex:
                    if self._queue:
                        self._queue[0].wake.release()  # the lead passes on, still writing
                    else:
                        self._writing = False
        if item.error is not None:
            if isinstance(item.error, sa.exc.SQLAlchemyError):
                raise StoreError("The database did not store the beacon.") from item.error
            raise item.error
        return item.stored


_writers: weakref.WeakKeyDictionary[Engine, GroupCommit] = weakref.WeakKeyDictionary()
_writers_lock = threading.Lock()


def group_commit(engine: Engine) -> GroupCommit:
    """The :class:`GroupCommit` of ``engine`` in this process."""
    writer = _writers.get(engine)
    if writer is None:
        with _writers_lock:
            writer = _writers.get(engine)
            if writer is None:
                writer = _writers[engine] = GroupCommit(MAX_BATCH)
    return writer


if hasattr(os, "register_at_fork"):  # a forked worker starts with no queue and no lock held
    os.register_at_fork(after_in_child=_writers.clear)


def _write_batch(engine: Engine, table: sa.Table, cap: int, batch: list[_Beacon]) -> None:
    """Write ``batch`` with one statement; on failure, retry each beacon alone unless the
    database is unreachable. Every beacon of ``batch`` is ``done`` on return.
    """
    try:
        try:
            _write(engine, table, cap, batch)
        except sa.exc.SQLAlchemyError as err:
            for item in batch:
                item.stored = []
            unreachable = isinstance(err, sa.exc.OperationalError) or getattr(
                err, "connection_invalidated", False
            )
            if len(batch) == 1 or unreachable:
                logger.exception("Storing %d beacon(s) failed.", len(batch))
                for item in batch:
                    item.error = err
            else:
                for item in batch:
                    try:
                        _write(engine, table, cap, [item])
                    except sa.exc.SQLAlchemyError as one:
                        logger.exception("Storing a beacon failed.")
                        item.stored = []
                        item.error = one
    except BaseException as err:  # a bug: answer every beacon of the batch, never hang one
        for item in batch:
            item.error = item.error or err
        raise
    finally:
        for item in batch:
            item.done = True


def _write(engine: Engine, table: sa.Table, cap: int, batch: list[_Beacon]) -> None:
    """Store the rows of ``batch`` (each visitor's rows past ``cap`` dropped), committed on
    return; fill each beacon's ``stored`` when one of them asked for the rows.
    """
    # Each visitor's rows in order, a resent touch once; ``ordinal`` counts the visitor's rows
    # in this batch, so that the cap keeps the first ones, as a beacon at a time would.
    owner: dict[tuple[str, str], _Beacon] = {}
    wanted: list[tuple[dict[str, t.Any], int]] = []
    ordinal: dict[str, int] = {}
    for item in batch:
        for row in item.rows:
            key = (item.visitor_id, row["touch_id"])
            n = ordinal.get(item.visitor_id, 0)
            ordinal[item.visitor_id] = n + 1
            if key not in owner:
                owner[key] = item
                wanted.append((row, n))
    # One order for every writer: concurrent batches holding the same keys cannot deadlock.
    wanted.sort(key=lambda pair: (pair[0]["visitor_id"], pair[0]["touch_id"]))
    returning = any(item.returning for item in batch)
    sql = _statements(engine.dialect, table)
    if sql is None:
        inserted = _write_core(engine, table, cap, wanted)
    else:
        inserted = _write_sql(engine, sql, cap, wanted, returning)
    for row in inserted:
        owner[(row["visitor_id"], row["touch_id"])].stored.append(row)


def _write_core(
    engine: Engine, table: sa.Table, cap: int, wanted: list[tuple[dict[str, t.Any], int]]
) -> list[dict[str, t.Any]]:
    """Other dialects: count the visitors' rows, then insert, in one transaction."""
    with engine.begin() as conn:
        visitors = sorted({row["visitor_id"] for row, _ in wanted})
        counted = conn.execute(
            sa.select(table.c.visitor_id, sa.func.count())
            .where(table.c.visitor_id.in_(visitors))
            .group_by(table.c.visitor_id)
        ).all()
        held: dict[str, int] = {v: int(n) for v, n in counted}
        rows = [row for row, n in wanted if held.get(row["visitor_id"], 0) + n < cap]
        return reconcile.store_touches(conn, table, rows)


@dataclass(frozen=True)
class _SQL:
    """The hot path's statement for one table and dialect, as driver SQL.

    With ``values`` set (SQLite): ``head``, one ``values`` group per row, then ``tail``, and the
    columns' bind processors for the values. Without (PostgreSQL): ``head + tail`` is one
    constant statement whose first parameter is the rows as one JSON array.
    """

    head: str
    values: str | None
    tail: str
    returning: str
    columns: tuple[str, ...]
    processors: tuple[t.Callable[[t.Any], t.Any] | None, ...]


_sql_cache: dict[tuple[str, str, int], _SQL | None] = {}
#: Most rows in one statement (SQLite allows 32,766 parameters).
ROWS_PER_STATEMENT = 500
#: The key of a row's ordinal among its visitor's rows in the batch (not a column).
_ORDINAL = "_ordinal"


def _statements(dialect: sa.Dialect, table: sa.Table) -> _SQL | None:
    """The multi-row insert as driver SQL on PostgreSQL and SQLite 3.35+, else ``None``.

    On SQLite::

        INSERT INTO utm_touch (touch_id, visitor_id, ...)
        SELECT column1, column2, ... FROM (VALUES (...), (...), ...) AS v
        WHERE (SELECT count(*) FROM utm_touch AS held WHERE held.visitor_id = v.column2)
              + v.column27 < :cap
        ON CONFLICT (visitor_id, touch_id) DO NOTHING
        [RETURNING id, visitor_id, touch_id]

    On PostgreSQL the rows arrive as one JSON parameter, so that the statement's text is the
    same for every batch (psycopg converts its placeholders once and prepares it on the server
    after a few runs, where a text per batch size was converted by a regular expression on each
    run, a tenth of the worker's time under load)::

        INSERT INTO utm_touch (touch_id, visitor_id, ...)
        SELECT v.touch_id, v.visitor_id, ...
        FROM json_to_recordset(CAST(%s AS JSON)) AS v(touch_id VARCHAR(64), ...)
        WHERE (SELECT count(*) ...) + v._ordinal < %s
        ON CONFLICT (visitor_id, touch_id) DO NOTHING

    The ordinal of each row among its visitor's rows in the batch keeps the per-visitor cap as
    it would be for one beacon at a time. One statement, in autocommit: the statement is the
    transaction, so SQLite holds its write lock only while the statement runs (not across the
    returns to Python that the other process's writer would sleep through) and PostgreSQL needs
    one round trip instead of BEGIN, count, INSERT and COMMIT.

    Built once per table and dialect (composing Core statements for each batch cost more than
    the batch's own SQL). SQLite's values go through the columns' own bind processors, and
    PostgreSQL reads JSON into the columns' own types, so the rows are stored as SQLAlchemy
    stores them.
    """
    key = (dialect.name, dialect.driver, id(table))
    if key in _sql_cache:
        return _sql_cache[key]
    sql: _SQL | None = None
    style = dialect.paramstyle
    if (
        dialect.name in ("postgresql", "sqlite")
        and dialect.insert_returning
        and style in ("qmark", "format", "pyformat")
    ):
        mark = "?" if style == "qmark" else "%s"
        quote = dialect.identifier_preparer.quote
        name = dialect.identifier_preparer.format_table(table)
        columns = tuple(
            c for c in (*TOUCH_FIELDS, "received_at", "claimed_by", "claimed_at") if c in table.c
        )
        names = ", ".join(quote(c) for c in columns)
        conflict = f" ON CONFLICT ({quote('visitor_id')}, {quote('touch_id')}) DO NOTHING"
        returning = f" RETURNING {quote('id')}, {quote('visitor_id')}, {quote('touch_id')}"
        if dialect.name == "postgresql":
            # Every name quoted: json_to_recordset matches the JSON keys to them exactly.
            types = ", ".join(f'"{c}" {table.c[c].type.compile(dialect=dialect)}' for c in columns)
            sql = _SQL(
                head=f"INSERT INTO {name} ({names}) SELECT "
                + ", ".join(f'v."{c}"' for c in columns)
                + f" FROM json_to_recordset(CAST({mark} AS JSON))"
                f' AS v({types}, "{_ORDINAL}" INTEGER)',
                values=None,
                tail=f" WHERE (SELECT count(*) FROM {name} AS held WHERE held."
                f'{quote("visitor_id")} = v."visitor_id") + v."{_ORDINAL}" < {mark}' + conflict,
                returning=returning,
                columns=columns,
                processors=(),
            )
        else:
            visitor = f"v.column{columns.index('visitor_id') + 1}"
            sql = _SQL(
                head=f"INSERT INTO {name} ({names}) SELECT "
                + ", ".join(f"v.column{i + 1}" for i in range(len(columns)))
                + " FROM (VALUES ",
                values="(" + ", ".join([mark] * (len(columns) + 1)) + ")",
                tail=f") AS v WHERE (SELECT count(*) FROM {name} AS held WHERE held."
                f"{quote('visitor_id')} = {visitor}) + v.column{len(columns) + 1} < {mark}"
                + conflict,
                returning=returning,
                columns=columns,
                processors=tuple(
                    table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns
                ),
            )
    _sql_cache[key] = sql
    return sql


def _json_value(value: t.Any) -> t.Any:
    """JSON for what ``json`` does not know: datetimes as ISO 8601 (with their UTC offset)."""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


#: The rows of a PostgreSQL batch as one JSON text (ASCII, so no text can fail to encode).
_json_rows = json.JSONEncoder(default=_json_value, separators=(",", ":")).encode


def _write_sql(
    engine: Engine,
    sql: _SQL,
    cap: int,
    wanted: list[tuple[dict[str, t.Any], int]],
    returning: bool,
) -> list[dict[str, t.Any]]:
    """Insert the rows with one autocommit statement per :data:`ROWS_PER_STATEMENT` rows.

    :return: the rows inserted, when ``returning``; else ``[]``.
    """
    now = utcnow()
    extra = {"received_at": now, "claimed_by": None, "claimed_at": None}
    inserted: list[dict[str, t.Any]] = []
    statements = []
    for start in range(0, len(wanted), ROWS_PER_STATEMENT):
        chunk = wanted[start : start + ROWS_PER_STATEMENT]
        if sql.values is None:
            rows = [{**row, **extra, _ORDINAL: n} for row, n in chunk]
            statement = sql.head + sql.tail
            params: tuple[t.Any, ...] = (_json_rows(rows), cap)
        else:
            values: list[t.Any] = []
            for row, n in chunk:
                full = {**row, **extra}
                for column, process in zip(sql.columns, sql.processors, strict=True):
                    value = full.get(column)
                    values.append(process(value) if process is not None else value)
                values.append(n)
            values.append(cap)
            statement = sql.head + ", ".join([sql.values] * len(chunk)) + sql.tail
            params = tuple(values)
        statements.append((statement + sql.returning if returning else statement, params))
    results = _autocommit(engine, statements, returning)
    for start, result in zip(range(0, len(wanted), ROWS_PER_STATEMENT), results, strict=True):
        chunk = wanted[start : start + ROWS_PER_STATEMENT]
        by_key = {(row["visitor_id"], row["touch_id"]): row for row, _ in chunk}
        for id_, visitor_id, touch_id in result:
            inserted.append({**by_key[(visitor_id, touch_id)], **extra, "id": id_})
    return inserted


def _autocommit(
    engine: Engine, statements: list[tuple[str, tuple[t.Any, ...]]], returning: bool
) -> list[list[t.Any]]:
    """Run ``statements`` on a pooled DBAPI connection in autocommit mode, each statement its
    own transaction; return their rows when ``returning``.

    The DBAPI cursor directly, not ``Connection.exec_driver_sql``: SQLAlchemy's connection,
    execution context and isolation-level switch cost as much as the statement (and, on
    SQLite, one more trip through the GIL). Errors are raised as SQLAlchemy's
    :class:`~sqlalchemy.exc.DBAPIError` classes, and a connection the database dropped is
    invalidated, as SQLAlchemy would; the statements are not seen by SQLAlchemy's cursor events.
    """
    dialect = engine.dialect
    dbapi_error = dialect.loaded_dbapi.Error
    try:
        raw = engine.raw_connection()
    except dbapi_error as err:  # the pool does not wrap a failed connect
        raise sa.exc.DBAPIError.instance(None, None, err, dbapi_error, dialect=dialect) from err
    conn: t.Any = raw.dbapi_connection
    sqlite = dialect.name == "sqlite"
    invalidated = False
    cursor = None
    results: list[list[t.Any]] = []
    statement = ""
    try:
        saved = conn.isolation_level if sqlite else conn.autocommit
        if sqlite:
            conn.isolation_level = None
        else:
            conn.autocommit = True
        cursor = raw.cursor()
        for statement, params in statements:
            cursor.execute(statement, params)
            results.append(list(cursor.fetchall()) if returning else [])
        if sqlite and conn.in_transaction:
            conn.commit()  # sqlite3.connect(autocommit=False) ignores isolation_level
    except dbapi_error as err:
        invalidated = dialect.is_disconnect(err, conn, cursor)
        if invalidated:
            raw.invalidate(err)
        raise sa.exc.DBAPIError.instance(
            statement, None, err, dbapi_error, connection_invalidated=invalidated, dialect=dialect
        ) from err
    finally:
        if not invalidated:
            with contextlib.suppress(Exception):
                if cursor is not None:
                    cursor.close()
                if sqlite:
                    conn.isolation_level = saved
                else:
                    conn.autocommit = saved
        raw.close()
    return results
