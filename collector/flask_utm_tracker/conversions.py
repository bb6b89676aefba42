"""Conversions and ad spend: the models, recording a conversion, and the attribution tables.

``Conversion`` is what a user did that the product counts (``sign_up``, ``purchase``), with an
optional value; ``Spend`` is what a campaign cost per day, imported from GA4's cost-data layout
(``flask utm spend import``). Both are built on the host's ``db`` like ``LeadSource``.

Three derived tables let a report read rather than compute (see
:mod:`flask_utm_tracker.attribution`), all kept in step by :func:`record`:

``ConversionPath``
    one row per conversion: its path under each dimension (collapsed, for the data-driven
    model), and the credit every positional model gave each key, with the value and currency
    they were computed with (so that a restatement or a deletion takes them back exactly).
``ConversionDay``
    per conversion name, day (UTC), dimension, key and currency: the conversions and revenue
    credited under each positional model, summed.
``UserPath``
    one row per user with lead sources: their whole path under each dimension, collapsed (the
    data-driven model's null paths), with the number and largest id of the rows it was made of.

:func:`lead_sources_written` brings a user's rows up to date after new ``LeadSource`` rows
(a touch recorded after a conversion, on another device); ``flask utm rebuild``
(:func:`rebuild`) makes all three again, after changing ``UTM_TRACKER_LOOKBACK_DAYS`` or
``UTM_TRACKER_HALF_LIFE_DAYS``, or after writing ``LeadSource`` or ``Conversion`` rows around
the extension (a bulk ``INSERT``, a user deleted in SQL). Deleting a ``Conversion`` through the
ORM (a user deleted with ``db.session.delete``) takes its credit back in the same flush.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import typing as t
import weakref
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa
from flask import current_app
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql, sqlite

from . import attribution
from .attribution import DIMENSIONS, NOT_SET, POSITIONAL, Touch
from .models import SHORT, utcnow
from .signals import conversion_recorded

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.engine import Connection

    from .extension import UTMTracker

logger = logging.getLogger("flask_utm_tracker")

#: Longest conversion name and order id.
NAME = 64
ORDER_ID = 255
#: What a conversion name may hold.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: Largest absolute value ``Numeric(18, 4)`` holds.
MAX_VALUE = Decimal("99999999999999.9999")
#: Defaults of ``UTM_TRACKER_CURRENCY``, ``UTM_TRACKER_LOOKBACK_DAYS``,
#: ``UTM_TRACKER_HALF_LIFE_DAYS``.
CURRENCY = "USD"
LOOKBACK_DAYS = attribution.LOOKBACK_DAYS
HALF_LIFE_DAYS = attribution.HALF_LIFE_DAYS
#: Conversions recomputed per transaction by :func:`rebuild`.
BATCH = 2000


@dataclass(frozen=True)
class ConversionModels:
    """The models made for one tracker."""

    Conversion: type[t.Any]
    Spend: type[t.Any]
    #: The derived attribution tables (see the module's docstring).
    ConversionPath: type[t.Any]
    ConversionDay: type[t.Any]
    UserPath: type[t.Any]


#: The models made for each tracker, by its ``Conversion`` model.
_models: weakref.WeakKeyDictionary[type[t.Any], ConversionModels] = weakref.WeakKeyDictionary()


def make_models(
    db: SQLAlchemy, user_model: type[t.Any], user_fk: sa.Column[t.Any], table_prefix: str
) -> ConversionModels:
    """Build ``Conversion``, ``Spend`` and the attribution tables on ``db.Model``.

    :param user_fk: the user model's primary-key column, referenced by ``Conversion.user_id``.
    """
    target = f"{user_fk.table.fullname}.{user_fk.name}"

    def user_type() -> t.Any:
        return user_fk.type.copy() if hasattr(user_fk.type, "copy") else user_fk.type

    conversion_table = f"{table_prefix}conversion"
    conversion = type(
        "Conversion",
        (db.Model,),
        {
            "__tablename__": conversion_table,
            "__doc__": "Something a user did that counts (a purchase, a sign-up), with its value.",
            "id": sa.Column(sa.Integer, primary_key=True),
            "user_id": sa.Column(
                user_type(), sa.ForeignKey(target, ondelete="CASCADE"), nullable=False
            ),
            "name": sa.Column(sa.String(NAME), nullable=False),
            "value": sa.Column(sa.Numeric(18, 4), nullable=True),
            "currency": sa.Column(sa.String(3), nullable=True),
            "order_id": sa.Column(sa.String(ORDER_ID), nullable=True),
            "occurred_at": sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow),
            "created_at": sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow),
            "__table_args__": (
                sa.UniqueConstraint("name", "order_id", name=f"uq_{conversion_table}_order"),
                sa.Index(f"ix_{conversion_table}_name_occurred", "name", "occurred_at"),
                sa.Index(f"ix_{conversion_table}_user_occurred", "user_id", "occurred_at"),
            ),
            "user": orm.relationship(
                user_model,
                backref=orm.backref("conversions", cascade="all, delete-orphan", lazy="dynamic"),
            ),
            "__repr__": lambda self: (
                f"<Conversion {self.id} user={self.user_id} {self.name} {self.value}"
                f" {self.currency}>"
            ),
        },
    )
    spend_table = f"{table_prefix}spend"
    spend = type(
        "Spend",
        (db.Model,),
        {
            "__tablename__": spend_table,
            "__doc__": "What one campaign cost on one day (GA4's cost-data layout).",
            "id": sa.Column(sa.Integer, primary_key=True),
            "date": sa.Column(sa.Date, nullable=False),
            "source": sa.Column(sa.String(SHORT), nullable=False),
            "medium": sa.Column(sa.String(SHORT), nullable=False),
            "campaign": sa.Column(sa.String(SHORT), nullable=False, default=""),
            "utm_id": sa.Column(sa.String(SHORT), nullable=False, default=""),
            "cost": sa.Column(sa.Numeric(18, 4), nullable=False),
            "currency": sa.Column(sa.String(3), nullable=False),
            "clicks": sa.Column(sa.Integer, nullable=True),
            "impressions": sa.Column(sa.Integer, nullable=True),
            "__table_args__": (
                sa.UniqueConstraint(
                    "date", "source", "medium", "campaign", "utm_id", name=f"uq_{spend_table}_row"
                ),
            ),
        },
    )
    path_table = f"{table_prefix}conversion_path"
    path_columns = {name: sa.Column(sa.Text, nullable=False, default="[]") for name in DIMENSIONS}
    conversion_path = type(
        "ConversionPath",
        (db.Model,),
        {
            "__tablename__": path_table,
            "__doc__": "A conversion's paths and credits, as the reports read them (derived).",
            "conversion_id": sa.Column(
                sa.Integer,
                sa.ForeignKey(f"{conversion_table}.id", ondelete="CASCADE"),
                primary_key=True,
                autoincrement=False,
            ),
            "user_id": sa.Column(user_type(), nullable=False, index=True),
            "name": sa.Column(sa.String(NAME), nullable=False),
            "occurred_at": sa.Column(sa.DateTime(timezone=True), nullable=False),
            "day": sa.Column(sa.Date, nullable=False),
            "value": sa.Column(sa.Numeric(18, 4), nullable=True),
            "currency": sa.Column(sa.String(3), nullable=False),
            **path_columns,
            #: ``{dimension: {key: [first, last, linear, position, time_decay]}}``.
            "credits": sa.Column(sa.JSON, nullable=False),
            "__table_args__": (sa.Index(f"ix_{path_table}_name_occurred", "name", "occurred_at"),),
        },
    )
    day_table = f"{table_prefix}conversion_day"
    measures: dict[str, t.Any] = {}
    for model in POSITIONAL:
        measures[model] = sa.Column(sa.Float, nullable=False, default=0.0)
        measures["revenue_" + model] = sa.Column(sa.Float, nullable=False, default=0.0)
    conversion_day = type(
        "ConversionDay",
        (db.Model,),
        {
            "__tablename__": day_table,
            "__doc__": "Conversions and revenue of one day credited to one key (derived).",
            "dimension": sa.Column(sa.String(16), primary_key=True),
            "name": sa.Column(sa.String(NAME), primary_key=True),
            "day": sa.Column(sa.Date, primary_key=True),
            "key": sa.Column(sa.String(SHORT), primary_key=True),
            "currency": sa.Column(sa.String(3), primary_key=True),
            **measures,
            #: Conversions with a value among those credited here.
            "valued": sa.Column(sa.Integer, nullable=False, default=0),
        },
    )
    user_path_table = f"{table_prefix}user_path"
    user_path = type(
        "UserPath",
        (db.Model,),
        {
            "__tablename__": user_path_table,
            "__doc__": "A user's whole path under each dimension, collapsed (derived).",
            "user_id": sa.Column(
                user_type(),
                sa.ForeignKey(target, ondelete="CASCADE"),
                primary_key=True,
                autoincrement=False,
            ),
            **{name: sa.Column(sa.Text, nullable=False, default="[]") for name in DIMENSIONS},
            "rows": sa.Column(sa.Integer, nullable=False),
            "max_id": sa.Column(sa.Integer, nullable=False),
        },
    )
    made = ConversionModels(conversion, spend, conversion_path, conversion_day, user_path)
    _models[conversion] = made
    sa.event.listen(conversion, "before_delete", _on_orm_delete)
    return made


def tables(tracker: UTMTracker) -> Tables:
    """The tables of ``tracker``'s conversion models."""
    made = _models[tracker.Conversion]
    return Tables(
        conversion=made.Conversion.__table__,
        path=made.ConversionPath.__table__,
        day=made.ConversionDay.__table__,
        user_path=made.UserPath.__table__,
        lead=tracker.LeadSource.__table__,
    )


