"""The reports' derived tables: ``Lead`` per user, ``LeadDay`` per sign-up day.

Attribution needs, per user, the sign-up time and the rank of each touch up to it: a window
over every ``LeadSource`` row, too slow to compute at query time on a million rows. So:

``Lead``
    one row per user with lead sources: the sign-up (the user model's ``created_at`` or
    ``date_joined``, else the first ``LeadSource.created_at``), its UTC day, and a fingerprint
    of the user's rows (their number and largest id).
``LeadDay``
    per sign-up day and per value of each dimension, the leads credited under each model, the
    touches, and (on the day's totals row, dimension ``""``) the fingerprint of the day's
    ``Lead`` rows it was computed from.

Both are kept by the writers, never by a report. :func:`refresh` rewrites the ``Lead`` rows of
some users in the transaction that writes their lead sources (``UTMTracker.write``, ``flask utm
erase``), and after the commit of a host's ORM session that wrote ``LeadSource`` rows
(:func:`listen`: the users are noted during the flush, their rows written in a transaction of
ours once the host's has committed). A day whose ``Lead`` rows changed since its ``LeadDay``
rows were stored (new touches, new or deleted users) is *stale*: reports compute it in their
query instead of reading it (:func:`day_table`), and ``flask utm refresh``
(:func:`store_stale_days`, from cron every few minutes) stores it, so a login never pays for
the whole day's sign-ups. Rows written around the extension (a bulk ``INSERT``, a migration)
reach the reports after ``flask utm rebuild`` (:func:`rebuild`).
"""

from __future__ import annotations

import functools
import logging
import typing as t
import weakref
from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql, sqlite

if t.TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

logger = logging.getLogger("flask_utm_tracker")

#: The ``LeadSource`` columns leads can be grouped by.
DIMENSIONS: tuple[str, ...] = ("channel", "source", "medium", "campaign")
#: The user model columns taken as the sign-up time, in order of preference.
SIGNUP_COLUMNS = ("created_at", "date_joined")
#: Most users locked one by one (PostgreSQL advisory locks); more lock the ``Lead`` table.
LOCK_ONE_BY_ONE = 50
#: New ``LeadSource`` ids (days of ``LeadDay``) past which a catch-up analyses the table.
BULK = 10_000
BULK_DAYS = 28


Models = tuple[type[t.Any], type[t.Any], type[t.Any]]
_models: weakref.WeakKeyDictionary[type[t.Any], Models] = weakref.WeakKeyDictionary()


def register(
    lead_source: type[t.Any], lead: type[t.Any], lead_day: type[t.Any], user: type
) -> None:
    """Record the ``Lead`` and ``LeadDay`` models made beside ``lead_source``."""
    _models[lead_source] = (lead, lead_day, user)


def models(lead_source: type[t.Any]) -> Models:
    """``Lead``, ``LeadDay`` and the user model made beside ``lead_source``."""
    return _models[lead_source]


def signup_column(user_model: type[t.Any]) -> sa.ColumnElement[t.Any] | None:
    """The user model's sign-up time column (``created_at`` or ``date_joined``), if any."""
    table = getattr(user_model, "__table__", None)
    if table is None:
        return None
    for name in SIGNUP_COLUMNS:
        column = table.c.get(name)
        if column is not None and isinstance(column.type, (sa.DateTime, sa.Date)):
            return t.cast("sa.ColumnElement[t.Any]", column)
    return None


def day_of(dialect: str, column: t.Any) -> t.Any:
    """The UTC day of a time, in SQL."""
    if dialect == "postgresql":
        return sa.cast(sa.func.timezone("UTC", column), sa.Date)
    if dialect == "sqlite":
        return sa.func.date(column)
    return sa.cast(column, sa.Date)


def _analyze(conn: Connection, table: sa.Table) -> None:
    """Fresh planner statistics after a bulk write (PostgreSQL), so that the next reports get
    a hash aggregate instead of a sort spilling to disk.
    """
    if conn.dialect.name == "postgresql":
        quoted = conn.dialect.identifier_preparer.format_table(table)
        conn.execute(sa.text(f"ANALYZE {quoted}"))


