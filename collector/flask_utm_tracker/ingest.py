"""The beacon's hot path: anonymous ``Touch`` rows stored by group commit.

A beacon is answered 2xx only once its own rows are committed. Committed one beacon at a time,
each request pays a transaction of its own (``BEGIN``, the per-visitor count, the ``INSERT``,
``COMMIT`` with its WAL flush on PostgreSQL or its write lock on SQLite), and under load the
database's commits, not Python, set the pace.

Here the request threads of one process queue their beacons; the thread that finds no write in
progress becomes the *leader*: it takes every queued beacon, counts their visitors' rows in one
``SELECT ... GROUP BY``, writes all of their rows with one multi-row ``INSERT ... ON CONFLICT DO
NOTHING``, commits, and wakes the others. A request returns once the commit that carried its rows
has succeeded, so "a 2xx means it is stored" holds for each beacon; when that commit fails, every
beacon in it gets the error (the caller answers 503), and a failure that is not a lost connection
is retried one beacon at a time so that one bad beacon cannot fail its neighbours. Under light
load a batch holds one beacon and this is the plain transaction per request; batches grow by
themselves as requests arrive during a write. No extra thread is started (nothing to restart
after gunicorn forks), and with one thread per process it degrades to one beacon per commit.

See bench/README.md for the measured effect of each choice.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import typing as t
import weakref
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import reconcile
from .abuse import is_bot as _is_bot
from .cookie import ID_RE as _ID
from .models import TOUCH_FIELDS, utcnow
from .params import MAX_PARAMS
from .schemas import MAX_TOUCHES
from .touches import Context, fields

if t.TYPE_CHECKING:
    from sqlalchemy.engine import Connection

logger = logging.getLogger("flask_utm_tracker")

#: Most beacons written by one commit.
MAX_BATCH = 256
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
        loaded.append({"id": id_, "ts": ts, "url": url, "referrer": referrer, "params": params})
    return {"v": visitor, "touches": loaded}


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
    done: bool = False
    stored: list[dict[str, t.Any]] = field(default_factory=list)
    error: BaseException | None = None


class GroupCommit:
    """One per engine and process: the queue of beacons waiting for a commit."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Beacon] = []
        self._writing = False

    def store(
        self,
        engine: Engine,
        table: sa.Table,
        cap: int,
        visitor_id: str,
        rows: list[dict[str, t.Any]],
    ) -> list[dict[str, t.Any]]:
        """Store ``rows`` of ``visitor_id`` (at most ``cap`` rows per visitor) and return once
        they are committed.

        :return: the rows inserted now (a resent touch is not inserted again).
        :raises StoreError: the commit carrying these rows failed.
        """
        item = _Beacon(visitor_id, rows)
        cond = self._cond
        with cond:
            self._queue.append(item)
            while not item.done:
                if self._writing:
                    cond.wait()
                    continue
                self._writing = True
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                cond.release()
                try:
                    _write_batch(engine, table, cap, batch)
                finally:
                    cond.acquire()
                    self._writing = False
                    cond.notify_all()
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
    """Write ``batch`` in one transaction; on failure, retry each beacon alone unless the
    database is unreachable. Every beacon of ``batch`` is ``done`` on return.
    """
    try:
        try:
            with engine.begin() as conn:
                _insert(conn, table, cap, batch)
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
                        with engine.begin() as conn:
                            _insert(conn, table, cap, [item])
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