@dataclass(frozen=True)
class Tables:
    conversion: sa.Table
    path: sa.Table
    day: sa.Table
    user_path: sa.Table
    lead: sa.Table


# -- input ---------------------------------------------------------------------------------------


def setting(key: str, default: t.Any) -> t.Any:
    """``app.config["UTM_TRACKER_" + key]``, or ``default`` when the app does not set it."""
    return current_app.config.get("UTM_TRACKER_" + key, default)


def lookback_days() -> int:
    days = setting("LOOKBACK_DAYS", LOOKBACK_DAYS)
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise ValueError(f"UTM_TRACKER_LOOKBACK_DAYS must be a whole number of days, not {days!r}.")
    return days


def half_life_days() -> float:
    days = setting("HALF_LIFE_DAYS", HALF_LIFE_DAYS)
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not days > 0:
        raise ValueError(f"UTM_TRACKER_HALF_LIFE_DAYS must be a number above 0, not {days!r}.")
    return float(days)


_currencies: frozenset[str] | None = None


def currencies() -> frozenset[str]:
    """The ISO 4217 codes (current and historic) known to Babel's copy of the CLDR."""
    global _currencies
    if _currencies is None:
        from babel.numbers import list_currencies

        _currencies = frozenset(list_currencies())
    return _currencies