def _lock(conn: Connection, table: sa.Table, keys: t.Sequence[t.Any] | None) -> None:
    """Serialise writers of the same rows on PostgreSQL (SQLite has one writer at a time)."""
    if conn.dialect.name != "postgresql":
        return
    if keys is not None and len(keys) <= LOCK_ONE_BY_ONE:
        stmt = _lock_statement(table)
        for key in keys:
            conn.execute(stmt, {"key": f"{table.name}:{key}"})
        return
    quoted = conn.dialect.identifier_preparer.format_table(table)
    conn.execute(sa.text(f"LOCK TABLE {quoted} IN SHARE ROW EXCLUSIVE MODE"))


@functools.lru_cache(maxsize=16)
def _lock_statement(table: sa.Table) -> t.Any:
    """PostgreSQL's transaction lock on one key (``"<table>:<key>"``) of ``table``."""
    key = sa.bindparam("key", type_=sa.Text)
    return sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(key)))


def refresh(
    conn: Connection,
    lead_source: type[t.Any],
    user_ids: t.Iterable[t.Any] | None = None,
    *,
    since_id: int | None = None,
    lock: bool = True,
    deleted: bool = True,
    days: bool = True,
) -> None:
    """Rewrite the ``Lead`` rows of ``user_ids`` (of the users with a ``LeadSource.id`` above
    ``since_id``; of every user when both are ``None``) from their ``LeadSource`` rows.

    :param conn: a connection in the transaction that wrote the rows.
    :param lock: take a lock so that concurrent refreshes of a user end with the last state.
    :param deleted: rows may have been deleted (drop the ``Lead`` rows of users left without).
    :param days: also compute the ``LeadDay`` rows of those users' days, before and after.
    """
    keys: list[t.Any] | None = None
    params: dict[str, t.Any] = {}
    if user_ids is not None:
        keys = sorted({uid for uid in user_ids if uid is not None}, key=repr)
        if not keys:
            return
        which = "users"
        params["users"] = keys
    elif since_id is not None:
        which = "since"
        params["since_id"] = since_id
    else:
        which = "all"
    made = _refresh_statements(t.cast(t.Hashable, lead_source), conn.dialect.name, which)
    if lock:
        _lock(conn, models(lead_source)[0].__table__, keys)
    # The users' days before the rewrite, only when their LeadDay rows are to be computed (a
    # login's write skips it: one query fewer on every login).
    before = {_day(day) for (day,) in conn.execute(made.days, params)} if days else set()
    if deleted:
        conn.execute(made.delete_gone, params)
    for stmt in made.write:
        conn.execute(stmt, params)
    if days:
        after = {_day(day) for (day,) in conn.execute(made.days, params)}
        compute_days(conn, lead_source, sorted(before | after) if keys is not None else None)


@dataclass(frozen=True)
class _Refresh:
    """The statements of :func:`refresh` for one kind of selection of users."""

    days: t.Any  # their sign-up days
    delete_gone: t.Any  # their Lead rows that have no LeadSource rows left
    write: tuple[t.Any, ...]  # their Lead rows rewritten