def _insert(conn: Connection, table: sa.Table, cap: int, batch: list[_Beacon]) -> None:
    """The per-visitor cap, then one multi-row insert of the whole batch."""
    sql = _statements(conn.dialect, table)
    visitors = sorted({item.visitor_id for item in batch})
    if sql is None:
        counted = conn.execute(
            sa.select(table.c.visitor_id, sa.func.count())
            .where(table.c.visitor_id.in_(visitors))
            .group_by(table.c.visitor_id)
        ).all()
    elif sql.any_array:
        counted = conn.exec_driver_sql(sql.count, (visitors,)).all()
    else:
        marks = ", ".join([sql.mark] * len(visitors))
        counted = conn.exec_driver_sql(sql.count.format(marks=marks), tuple(visitors)).all()
    held: dict[str, int] = {v: int(n) for v, n in counted}
    owner: dict[tuple[str, str], _Beacon] = {}
    wanted: list[dict[str, t.Any]] = []
    for item in batch:
        room = max(cap - held.get(item.visitor_id, 0), 0)
        taken = item.rows[:room]
        held[item.visitor_id] = held.get(item.visitor_id, 0) + len(taken)
        for row in taken:
            key = (item.visitor_id, row["touch_id"])
            if key not in owner:
                owner[key] = item
                wanted.append(row)
    # One order for every writer: concurrent batches holding the same keys cannot deadlock.
    wanted.sort(key=lambda row: (row["visitor_id"], row["touch_id"]))
    if sql is None:
        inserted = reconcile.store_touches(conn, table, wanted)
    else:
        inserted = _insert_rows(conn, sql, wanted)
    for row in inserted:
        owner[(row["visitor_id"], row["touch_id"])].stored.append(row)


@dataclass(frozen=True)
class _SQL:
    """The hot path's statements for one table and dialect, as driver SQL."""

    count: str
    insert: str
    values: str
    tail: str
    columns: tuple[str, ...]
    processors: tuple[t.Callable[[t.Any], t.Any] | None, ...]
    mark: str
    any_array: bool


_sql_cache: dict[tuple[str, str, int], _SQL | None] = {}
#: Most rows in one INSERT statement (SQLite allows 32,766 parameters).
ROWS_PER_STATEMENT = 500


def _statements(dialect: sa.Dialect, table: sa.Table) -> _SQL | None:
    """Driver SQL for the count and the multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING``
    on PostgreSQL (psycopg) and SQLite 3.35+; ``None`` elsewhere (Core statements are used).

    Built once per table and dialect: constructing and compiling Core statements for every batch
    cost more than the batch's own SQL. Values go through the columns' own bind processors, so
    they are stored exactly as SQLAlchemy stores them.
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
        any_array = dialect.name == "postgresql"
        visitor = quote("visitor_id")
        where = f"= ANY({mark})" if any_array else "IN ({marks})"
        sql = _SQL(
            count=f"SELECT {visitor}, count(*) FROM {name} WHERE {visitor} {where} "
            f"GROUP BY {visitor}",
            insert=f"INSERT INTO {name} ({', '.join(quote(c) for c in columns)}) VALUES ",
            values="(" + ", ".join([mark] * len(columns)) + ")",
            tail=f" ON CONFLICT ({visitor}, {quote('touch_id')}) DO NOTHING"
            f" RETURNING {quote('id')}, {visitor}, {quote('touch_id')}",
            columns=columns,
            processors=tuple(
                table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns
            ),
            mark=mark,
            any_array=any_array,
        )
    _sql_cache[key] = sql
    return sql


def _insert_rows(
    conn: Connection, sql: _SQL, rows: list[dict[str, t.Any]]
) -> list[dict[str, t.Any]]:
    """Insert ``rows`` as ``Touch`` rows, skipping those already there; return those inserted."""
    now = utcnow()
    full = [{**row, "received_at": now, "claimed_by": None, "claimed_at": None} for row in rows]
    inserted: list[dict[str, t.Any]] = []
    for start in range(0, len(full), ROWS_PER_STATEMENT):
        chunk = full[start : start + ROWS_PER_STATEMENT]
        params: list[t.Any] = []
        for row in chunk:
            for column, process in zip(sql.columns, sql.processors, strict=True):
                value = row.get(column)
                params.append(process(value) if process is not None else value)
        statement = sql.insert + ", ".join([sql.values] * len(chunk)) + sql.tail
        by_key = {(row["visitor_id"], row["touch_id"]): row for row in chunk}
        for id_, visitor_id, touch_id in conn.exec_driver_sql(statement, tuple(params)):
            inserted.append({**by_key[(visitor_id, touch_id)], "id": id_})
    return inserted