def check_currency(currency: t.Any) -> str:
    """``currency`` upper-cased, or the default currency when it is ``None``.

    :raises ValueError: not an ISO 4217 code.
    """
    if currency is None:
        currency = setting("CURRENCY", CURRENCY)
    if isinstance(currency, str) and currency.upper() in currencies():
        return currency.upper()
    raise ValueError(
        f"{currency!r} is not an ISO 4217 currency code; use three letters such as 'USD' or 'EUR'."
    )


def check_name(name: t.Any) -> str:
    if isinstance(name, str) and NAME_PATTERN.fullmatch(name):
        return name
    raise ValueError(
        "A conversion name is 1 to 64 characters of letters, digits, '_', '.', ':' and '-'"
        f" (such as 'purchase' or 'sign_up'), not {name!r}."
    )


def check_value(value: t.Any) -> Decimal | None:
    """``value`` as a ``Decimal`` with 4 decimal places.

    :raises ValueError: not a number, not finite, or too large for the column.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ValueError(f"The value must be a number or a Decimal, not {value!r}.")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, ValueError):
        raise ValueError(f"The value must be a finite number, not {value!r}.") from None
    if not number.is_finite():
        raise ValueError(f"The value must be a finite number, not {value!r}.")
    if abs(number) > MAX_VALUE:
        raise ValueError(f"The value {value!r} is too large; at most {MAX_VALUE}.")
    return number.quantize(Decimal("0.0001"))


def check_order_id(order_id: t.Any) -> str | None:
    if order_id is None:
        return None
    if isinstance(order_id, str) and 0 < len(order_id) <= ORDER_ID:
        return order_id
    raise ValueError(f"An order id is a string of 1 to {ORDER_ID} characters, not {order_id!r}.")


def as_utc(value: t.Any, what: str = "occurred_at") -> datetime:
    """An aware UTC ``datetime`` from an aware one or a naive one in UTC.

    :raises ValueError: not a ``datetime``.
    """
    if not isinstance(value, datetime):
        raise ValueError(f"{what} must be a datetime (aware, or naive in UTC), not {value!r}.")
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def stored(conn: Connection, value: datetime) -> datetime:
    """``value`` as the dialect stores it (SQLite keeps naive UTC)."""
    return value.replace(tzinfo=None) if conn.dialect.name == "sqlite" else value


def range_filter(
    conn: Connection, column: t.Any, first: date | None, last: date | None
) -> list[t.Any]:
    """Conditions keeping ``column`` (a time) within the days ``first`` to ``last`` (UTC)."""
    where = []
    if first is not None:
        where.append(column >= stored(conn, datetime.combine(first, time(), timezone.utc)))
    if last is not None:
        hi = datetime.combine(last + timedelta(days=1), time(), timezone.utc)
        where.append(column < stored(conn, hi))
    return where


def user_key(tracker: UTMTracker, user: t.Any) -> t.Any:
    """The primary key of ``user`` (an instance of the user model, or the key itself)."""
    if isinstance(user, tracker.user_model):
        key = tracker.user_id_of(user)
        if key is None:
            raise ValueError("The user has no primary key yet: commit it before its conversions.")
        return key
    column = next(iter(tracker.user_model.__table__.primary_key.columns))
    try:
        kind = column.type.python_type
    except NotImplementedError:  # pragma: no cover - an exotic key type: let the database say
        return user
    if user is None or isinstance(user, bool) or not isinstance(user, kind):
        raise ValueError(
            f"user must be a {tracker.user_model.__name__} or its primary key ({kind.__name__}),"
            f" not {user!r}."
        )
    return user


def encode_path(keys: t.Sequence[str]) -> str:
    return json.dumps(list(keys), ensure_ascii=False, separators=(",", ":"))


def decode_path(text: str | None) -> tuple[str, ...]:
    return tuple(json.loads(text)) if text else ()


def _key(value: t.Any) -> str:
    return str(value)[:SHORT] if value else NOT_SET


# -- the derived tables --------------------------------------------------------------------------


class _Lead(t.NamedTuple):
    id: int
    timestamp: datetime
    keys: dict[str, str]


def _lead_rows(
    conn: Connection, tb: Tables, user_ids: t.Sequence[t.Any]
) -> dict[t.Any, list[_Lead]]:
    """The ``LeadSource`` rows of ``user_ids``, oldest first, by user."""
    lead = tb.lead
    out: dict[t.Any, list[_Lead]] = {uid: [] for uid in user_ids}
    if not user_ids:
        return out
    for row in conn.execute(_lead_rows_query(lead), {"users": list(user_ids)}):
        out.setdefault(row[0], []).append(_lead(row[1:]))
    return out


@functools.lru_cache(maxsize=16)
def _lead_rows_query(lead: sa.Table) -> t.Any:
    """:func:`_lead_rows`'s query, built once per table (a login runs it)."""
    return (
        sa.select(lead.c.user_id, lead.c.id, lead.c.timestamp, *(lead.c[d] for d in DIMENSIONS))
        .where(lead.c.user_id.in_(sa.bindparam("users", expanding=True)))
        .order_by(lead.c.user_id, lead.c.timestamp, lead.c.id)
    )