@functools.lru_cache(maxsize=64)
def _refresh_statements(lead_source: t.Any, dialect: str, which: str) -> _Refresh:
    """:func:`refresh`'s statements, built once: ``which`` is ``"users"`` (the ``users``
    parameter lists them), ``"since"`` (users with a row above the ``since_id`` parameter) or
    ``"all"``. Building them cost more than running them on a login's write."""
    lead_model, _, user_model = models(lead_source)
    ls, lead = lead_source.__table__, lead_model.__table__
    picked: t.Any
    stale: t.Any
    if which == "users":
        users: t.Any = sa.bindparam("users", expanding=True)
        picked, stale = ls.c.user_id.in_(users), lead.c.user_id.in_(users)
        days_of = sa.select(lead.c.signup_day).where(stale)
    elif which == "since":
        recent = sa.select(ls.c.user_id).where(ls.c.id > sa.bindparam("since_id"))
        picked, stale = ls.c.user_id.in_(recent), sa.false()  # these users have rows
        days_of = sa.select(lead.c.signup_day).where(lead.c.user_id.in_(recent))
    else:
        picked, stale = sa.true(), sa.true()
        days_of = sa.select(lead.c.signup_day).where(picked)

    signup: t.Any = sa.func.min(ls.c.created_at)
    source: t.Any = ls
    group: list[t.Any] = [ls.c.user_id]
    own = signup_column(user_model)
    if own is not None:
        user_table = user_model.__table__
        pk = next(iter(user_table.primary_key.columns))
        group.append(own)
        value: t.Any = own
        naive = isinstance(own.type, sa.DateTime) and not own.type.timezone
        if naive and dialect == "postgresql":
            # A naive sign-up time is UTC, whatever the session's TimeZone.
            value = sa.func.timezone("UTC", own, type_=sa.DateTime(timezone=True))
        signup = sa.func.coalesce(value, signup)
        source = ls.join(user_table, pk == ls.c.user_id)
    names = ["user_id", "signed_up_at", "signup_day", "rows", "max_id"]
    select = (
        sa.select(
            ls.c.user_id,
            signup,
            day_of(dialect, signup),
            sa.func.count(ls.c.id),
            sa.func.max(ls.c.id),
        )
        .select_from(source)
        .where(picked)
        .group_by(*group)
    )
    gone = ~sa.exists().where(ls.c.user_id == lead.c.user_id)
    write: tuple[t.Any, ...]
    if dialect in ("postgresql", "sqlite"):
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(lead)
        upsert = insert.from_select(names, select)
        write = (
            upsert.on_conflict_do_update(
                index_elements=["user_id"],
                set_={name: upsert.excluded[name] for name in names[1:]},
            ),
        )
    else:
        write = (
            sa.delete(lead).where(lead.c.user_id.in_(select.with_only_columns(ls.c.user_id))),
            sa.insert(lead).from_select(names, select),
        )
    return _Refresh(days_of.distinct(), sa.delete(lead).where(stale, gone), write)


def _in_range(column: t.Any, start: date | None, end: date | None) -> list[t.Any]:
    where = []
    if start is not None:
        where.append(column >= start)
    if end is not None:
        where.append(column <= end)
    return where


