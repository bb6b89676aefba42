"""Conversion reports: conversions, revenue, spend, ROAS and CPA per value of a dimension, under
each model of :mod:`flask_utm_tracker.attribution`, read from the tables
:mod:`flask_utm_tracker.conversions` keeps (a report reads and never computes a path).
"""

from __future__ import annotations

import logging
import typing as t
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime

import sqlalchemy as sa

from . import conversions
from .attribution import (
    DIMENSIONS,
    DIRECT,
    FALLBACK,
    MIN_NULL_PATHS,
    MODELS,
    NOT_SET,
    add_transitions,
    removal_effects_of,
)
from .channels import channel_for

if t.TYPE_CHECKING:
    from .extension import UTMTracker

logger = logging.getLogger("flask_utm_tracker")


@dataclass
class Report:
    """What :func:`report` found: the rows and how they were computed."""

    rows: list[dict[str, t.Any]]
    #: The model asked for, and the one used (``linear`` when ``data_driven`` fell back).
    model: str
    used: str
    #: Null paths the data-driven model saw (``None`` for the other models).
    null_paths: int | None = None
    notes: list[str] = field(default_factory=list)


def _day(value: t.Any, what: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{what} must be a date (YYYY-MM-DD), not {value!r}.")


def check(model: str, by: str, start: t.Any, end: t.Any) -> tuple[date | None, date | None]:
    """Validate a report's arguments; return the dates.

    :raises ValueError: naming the bad argument and the valid values.
    """
    if model not in MODELS:
        raise ValueError(f"Unknown attribution model {model!r}; use one of: {', '.join(MODELS)}.")
    if by not in DIMENSIONS:
        raise ValueError(f"Unknown dimension {by!r}; use one of: {', '.join(DIMENSIONS)}.")
    first, last = _day(start, "start"), _day(end, "end")
    if first and last and first > last:
        raise ValueError("The start must not be after the end.")
    return first, last


def attribute(
    tracker: UTMTracker,
    *,
    name: str | None = None,
    model: str = "last",
    by: str = "channel",
    start: t.Any = None,
    end: t.Any = None,
) -> list[dict[str, t.Any]]:
    """Conversions, revenue, spend, ROAS and CPA per value of ``by`` under ``model``.

    :param name: the conversion name (``None``: every conversion).
    :param start: first day of ``occurred_at`` (a date, UTC, inclusive); ``None``: no bound.
    :param end: last day, inclusive.
    :return: ``[{"key", "conversions", "revenue", "spend", "roas", "cpa"}]`` sorted by
        conversions, descending (then by key).
    :raises ValueError: an unknown model or dimension, or a bad date.
    """
    return report(tracker, name=name, model=model, by=by, start=start, end=end).rows


def report(
    tracker: UTMTracker,
    *,
    name: str | None = None,
    model: str = "last",
    by: str = "channel",
    start: t.Any = None,
    end: t.Any = None,
) -> Report:
    """:func:`attribute`, with how the numbers were computed (the data-driven fallback)."""
    first, last = check(model, by, start, end)
    tables = conversions.tables(tracker)
    engine = tracker.db.engine
    notes: list[str] = []
    used = model
    null_paths: int | None = None
    with engine.connect() as conn:
        credited: dict[str, float] = defaultdict(float)
        revenue: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        if model == "data_driven":
            shared = _data_driven(conn, tracker, tables, name, by, first, last)
            null_paths = shared[0]
            if shared[1] is None:
                used = FALLBACK
                notes.append(
                    f"Data-driven attribution needs at least {MIN_NULL_PATHS} users who did not"
                    f" convert (null paths) and a conversion with a touch; this range has"
                    f" {null_paths} null paths. Showing {MODELS[FALLBACK].lower()} instead."
                )
                logger.warning(notes[-1])
            else:
                credited, revenue = shared[1], shared[2]
        if used != "data_driven":
            day = tables.day
            where = [day.c.dimension == by]
            if name is not None:
                where.append(day.c.name == name)
            if first is not None:
                where.append(day.c.day >= first)
            if last is not None:
                where.append(day.c.day <= last)
            query = (
                sa.select(
                    day.c.key,
                    day.c.currency,
                    sa.func.sum(day.c[used]),
                    sa.func.sum(day.c["revenue_" + used]),
                    sa.func.sum(day.c.valued),
                )
                .where(*where)
                .group_by(day.c.key, day.c.currency)
            )
            for key, currency, n, money, valued in conn.execute(query):
                credited[key] += float(n or 0)
                # A currency shows when this model credits it some revenue, or credits a
                # conversion of it (a refund to 0 shows as 0).
                if abs(money or 0) > 1e-9 or (valued and abs(n or 0) > 1e-9):
                    revenue[key][currency] += float(money or 0)
        spend = _spend(conn, tracker, by, first, last)
    return Report(_rows(credited, revenue, spend), model, used, null_paths, notes)


def _data_driven(
    conn: sa.Connection,
    tracker: UTMTracker,
    tables: t.Any,
    name: str | None,
    by: str,
    first: date | None,
    last: date | None,
) -> tuple[int, dict[str, float] | None, dict[str, dict[str, float]]]:
    """The data-driven credits, or ``None`` for them when the model must fall back."""
    path = tables.path
    where = conversions.range_filter(conn, path.c.occurred_at, first, last)
    if name is not None:
        where.append(path.c.name == name)
    column = path.c[by]
    empty = conversions.encode_path([])
    transitions: dict[tuple[str, str], float] = {}
    converting = 0.0
    query = sa.select(column, sa.func.count()).where(*where, column != empty).group_by(column)
    for text, n in conn.execute(query):
        add_transitions(transitions, conversions.decode_path(text), n, True)
        converting += n
    # Conversions and revenue per currency, with an empty path ((direct)) or not.
    is_direct = (column == empty).label("direct")
    direct = 0.0
    money: dict[bool, dict[str, float]] = {True: defaultdict(float), False: defaultdict(float)}
    query = (
        sa.select(is_direct, path.c.currency, sa.func.count(), sa.func.sum(path.c.value))
        .where(*where)
        .group_by(is_direct, path.c.currency)
    )
    for flag, currency, n, value in conn.execute(query):
        if flag:
            direct += n
        if value is not None:
            money[bool(flag)][currency] += float(value)

    users = tables.user_path
    conversion = tracker.Conversion.__table__
    converted = [conversion.c.user_id == users.c.user_id]
    converted += conversions.range_filter(conn, conversion.c.occurred_at, first, last)
    if name is not None:
        converted.append(conversion.c.name == name)
    query = (
        sa.select(users.c[by], sa.func.count())
        .where(~sa.exists().where(*converted), users.c[by] != empty)
        .group_by(users.c[by])
    )
    null_paths = 0
    for text, n in conn.execute(query):
        add_transitions(transitions, conversions.decode_path(text), n, False)
        null_paths += n
    if null_paths < MIN_NULL_PATHS or not converting:
        return null_paths, None, {}
    effects = removal_effects_of(transitions)
    total_effect = sum(effects.values())
    credited: dict[str, float] = defaultdict(float)
    revenue: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for key, effect in effects.items():
        share = effect / total_effect if total_effect > 0 else 0.0
        credited[key] += converting * share
        for currency, value in money[False].items():
            revenue[key][currency] += value * share
    if direct:
        credited[DIRECT] += direct
        for currency, value in money[True].items():
            revenue[DIRECT][currency] += value
    return null_paths, credited, revenue


def spend_key(by: str, source: str, medium: str, campaign: str) -> str:
    """The value of ``by`` a spend row counts for (its channel by GA4's rules)."""
    if by == "channel":
        return channel_for(source, medium, campaign)
    value = {"source": source, "medium": medium, "campaign": campaign}[by]
    return value or NOT_SET


def _spend(
    conn: sa.Connection, tracker: UTMTracker, by: str, first: date | None, last: date | None
) -> dict[str, dict[str, float]]:
    spend = tracker.Spend.__table__
    where = []
    if first is not None:
        where.append(spend.c.date >= first)
    if last is not None:
        where.append(spend.c.date <= last)
    query = (
        sa.select(
            spend.c.source,
            spend.c.medium,
            spend.c.campaign,
            spend.c.currency,
            sa.func.sum(spend.c.cost),
        )
        .where(*where)
        .group_by(spend.c.source, spend.c.medium, spend.c.campaign, spend.c.currency)
    )
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for source, medium, campaign, currency, cost in conn.execute(query):
        out[spend_key(by, source, medium, campaign)][currency] += float(cost or 0)
    return out


def _clean(value: float) -> float:
    value = round(value, 6)
    return 0.0 if value == 0 else value  # no -0.0


def _rows(
    credited: t.Mapping[str, float],
    revenue: t.Mapping[str, t.Mapping[str, float]],
    spend: t.Mapping[str, t.Mapping[str, float]],
) -> list[dict[str, t.Any]]:
    rows: list[dict[str, t.Any]] = []
    for key in set(credited) | set(spend):
        conversions = _clean(credited.get(key, 0.0))
        money = {c: _clean(v) for c, v in sorted(revenue.get(key, {}).items())}
        cost = {c: _clean(v) for c, v in sorted(spend.get(key, {}).items()) if v}
        if not conversions and not any(money.values()) and not cost:
            continue  # what a restatement or an erasure left at zero
        roas = cpa = None
        if len(cost) == 1:
            ((currency, amount),) = cost.items()
            if set(money) <= {currency} and amount > 0:
                roas = _clean(money.get(currency, 0.0) / amount)
            if conversions > 0:
                cpa = _clean(amount / conversions)
        rows.append(
            {
                "key": key,
                "conversions": conversions,
                "revenue": money,
                "spend": cost,
                "roas": roas,
                "cpa": cpa,
            }
        )
    rows.sort(key=lambda row: (-float(row["conversions"]), str(row["key"])))
    return rows
