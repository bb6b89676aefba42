"""Touches -> rows, exactly once.

Every write is a set-based ``INSERT ... ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL; ``INSERT
IGNORE`` elsewhere) on the unique constraints ``(visitor_id, touch_id)`` of ``Touch`` and
``(user_id, touch_id)`` of ``LeadSource``, so resent beacons and parallel logins write each touch
once. Each function runs in one transaction of its own on the engine's connection pool, apart from
the host's ``db.session``: the host's unit of work is never committed or rolled back by us.
"""

from __future__ import annotations

import typing as t
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .models import TOUCH_FIELDS, utcnow

if t.TYPE_CHECKING:
    from sqlalchemy.engine import Connection


def insert_ignore(
    conn: Connection,
    table: sa.Table,
    rows: t.Sequence[t.Mapping[str, t.Any]],
    keys: t.Sequence[str],
) -> list[dict[str, t.Any]]:
    """Insert ``rows`` into ``table``, skipping those that clash on ``keys``.

    :return: the rows actually inserted, with their ``id`` (``rows`` on dialects without
        ``RETURNING``).
    """
    if not rows:
        return []
    stmt: t.Any
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=list(keys))
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=list(keys))
    else:
        stmt = sa.insert(table).prefix_with("IGNORE")
    if conn.dialect.insert_executemany_returning or len(rows) == 1:
        if conn.dialect.insert_returning:
            # Only the new ids come back (the rest is what was sent): reading every column
            # back, JSON included, cost as much as the insert.
            result = conn.execute(
                stmt.returning(table.c.id, *(table.c[k] for k in keys)), list(rows)
            )
            by_key = {tuple(str(row[k]) for k in keys): row for row in rows}
            return [{**by_key[tuple(map(str, r[1:]))], "id": r[0]} for r in result]
    conn.execute(stmt, list(rows))
    return [dict(r) for r in rows]


def store_touches(
    conn: Connection,
    touch_table: sa.Table,
    rows: t.Sequence[dict[str, t.Any]],
    claimed_by: t.Any = None,
) -> list[dict[str, t.Any]]:
    """Store beacon touches as ``Touch`` rows (claimed at once when ``claimed_by`` is a user id)."""
    now = utcnow()
    values = [
        {
            **{k: row.get(k) for k in TOUCH_FIELDS},
            "received_at": now,
            "claimed_by": claimed_by,
            "claimed_at": now if claimed_by is not None else None,
        }
        for row in rows
    ]
    return insert_ignore(conn, touch_table, values, ("visitor_id", "touch_id"))


def claim_touches(
    conn: Connection, touch_table: sa.Table, visitor_id: str, user_id: t.Any
) -> list[dict[str, t.Any]]:
    """Mark the visitor's unclaimed ``Touch`` rows as the user's, and return their fields.

    One ``UPDATE ... RETURNING``: under concurrency each row is claimed by exactly one transaction.
    """
    stmt = (
        sa.update(touch_table)
        .where(touch_table.c.visitor_id == visitor_id, touch_table.c.claimed_by.is_(None))
        .values(claimed_by=user_id, claimed_at=utcnow())
    )
    if conn.dialect.update_returning:
        result = conn.execute(stmt.returning(*(touch_table.c[k] for k in TOUCH_FIELDS)))
        return [dict(r) for r in result.mappings()]
    query = sa.select(*(touch_table.c[k] for k in TOUCH_FIELDS)).where(
        touch_table.c.visitor_id == visitor_id, touch_table.c.claimed_by.is_(None)
    )
    rows = [dict(r) for r in conn.execute(query.with_for_update()).mappings()]
    conn.execute(stmt)
    return rows


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def write_lead_sources(
    conn: Connection,
    lead_table: sa.Table,
    user_id: t.Any,
    rows: t.Iterable[t.Mapping[str, t.Any]],
) -> list[dict[str, t.Any]]:
    """Write one ``LeadSource`` per distinct touch id of ``rows`` for ``user_id``.

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
    return insert_ignore(conn, lead_table, ordered, ("user_id", "touch_id"))