def _lead(row: t.Sequence[t.Any]) -> _Lead:
    return _Lead(
        row[0], as_utc(row[1]), {d: _key(v) for d, v in zip(DIMENSIONS, row[2:], strict=True)}
    )


def compute(
    leads: t.Sequence[_Lead], at: datetime, lookback: int, half_life: float
) -> tuple[dict[str, str], dict[str, dict[str, list[float]]]]:
    """One conversion's paths (collapsed, encoded) and credits per dimension, key and model."""
    earliest = at - timedelta(days=lookback)
    windowed = [lead for lead in leads if earliest <= lead.timestamp <= at]
    paths: dict[str, str] = {}
    credited: dict[str, dict[str, list[float]]] = {}
    for dimension in DIMENSIONS:
        path = [Touch(lead.keys[dimension], lead.timestamp) for lead in windowed]
        paths[dimension] = encode_path(attribution.collapse(touch.key for touch in path))
        per: dict[str, list[float]] = {}
        for i, model in enumerate(POSITIONAL):
            for key, credit in attribution.credits(model, path, at, half_life).items():
                per.setdefault(key, [0.0] * len(POSITIONAL))[i] += credit
        credited[dimension] = per
    return paths, credited


def user_paths(leads: t.Sequence[_Lead]) -> dict[str, t.Any]:
    """A ``UserPath`` row's values from a user's rows."""
    return {
        **{
            d: encode_path(attribution.collapse(lead.keys[d] for lead in leads)) for d in DIMENSIONS
        },
        "rows": len(leads),
        "max_id": max(lead.id for lead in leads),
    }


