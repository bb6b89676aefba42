"""Every write of touches: ``Touch`` rows, claims, ``LeadSource`` rows, and group commit.

Each write is a set-based ``INSERT ... ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL; ``INSERT
IGNORE`` elsewhere) on the unique constraints ``(visitor_id, touch_id)`` of ``Touch`` and
``(user_id, touch_id)`` of ``LeadSource``, so resent beacons and parallel logins write each touch
once. Everything goes through SQLAlchemy Core on the engine's pool, in transactions of their own,
apart from the host's ``db.session``: the host's unit of work is never committed or rolled back
here, and a host's engine events (``before_cursor_execute``, APM instrumentation, ``echo``) see
every statement.

**Group commit.** An anonymous beacon is answered 2xx only once its rows are committed. The request
threads of one process queue their beacons, and the thread that finds no write in progress becomes
the *leader*: it takes every queued beacon and writes all of their rows in one transaction (the
per-visitor cap counted first, then one insert of all their rows), then wakes the others. When that
transaction fails, every beacon in it gets the error (the caller answers 503); a failure that is not
a lost connection is retried one beacon at a time, so one bad beacon cannot fail its neighbours.
Under light load a batch holds one beacon. No thread is started (nothing to restart after gunicorn
forks).
"""

from __future__ import annotations

import decimal
import functools
import json
import logging
import os
import threading
import typing as t
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .models import TOUCH_FIELDS, utcnow

if t.TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

logger = logging.getLogger("flask_utm_tracker")

#: Most beacons written by one commit.
MAX_BATCH = 256


class StoreError(Exception):
    """The database did not store a beacon (the caller answers 503)."""


# -- statements ---------------------------------------------------------------------------------


def insert_ignore(
    conn: Connection,
    table: sa.Table,
    rows: t.Sequence[t.Mapping[str, t.Any]],
    keys: t.Sequence[str],
) -> list[dict[str, t.Any]]:
    """Insert ``rows`` into ``table``, skipping those that clash on ``keys``.

    On PostgreSQL the rows travel as one JSON parameter (:func:`_recordset_insert`); elsewhere as
    a multi-row ``VALUES``.

    :return: the rows actually inserted, with their ``id`` (``rows`` on dialects without
        ``RETURNING``).
    """
    if not rows:
        return []
    dialect = conn.dialect
    if dialect.name == "postgresql":
        names = tuple(c.name for c in table.c if c.name in rows[0])
        document = _json_rows(table, names, rows, dialect)
        if document is not None:
            stmt = _recordset_insert(table, names, tuple(keys))
            return _returned(conn.execute(stmt, {"rows": document}), rows, keys)
    returning = dialect.insert_returning and (
        dialect.insert_executemany_returning or len(rows) == 1
    )
    stmt = _insert_ignore(table, dialect.name, tuple(keys), returning)
    if returning:
        return _returned(conn.execute(stmt, list(rows)), rows, keys)
    conn.execute(stmt, list(rows))
    return [dict(r) for r in rows]


def _returned(
    result: t.Any, rows: t.Sequence[t.Mapping[str, t.Any]], keys: t.Sequence[str]
) -> list[dict[str, t.Any]]:
    """The ``rows`` an ``INSERT ... RETURNING id, *keys`` inserted, each with its ``id``."""
    by_key = {tuple(str(row[k]) for k in keys): row for row in rows}
    return [{**by_key[tuple(map(str, r[1:]))], "id": r[0]} for r in result]


@functools.lru_cache(maxsize=64)
def _insert_ignore(table: sa.Table, dialect: str, keys: tuple[str, ...], returning: bool) -> t.Any:
    """The statement of :func:`insert_ignore`, built once per table: building it (and its cache
    key) anew cost as much as running it."""
    stmt: t.Any
    if dialect == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=list(keys))
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=list(keys))
    else:
        stmt = sa.insert(table).prefix_with("IGNORE")
    if returning:
        stmt = stmt.returning(table.c.id, *(table.c[k] for k in keys))
    return stmt


@functools.lru_cache(maxsize=64)
def _recordset_insert(table: sa.Table, names: tuple[str, ...], keys: tuple[str, ...]) -> t.Any:
    """``INSERT INTO table (names) SELECT names FROM json_to_recordset(:rows) AS r(name type,
    ...) ON CONFLICT (keys) DO NOTHING RETURNING id, keys`` (PostgreSQL).

    The same statement for any number of rows, with one parameter: psycopg converts a query's
    placeholders anew on every run when it has more than 50 of them (a multi-row ``VALUES`` of
    ``LeadSource`` has 30 per row), which cost more than the insert itself, and the server
    plans a statement of any length again each time.
    """
    columns = [table.c[name] for name in names]
    source = (
        sa.func.json_to_recordset(sa.cast(sa.bindparam("rows", type_=sa.Text), sa.JSON))
        .table_valued(*(sa.column(c.name, c.type) for c in columns))
        .render_derived(name="r", with_types=True)
    )
    select = sa.select(*(source.c[name] for name in names))
    return (
        postgresql.insert(table)
        .from_select(list(names), select)
        .on_conflict_do_nothing(index_elements=list(keys))
        .returning(table.c.id, *(table.c[k] for k in keys))
    )