def _day(value: t.Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _fingerprints(
    conn: Connection | Session, lead: sa.Table, where: list[t.Any]
) -> dict[date, str]:
    query = (
        sa.select(
            lead.c.signup_day,
            sa.func.count(),
            sa.func.sum(lead.c.rows),
            sa.func.sum(lead.c.max_id),
        )
        .where(*where)
        .group_by(lead.c.signup_day)
    )
    return {_day(day): f"{n}:{rows}:{ids}" for day, n, rows, ids in conn.execute(query)}


def stale_days(
    conn: Connection | Session, lead_source: type[t.Any], start: date | None, end: date | None
) -> list[date]:
    """The sign-up days from ``start`` to ``end`` whose stored ``LeadDay`` rows no longer match
    their ``Lead`` rows (new touches, new or deleted users)."""
    lead_model, day_model, _ = models(lead_source)
    lead, days = lead_model.__table__, day_model.__table__
    current = _fingerprints(conn, lead, _in_range(lead.c.signup_day, start, end))
    saved_query = sa.select(days.c.day, days.c.fingerprint).where(
        days.c.dimension == "", *_in_range(days.c.day, start, end)
    )
    saved = {_day(day): fingerprint for day, fingerprint in conn.execute(saved_query)}
    return sorted(day for day in {*current, *saved} if current.get(day) != saved.get(day))


def store_stale_days(conn: Connection, lead_source: type[t.Any]) -> int:
    """Store the ``LeadDay`` rows of every stale day (``flask utm refresh``).

    :return: the number of days stored.
    """
    stale = stale_days(conn, lead_source, None, None)
    if stale:
        compute_days(conn, lead_source, stale)
        if len(stale) > BULK_DAYS:
            _analyze(conn, models(lead_source)[1].__table__)
    return len(stale)


def day_table(
    session: Session, lead_source: type[t.Any], start: date | None, end: date | None
) -> t.Any:
    """``LeadDay`` for the days from ``start`` to ``end``, read only: the stored rows of the days
    whose fingerprint still matches their ``Lead`` rows, and the numbers of the other days (a
    user deleted since) computed in the query.
    """
    lead_model, day_model, _ = models(lead_source)
    lead, days = lead_model.__table__, day_model.__table__
    stale = stale_days(session, lead_source, start, end)
    if not stale:
        return days
    if len(stale) > BULK_DAYS:
        logger.warning(
            "%d days of the reports' LeadDay table are out of date and computed per report;"
            " run `flask utm refresh` (from cron, every few minutes).",
            len(stale),
        )
    fresh = sa.select(*(days.c[name] for name in _DAY_COLUMNS)).where(days.c.day.not_in(stale))
    computed = _day_parts(lead_source.__table__, lead, [lead.c.signup_day.in_(stale)])
    return sa.union_all(fresh, *computed).subquery("lead_day")


def compute_days(
    conn: Connection, lead_source: type[t.Any], days: t.Sequence[date] | None = None
) -> None:
    """Write the ``LeadDay`` rows of ``days`` (every day when ``None``) again."""
    lead_model, day_model, _ = models(lead_source)
    ls, lead, table = lead_source.__table__, lead_model.__table__, day_model.__table__
    _lock(conn, table, days)
    chunks: list[list[t.Any]]
    if days is None:
        chunks = [[]]
    else:
        ordered = sorted(set(days))
        chunks = [ordered[i : i + 500] for i in range(0, len(ordered), 500)]
    for chunk in chunks:
        on_lead = [lead.c.signup_day.in_(chunk)] if days is not None else []
        on_day = [table.c.day.in_(chunk)] if days is not None else []
        fingerprints = _fingerprints(conn, lead, on_lead)
        conn.execute(sa.delete(table).where(*on_day))
        parts = _day_parts(ls, lead, on_lead)
        conn.execute(sa.insert(table).from_select(_DAY_COLUMNS, sa.union_all(*parts)))
        if fingerprints:
            conn.execute(
                sa.update(table)
                .where(table.c.day == sa.bindparam("d"), table.c.dimension == "")
                .values(fingerprint=sa.bindparam("f")),
                [{"d": day, "f": value} for day, value in fingerprints.items()],
            )


_DAY_COLUMNS = [
    "day",
    "dimension",
    "key",
    "first_touch",
    "last_touch",
    "linear",
    "touches",
    "leads",
]


def _day_parts(ls: sa.Table, lead: sa.Table, where: list[t.Any]) -> list[t.Any]:
    """Per sign-up day of the ``Lead`` rows matching ``where``: the numbers of every dimension
    and the day's totals, as rows of ``LeadDay``.

    A lead's touches are its rows with ``timestamp`` at or before the sign-up (the earliest
    touch when every one is later), ranked by ``timestamp`` then id: rank 1 is the first touch,
    rank ``n`` the last, and each gets ``1/n`` under the linear model.
    """
    users = sa.select(lead.c.user_id, lead.c.signed_up_at, lead.c.signup_day).where(*where)
    users_q = users.subquery("leads")
    touches = (
        sa.select(
            ls.c.user_id,
            ls.c.id,
            ls.c.timestamp,
            *(ls.c[name] for name in DIMENSIONS),
            users_q.c.signed_up_at.label("signup_at"),
            users_q.c.signup_day.label("day"),
            sa.func.min(ls.c.timestamp).over(partition_by=ls.c.user_id).label("first_ts"),
        )
        .select_from(ls.join(users_q, users_q.c.user_id == ls.c.user_id))
        .subquery("touches")
    )
    cutoff = sa.case(
        (touches.c.signup_at >= touches.c.first_ts, touches.c.signup_at),
        else_=touches.c.first_ts,
    )
    user = touches.c.user_id
    credited = (
        sa.select(
            touches.c.user_id,
            touches.c.day,
            *(touches.c[name] for name in DIMENSIONS),
            sa.func.row_number()
            .over(partition_by=user, order_by=(touches.c.timestamp.asc(), touches.c.id.asc()))
            .label("rank_first"),
            sa.func.count().over(partition_by=user).label("n"),
        )
        .where(touches.c.timestamp <= cutoff)
        .cte("credited")
    )
    one, zero = sa.literal(1), sa.literal(0)
    measures = [
        sa.func.sum(sa.case((credited.c.rank_first == 1, one), else_=zero)),
        sa.func.sum(sa.case((credited.c.rank_first == credited.c.n, one), else_=zero)),
        sa.func.sum(sa.cast(1, sa.Float) / credited.c.n),
        sa.func.count(),
        sa.func.count(sa.distinct(credited.c.user_id)),
    ]
    parts = [
        sa.select(credited.c.day, sa.literal(""), sa.literal(""), *measures).group_by(
            credited.c.day
        )
    ]
    for name in DIMENSIONS:
        key = sa.func.coalesce(credited.c[name], "")
        parts.append(
            sa.select(credited.c.day, sa.literal(name), key, *measures).group_by(
                credited.c.day, key
            )
        )
    return parts


def rebuild(conn: Connection, lead_source: type[t.Any]) -> tuple[int, int]:
    """Make ``Lead`` and ``LeadDay`` again from every ``LeadSource`` row.

    :return: the number of leads and of days.
    """
    lead_model, day_model, _ = models(lead_source)
    lead, days = lead_model.__table__, day_model.__table__
    _lock(conn, lead, None)
    conn.execute(sa.delete(lead))
    refresh(conn, lead_source, lock=False, days=False)
    conn.execute(sa.delete(days))
    compute_days(conn, lead_source)
    _analyze(conn, lead)
    _analyze(conn, days)
    leads = conn.scalar(sa.select(sa.func.count()).select_from(lead)) or 0
    count = conn.scalar(sa.select(sa.func.count()).select_from(days).where(days.c.dimension == ""))
    return int(leads), int(count or 0)


def vacuum(engine: sa.Engine, lead_source: type[t.Any]) -> None:
    """``VACUUM ANALYZE`` both tables on PostgreSQL after a rebuild, so that a report's check of
    the ``Lead`` rows is an index-only scan at once rather than after autovacuum's next pass.
    """
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        for model in models(lead_source)[:2]:
            quoted = conn.dialect.identifier_preparer.format_table(model.__table__)
            conn.execute(sa.text(f"VACUUM ANALYZE {quoted}"))


_PENDING = "utm_tracker_lead_users"


def listen(lead_source: type[t.Any]) -> None:
    """Keep ``Lead`` and ``LeadDay`` in step with ``LeadSource`` rows written through a host's ORM
    session: the flush only notes the users (no SQL in the host's flush), and once the host's
    transaction has committed their rows are refreshed in a transaction of ours. A failure is
    logged (``flask utm rebuild`` repairs it) and never reaches the host.
    """

    def noted(mapper: t.Any, conn: Connection, target: t.Any) -> None:
        session = orm.object_session(target)
        if session is None:
            return
        users = session.info.setdefault(_PENDING, {}).setdefault(lead_source, set())
        users.add(target.user_id)
        users.update(sa.inspect(target).attrs.user_id.history.deleted or ())

    for name in ("after_insert", "after_update", "after_delete"):
        sa.event.listen(lead_source, name, noted)


def _after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    for lead_source, users in pending.items():
        try:
            bind = session.get_bind(mapper=sa.inspect(lead_source))
            engine = bind.engine if isinstance(bind, sa.Connection) else bind
            with engine.begin() as conn:
                refresh(conn, lead_source, users, days=False)
        except sa.exc.SQLAlchemyError as err:
            logger.error(
                "Refreshing the reports after an ORM write of lead sources failed (run `flask"
                " utm rebuild`): %s",
                type(err).__name__,
            )


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


sa.event.listen(orm.Session, "after_commit", _after_commit)
sa.event.listen(orm.Session, "after_soft_rollback", lambda session, previous: None)
sa.event.listen(orm.Session, "after_rollback", _after_rollback)


def written(
    conn: Connection, lead_source: type[t.Any], user_id: t.Any, inserted: t.Sequence[t.Any]
) -> None:
    """``UTMTracker.write``'s hook: refresh the user's ``Lead`` row when rows were inserted.

    Their sign-up day's ``LeadDay`` rows are left to :func:`store_stale_days` (``flask utm
    refresh``): recomputing a day costs as much as the day's sign-ups, which a login must not
    pay. Until then, reports compute that day in their query.
    """
    if inserted:
        refresh(conn, lead_source, [user_id], deleted=False, days=False)