#: Per ``ConversionDay`` key: the positional credits, their revenue, and the valued count.
_Deltas = dict[tuple[str, str, date, str, str], list[float]]


def _add(
    deltas: _Deltas,
    path: t.Any,
    sign: int,
) -> None:
    """Add (``sign`` 1) or take back (-1) the credits of a ``ConversionPath`` row."""
    value = path["value"]
    money = float(value) if value is not None else None
    n = len(POSITIONAL)
    day = path["day"] if isinstance(path["day"], date) else date.fromisoformat(str(path["day"]))
    for dimension, per in path["credits"].items():
        for key, credits in per.items():
            slot = deltas.setdefault(
                (dimension, path["name"], day, key, path["currency"]), [0.0] * (2 * n + 1)
            )
            for i, credit in enumerate(credits):
                slot[i] += sign * credit
                if money is not None:
                    slot[n + i] += sign * credit * money
            if money is not None:
                slot[2 * n] += sign


def insert_for(conn: Connection, table: sa.Table) -> t.Any:
    return _insert(conn.dialect.name, table)


def _insert(dialect: str, table: sa.Table) -> t.Any:
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(  # pragma: no cover
        "Conversions need PostgreSQL or SQLite (INSERT ... ON CONFLICT)."
    )


def _flush(conn: Connection, day: sa.Table, deltas: _Deltas) -> None:
    """Add ``deltas`` to ``ConversionDay``, in key order (so that concurrent writers lock the
    rows in the same order and never deadlock)."""
    n = len(POSITIONAL)
    names = [*POSITIONAL, *("revenue_" + m for m in POSITIONAL)]
    rows = []
    for (dimension, name, day_, key, currency), slot in sorted(deltas.items()):
        if not any(slot):
            continue
        row: dict[str, t.Any] = {
            "dimension": dimension,
            "name": name,
            "day": day_,
            "key": key,
            "currency": currency,
            "valued": int(slot[2 * n]),
        }
        row.update(zip(names, slot[: 2 * n], strict=True))
        rows.append(row)
    if not rows:
        return
    stmt = insert_for(conn, day)
    stmt = stmt.on_conflict_do_update(
        index_elements=["dimension", "name", "day", "key", "currency"],
        set_={c: day.c[c] + stmt.excluded[c] for c in [*names, "valued"]},
    )
    conn.execute(stmt, rows)


def _store_paths(conn: Connection, table: sa.Table, rows: list[dict[str, t.Any]]) -> None:
    if not rows:
        return
    stmt = insert_for(conn, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["conversion_id"],
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name != "conversion_id"},
    )
    conn.execute(stmt, rows)