def _json_rows(
    table: sa.Table,
    names: tuple[str, ...],
    rows: t.Sequence[t.Mapping[str, t.Any]],
    dialect: t.Any,
) -> str | None:
    """``rows`` as the JSON array :func:`_recordset_insert` reads: each value first through its
    column type's bind processing (a host's ``TypeDecorator`` user id included), JSON columns
    as they are; ``None`` when a value has no JSON form (the caller then uses ``VALUES``)."""
    processors = _processors(table, names, dialect)
    out = []
    for row in rows:
        item = {}
        for name, process in zip(names, processors, strict=True):
            value = row.get(name)
            item[name] = process(value) if process is not None and value is not None else value
        out.append(item)
    try:
        return json.dumps(out, default=_json_value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None


@functools.lru_cache(maxsize=64)
def _processors(
    table: sa.Table, names: tuple[str, ...], dialect: t.Any
) -> tuple[t.Callable[[t.Any], t.Any] | None, ...]:
    processors: list[t.Callable[[t.Any], t.Any] | None] = []
    for name in names:
        type_ = table.c[name].type
        if isinstance(type_, sa.JSON):
            processors.append(None)  # the object itself: json_to_recordset reads it as JSON
        else:
            processors.append(type_.dialect_impl(dialect).bind_processor(dialect))
    return tuple(processors)


def _json_value(value: t.Any) -> t.Any:
    """The JSON form PostgreSQL parses back into the column's type."""
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    raise TypeError(f"No JSON form for {type(value).__name__}.")


def touch_values(
    rows: t.Iterable[t.Mapping[str, t.Any]], claimed_by: t.Any = None
) -> list[dict[str, t.Any]]:
    """``Touch`` row values for touch fields (claimed at once when ``claimed_by`` is a user id)."""
    now = utcnow()
    return [
        {
            **{k: row.get(k) for k in TOUCH_FIELDS},
            "received_at": now,
            "claimed_by": claimed_by,
            "claimed_at": now if claimed_by is not None else None,
        }
        for row in rows
    ]


def unclaimed_counts(
    conn: Connection, table: sa.Table, visitors: t.Iterable[str]
) -> dict[str, int]:
    """The number of unclaimed ``Touch`` rows held by each of ``visitors``."""
    keys = sorted(set(visitors))
    if not keys:
        return {}
    return {visitor: int(n) for visitor, n in conn.execute(_unclaimed(table), {"ids": keys})}


@functools.lru_cache(maxsize=16)
def _unclaimed(table: sa.Table) -> t.Any:
    return (
        sa.select(table.c.visitor_id, sa.func.count())
        .where(
            table.c.visitor_id.in_(sa.bindparam("ids", expanding=True)),
            table.c.claimed_by.is_(None),
        )
        .group_by(table.c.visitor_id)
    )


def store_touches(
    conn: Connection,
    touch_table: sa.Table,
    rows: t.Sequence[t.Mapping[str, t.Any]],
    claimed_by: t.Any = None,
) -> list[dict[str, t.Any]]:
    """Store touches as ``Touch`` rows (claimed at once when ``claimed_by`` is a user id)."""
    return insert_ignore(
        conn, touch_table, touch_values(rows, claimed_by), ("visitor_id", "touch_id")
    )


def claim_touches(
    conn: Connection, touch_table: sa.Table, visitor_id: str, user_id: t.Any
) -> list[dict[str, t.Any]]:
    """Mark the visitor's unclaimed ``Touch`` rows as the user's, and return their fields.

    One ``UPDATE ... RETURNING``: under concurrency each row is claimed by exactly one transaction.
    """
    if conn.dialect.update_returning:
        claim = {"visitor": visitor_id, "user": user_id, "at": utcnow()}
        result = conn.execute(_claim(touch_table), claim)
        return [dict(r) for r in result.mappings()]
    stmt = (
        sa.update(touch_table)
        .where(touch_table.c.visitor_id == visitor_id, touch_table.c.claimed_by.is_(None))
        .values(claimed_by=user_id, claimed_at=utcnow())
    )
    query = sa.select(*(touch_table.c[k] for k in TOUCH_FIELDS)).where(
        touch_table.c.visitor_id == visitor_id, touch_table.c.claimed_by.is_(None)
    )
    rows = [dict(r) for r in conn.execute(query.with_for_update()).mappings()]
    conn.execute(stmt)
    return rows


@functools.lru_cache(maxsize=16)
def _claim(touch_table: sa.Table) -> t.Any:
    """:func:`claim_touches`' ``UPDATE ... RETURNING``, built once per table (parameters
    ``visitor``, ``user`` and ``at``)."""
    return (
        sa.update(touch_table)
        .where(
            touch_table.c.visitor_id == sa.bindparam("visitor"),
            touch_table.c.claimed_by.is_(None),
        )
        .values(
            claimed_by=sa.bindparam("user", type_=touch_table.c.claimed_by.type),
            claimed_at=sa.bindparam("at", type_=touch_table.c.claimed_at.type),
        )
        .returning(*(touch_table.c[k] for k in TOUCH_FIELDS))
    )


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def write_lead_sources(
    conn: Connection,
    lead_table: sa.Table,
    user_id: t.Any,
    rows: t.Iterable[t.Mapping[str, t.Any]],
    cap: int | None = None,
) -> list[dict[str, t.Any]]:
    """Write one ``LeadSource`` per distinct touch id of ``rows`` for ``user_id``, the user's
    rows kept at most ``cap`` (the oldest touches first; the rest dropped and logged).

    :return: the rows inserted now (those already there are skipped).
    """
    now = utcnow()
    unique: dict[str, dict[str, t.Any]] = {}
    for row in rows:
        unique.setdefault(
            row["touch_id"],
            {**{k: row.get(k) for k in TOUCH_FIELDS}, "user_id": user_id, "created_at": now},
        )
    ordered = sorted(unique.values(), key=lambda r: _naive_utc(r["timestamp"]))
    if cap is not None and ordered:
        held = conn.scalar(_rows_of_user(lead_table), {"user_id": user_id})
        room = max(0, cap - int(held or 0))
        if len(ordered) > room:
            known = set(
                conn.scalars(
                    sa.select(lead_table.c.touch_id).where(
                        lead_table.c.user_id == user_id,
                        lead_table.c.touch_id.in_([r["touch_id"] for r in ordered]),
                    )
                )
            )
            fresh = [r for r in ordered if r["touch_id"] not in known]
            if len(fresh) > room:
                logger.warning(
                    "User %r holds %d lead sources, the most kept (MAX_LEAD_SOURCES_PER_USER);"
                    " %d new touches dropped.",
                    user_id,
                    int(held or 0),
                    len(fresh) - room,
                )
            ordered = fresh[:room]
    return insert_ignore(conn, lead_table, ordered, ("user_id", "touch_id"))


@functools.lru_cache(maxsize=16)
def _rows_of_user(lead_table: sa.Table) -> t.Any:
    """How many ``LeadSource`` rows a user holds (the ``user_id`` parameter)."""
    where = lead_table.c.user_id == sa.bindparam("user_id")
    return sa.select(sa.func.count()).select_from(lead_table).where(where)


# -- group commit -------------------------------------------------------------------------------


@dataclass(eq=False)
class _Beacon:
    visitor_id: str
    rows: list[dict[str, t.Any]]
    done: bool = False
    stored: list[dict[str, t.Any]] = field(default_factory=list)
    error: BaseException | None = None
    #: Held until the beacon is done or its thread is to lead the next write.
    wake: threading.Lock = field(default_factory=threading.Lock)


class GroupCommit:
    """One per engine and process: the queue of beacons waiting for a write.

    A thread that finds no write in progress leads: it writes the queued beacons, wakes their
    threads, and hands the lead to the thread of the first beacon still queued, if any.
    """

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self._mutex = threading.Lock()
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
        """Store ``rows`` of ``visitor_id`` (at most ``cap`` unclaimed rows per visitor) and
        return once they are committed.

        :return: the rows inserted now (a resent touch is not inserted again).
        :raises StoreError: the commit carrying these rows failed.
        """
        item = _Beacon(visitor_id, rows)
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
                    with self._mutex:
                        batch = self._queue[: self.max_batch]
                        del self._queue[: self.max_batch]
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
    """Write ``batch`` in one transaction; on failure, retry each beacon alone unless the
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
                logger.error("Storing %d beacon(s) failed: %s", len(batch), describe(err))
                for item in batch:
                    item.error = err
            else:
                for item in batch:
                    try:
                        _write(engine, table, cap, [item])
                    except sa.exc.SQLAlchemyError as one:
                        logger.error("Storing a beacon failed: %s", describe(one))
                        item.stored = []
                        item.error = one
    except BaseException as err:  # a bug: answer every beacon of the batch, never hang one
        for item in batch:
            item.error = item.error or err
        raise
    finally:
        for item in batch:
            item.done = True


def describe(err: BaseException) -> str:
    """A database error without its statement and bound parameters (they hold visitor ids and
    URLs, which do not belong in logs)."""
    orig = getattr(err, "orig", None)
    return f"{type(err).__name__}: {type(orig).__name__ if orig is not None else ''} {orig!s}"[:500]


def _write(engine: Engine, table: sa.Table, cap: int, batch: list[_Beacon]) -> None:
    """Store the rows of ``batch`` (each visitor's rows past ``cap`` unclaimed ones dropped) in
    one transaction, committed on return; fill each beacon's ``stored``.
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
    with engine.begin() as conn:
        held = unclaimed_counts(conn, table, (row["visitor_id"] for row, _ in wanted))
        rows = [row for row, n in wanted if held.get(row["visitor_id"], 0) + n < cap]
        inserted = store_touches(conn, table, rows)
    for row in inserted:
        owner[(row["visitor_id"], row["touch_id"])].stored.append(row)