def _store_user_paths(
    conn: Connection, table: sa.Table, by_user: t.Mapping[t.Any, t.Sequence[_Lead]]
) -> None:
    rows = [{"user_id": uid, **user_paths(leads)} for uid, leads in by_user.items() if leads]
    empty = [uid for uid, leads in by_user.items() if not leads]
    if empty:
        conn.execute(sa.delete(table).where(table.c.user_id.in_(empty)))
    if rows:
        stmt = _upsert_user_paths(table, conn.dialect.name)
        conn.execute(stmt, sorted(rows, key=lambda r: repr(r["user_id"])))


@functools.lru_cache(maxsize=16)
def _upsert_user_paths(table: sa.Table, dialect: str) -> t.Any:
    """:func:`_store_user_paths`'s upsert, built once per table (a login runs it)."""
    stmt = _insert(dialect, table)
    return stmt.on_conflict_do_update(
        index_elements=["user_id"],
        set_={c: stmt.excluded[c] for c in [*DIMENSIONS, "rows", "max_id"]},
    )


def _path_row(
    conversion: t.Mapping[str, t.Any], leads: t.Sequence[_Lead], lookback: int, half_life: float
) -> dict[str, t.Any]:
    at = as_utc(conversion["occurred_at"])
    paths, credited = compute(leads, at, lookback, half_life)
    return {
        "conversion_id": conversion["id"],
        "user_id": conversion["user_id"],
        "name": conversion["name"],
        "occurred_at": conversion["occurred_at"],
        "day": at.date(),
        "value": conversion["value"],
        "currency": conversion["currency"] or CURRENCY,
        **paths,
        "credits": credited,
    }


def refresh(
    conn: Connection,
    tb: Tables,
    conversions: t.Sequence[t.Any],
    leads: t.Mapping[t.Any, t.Sequence[_Lead]],
    lookback: int,
    half_life: float,
) -> None:
    """Compute the credits of ``conversions`` again: take back what their ``ConversionPath``
    rows credited, credit them from ``leads`` (their users' rows), store the new rows."""
    if not conversions:
        return
    path = tb.path
    deltas: _Deltas = {}
    ids = [c["id"] for c in conversions]
    for old in conn.execute(sa.select(path).where(path.c.conversion_id.in_(ids))).mappings():
        _add(deltas, old, -1)
    rows = [_path_row(c, leads.get(c["user_id"], ()), lookback, half_life) for c in conversions]
    for row in rows:
        _add(deltas, row, 1)
    _flush(conn, tb.day, deltas)
    _store_paths(conn, path, rows)


def retract(conn: Connection, tb_path: sa.Table, tb_day: sa.Table, where: t.Any) -> int:
    """Take back the credits of the ``ConversionPath`` rows matching ``where`` and delete them.

    :return: how many there were.
    """
    deltas: _Deltas = {}
    olds = list(conn.execute(sa.select(tb_path).where(where)).mappings())
    for old in olds:
        _add(deltas, old, -1)
    _flush(conn, tb_day, deltas)
    if olds:
        conn.execute(sa.delete(tb_path).where(where))
    return len(olds)


def _on_orm_delete(mapper: t.Any, conn: Connection, target: t.Any) -> None:
    """A ``Conversion`` deleted through the ORM: take its credits back in the same flush."""
    made = _models[type(target)]
    path = made.ConversionPath.__table__
    retract(conn, path, made.ConversionDay.__table__, path.c.conversion_id == target.id)


def lead_sources_written(
    conn: Connection, tracker: UTMTracker, user_id: t.Any, inserted: t.Sequence[t.Any]
) -> None:
    """Bring a user's derived rows up to date after ``LeadSource`` rows were written for them,
    in the same transaction: their whole path, and the credits of the conversions whose path
    the new rows may join (those at or after the earliest new touch).

    ``UTMTracker.write`` calls it with the rows it inserted.
    """
    if not inserted:
        return
    tb = tables(tracker)
    leads = _lead_rows(conn, tb, [user_id])
    _store_user_paths(conn, tb.user_path, leads)
    times = [as_utc(row["timestamp"]) for row in inserted if row.get("timestamp") is not None]
    if not times:
        return
    query = _conversions_since(tb.conversion, conn.dialect.name)
    since = {"user_id": user_id, "since": stored(conn, min(times))}
    found = list(conn.execute(query, since).mappings())
    if found:
        refresh(conn, tb, found, leads, lookback_days(), half_life_days())


@functools.lru_cache(maxsize=16)
def _conversions_since(conversion: sa.Table, dialect: str) -> t.Any:
    """The user's conversions at or after a time, built once per table (a login runs it)."""
    query = sa.select(conversion).where(
        conversion.c.user_id == sa.bindparam("user_id"),
        conversion.c.occurred_at >= sa.bindparam("since", type_=conversion.c.occurred_at.type),
    )
    if dialect == "postgresql":
        query = query.with_for_update()  # in step with a concurrent restatement
    return query.order_by(conversion.c.id)


# -- recording -----------------------------------------------------------------------------------


def record(
    tracker: UTMTracker,
    user: t.Any,
    name: str,
    *,
    value: t.Any = None,
    currency: str | None = None,
    order_id: str | None = None,
    occurred_at: t.Any = None,
) -> t.Any:
    """Record that ``user`` converted, commit, and return the ``Conversion`` row.

    Runs in a transaction of its own on the engine (not the host's ``db.session``): call it
    after committing your own work. With an ``order_id``, ``(name, order_id)`` is unique: a
    second call updates the value and currency (a restatement, e.g. a refund to 0) and returns
    the same row, also under concurrent calls. The credits of every attribution model are
    computed here, so reports only read them. Sends ``conversion_recorded``.

    :param user: a user instance or its primary key.
    :param name: 1 to 64 characters of ``[A-Za-z0-9_.:-]``.
    :param value: a number or ``Decimal`` (kept to 4 decimal places), or ``None``.
    :param currency: an ISO 4217 code; default ``UTM_TRACKER_CURRENCY`` (``"USD"``).
    :param order_id: the order's id, to make the call idempotent.
    :param occurred_at: an aware ``datetime``, or a naive one in UTC; default now.
    :return: the row, detached (``db.session.merge(conversion)`` to use it in a session).
    :raises ValueError: a bad argument or a user that does not exist; nothing is written.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    name = check_name(name)
    amount = check_value(value)
    code = check_currency(currency)
    order_id = check_order_id(order_id)
    at = utcnow() if occurred_at is None else as_utc(occurred_at)
    lookback, half_life = lookback_days(), half_life_days()
    key = user_key(tracker, user)
    tb = tables(tracker)
    conversion = tb.conversion
    pk = next(iter(tracker.user_model.__table__.primary_key.columns))
    engine = tracker.db.engine
    missing = ValueError(
        f"No {tracker.user_model.__name__} has the primary key {key!r}; nothing was recorded."
    )
    try:
        with engine.begin() as conn:
            if conn.scalar(sa.select(sa.literal(1)).where(pk == key)) is None:
                raise missing
            values = {
                "user_id": key,
                "name": name,
                "value": amount,
                "currency": code,
                "order_id": order_id,
                "occurred_at": stored(conn, at),
                "created_at": stored(conn, utcnow()),
            }
            stmt = insert_for(conn, conversion).values(values)
            if order_id is not None:
                stmt = stmt.on_conflict_do_update(
                    index_elements=["name", "order_id"],
                    set_={"value": stmt.excluded.value, "currency": stmt.excluded.currency},
                )
            conversion_id = conn.execute(stmt.returning(conversion.c.id)).scalar_one()
            saved = (
                conn.execute(sa.select(conversion).where(conversion.c.id == conversion_id))
                .mappings()
                .one()
            )
            leads = _lead_rows(conn, tb, [saved["user_id"]])
            refresh(conn, tb, [saved], leads, lookback, half_life)
            _store_user_paths(conn, tb.user_path, leads)
    except sa.exc.IntegrityError:
        raise missing from None  # the user was deleted meanwhile (foreign key)
    row = dict(saved)
    row["occurred_at"] = as_utc(row["occurred_at"])
    row["created_at"] = as_utc(row["created_at"])
    result = tracker.Conversion(**row)
    orm.make_transient_to_detached(result)
    conversion_recorded.send(app, conversion=result)
    return result


# -- erasure and rebuild ------------------------------------------------------------------------


def erase_user(conn: Connection, tracker: UTMTracker, key: t.Any) -> int:
    """Delete a user's conversions (taking their credits back) and derived rows.

    :return: the number of conversions deleted.
    """
    tb = tables(tracker)
    conversion = tb.conversion
    retract(conn, tb.path, tb.day, tb.path.c.user_id == key)
    ids = sa.select(conversion.c.id).where(conversion.c.user_id == key)
    delivery = getattr(tracker, "Delivery", None)
    if delivery is not None:  # SQLite does not cascade without PRAGMA foreign_keys
        conn.execute(
            sa.delete(delivery.__table__).where(delivery.__table__.c.conversion_id.in_(ids))
        )
    deleted = conn.execute(sa.delete(conversion).where(conversion.c.user_id == key)).rowcount
    conn.execute(sa.delete(tb.user_path).where(tb.user_path.c.user_id == key))
    return int(deleted or 0)


def rebuild(conn: Connection, tracker: UTMTracker) -> tuple[int, int]:
    """Make ``ConversionPath``, ``ConversionDay`` and ``UserPath`` again from every
    ``LeadSource`` and ``Conversion`` row.

    :return: the number of conversions and of users with lead sources.
    """
    tb = tables(tracker)
    lookback, half_life = lookback_days(), half_life_days()
    for table in (tb.day, tb.path, tb.user_path):
        if conn.dialect.name == "postgresql":
            quoted = conn.dialect.identifier_preparer.format_table(table)
            conn.execute(sa.text(f"LOCK TABLE {quoted} IN EXCLUSIVE MODE"))
        conn.execute(sa.delete(table))
    conversion = tb.conversion
    by_user: dict[t.Any, list[dict[str, t.Any]]] = {}
    for row in conn.execute(sa.select(conversion).order_by(conversion.c.id)).mappings():
        by_user.setdefault(row["user_id"], []).append(dict(row))
    deltas: _Deltas = {}
    paths: list[dict[str, t.Any]] = []
    users: list[dict[str, t.Any]] = []
    done = 0

    def user_done(uid: t.Any, leads: list[_Lead]) -> None:
        nonlocal done
        if leads:
            users.append({"user_id": uid, **user_paths(leads)})
        for c in by_user.pop(uid, ()):
            row = _path_row(c, leads, lookback, half_life)
            _add(deltas, row, 1)
            paths.append(row)
            done += 1
        if len(paths) >= BATCH:
            _bulk(conn, tb.path, paths)
        if len(users) >= BATCH:
            _bulk(conn, tb.user_path, users)

    lead = tb.lead
    query = sa.select(
        lead.c.user_id, lead.c.id, lead.c.timestamp, *(lead.c[d] for d in DIMENSIONS)
    ).order_by(lead.c.user_id, lead.c.timestamp, lead.c.id)
    current: t.Any = None
    leads: list[_Lead] = []
    counted = 0
    result = conn.execute(query.execution_options(stream_results=True, yield_per=10_000))
    for lead_row in result:
        if lead_row[0] != current:
            if leads:
                user_done(current, leads)
                counted += 1
            current, leads = lead_row[0], []
        leads.append(_lead(lead_row[1:]))
    if leads:
        user_done(current, leads)
        counted += 1
    for uid in list(by_user):
        user_done(uid, [])
    _bulk(conn, tb.path, paths)
    _bulk(conn, tb.user_path, users)
    _flush(conn, tb.day, deltas)
    if conn.dialect.name == "postgresql":
        for table in (tb.day, tb.path, tb.user_path):
            conn.execute(sa.text(f"ANALYZE {conn.dialect.identifier_preparer.format_table(table)}"))
    return done, counted


def _bulk(conn: Connection, table: sa.Table, rows: list[dict[str, t.Any]]) -> None:
    if rows:
        conn.execute(sa.insert(table), rows)
        rows.clear()
