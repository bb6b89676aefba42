"""Attribution queries: leads by channel, source, medium and campaign, over time.

A *lead* is a user with at least one ``LeadSource`` row; users without a touch are not leads
(they came direct, or before tracking began) and appear in no report.

A lead is dated by its **sign-up**: the user model's ``created_at`` (or ``date_joined``, as
Django names it) when it has such a column, else the user's first ``LeadSource.created_at``,
which is when the collector first wrote a row for the user, at the login that reconciled the
touches: the closest thing to a sign-up time the extension can see. A naive ``created_at`` is
taken as UTC. The date range and the
day/week/month buckets select and group leads by that time, so every attribution model shares
the same total and only moves the credit between channels.

A lead's touches are its ``LeadSource`` rows with ``timestamp`` (when the touch happened) at or
before the sign-up: touches recorded later (an authenticated user clicking a newsletter) did not
bring the user. When every touch is later than the sign-up (a client clock running ahead), the
earliest touch still counts, so no lead is lost. Ties on ``timestamp`` are broken by row id.

Attribution models:

``first``
    the lead's earliest touch gets the lead;
``last``
    the latest touch before the sign-up gets the lead;
``linear``
    each of the lead's ``n`` touches gets ``1/n`` of it.

:func:`leads` also takes ``any``: every group the lead has a touch in counts it once (leads by
channel without attribution; the groups add up to more than the total).

The numbers come from the ``LeadDay`` table (per sign-up day, per value of each dimension, under
every model), which the writers keep in step with ``LeadSource`` (see
:mod:`flask_utm_tracker.rollup`): a report only reads, summing a few rows per day (a day whose
users were deleted since is computed in the query), so its cost follows the number of days and
values, not of touches. Only the grouped rows reach Python. With ``UTM_TRACKER_REPORTS_BIND``
the queries run on that bind (a read replica).
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

import sqlalchemy as sa

from . import rollup

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .extension import UTMTracker

Model = t.Literal["first", "last", "linear"]
Dimension = t.Literal["channel", "source", "medium", "campaign"]
Interval = t.Literal["day", "week", "month"]

#: The attribution models, with the names the dashboard and the CLI show.
MODELS: dict[str, str] = {
    "first": "First touch",
    "last": "Last touch",
    "linear": "Linear",
}
#: The extra model :func:`leads` takes: distinct leads with any touch in a group.
ANY = "any"
#: The ``LeadSource`` columns leads can be grouped by.
DIMENSIONS: tuple[str, ...] = rollup.DIMENSIONS
#: The time buckets.
INTERVALS: tuple[str, ...] = ("day", "week", "month")
#: The user model columns taken as the sign-up time, in order of preference.
SIGNUP_COLUMNS = rollup.SIGNUP_COLUMNS


@dataclass(frozen=True)
class Count:
    """Leads credited to one value of a dimension (in one time bucket, when bucketed)."""

    #: The value: a channel name, a source, a medium or a campaign (``""`` when empty).
    key: str
    #: Leads credited; a fraction under the linear model.
    leads: float
    #: The first day of the bucket (Monday for weeks), or ``None`` when not bucketed.
    bucket: date | None = None


@dataclass(frozen=True)
class Totals:
    """The headline numbers of a period."""

    #: Users who signed up in the period with at least one touch.
    leads: int
    #: Their touches up to their sign-up.
    touches: int
    #: Anonymous touches received in the period and not (yet) claimed by a login.
    unclaimed: int

    @property
    def touches_per_lead(self) -> float:
        return self.touches / self.leads if self.leads else 0.0


@dataclass(frozen=True)
class Comparison:
    """One value of a dimension under every attribution model."""

    key: str
    first: float = 0.0
    last: float = 0.0
    linear: float = 0.0
    #: The leads' touches (up to their sign-ups) with this value.
    touches: int = 0

    def of(self, model: str) -> float:
        """The leads credited under ``model``."""
        _check("attribution model", model, MODELS)
        return float(getattr(self, model))


@dataclass(frozen=True)
class Series:
    """Leads by a dimension over time, every bucket present (zeros included)."""

    buckets: list[date]
    #: Per key, one value per bucket; keys ordered by their total, largest first.
    values: dict[str, list[float]] = field(default_factory=dict)

    @property
    def totals(self) -> list[float]:
        """The sum of every key, per bucket."""
        columns = zip(*self.values.values(), strict=True)
        return [sum(column) for column in columns] or [0.0] * len(self.buckets)


def _check(name: str, value: str, allowed: t.Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"Unknown {name} {value!r}; use one of: {', '.join(allowed)}.")


def bounds(start: date | None, end: date | None) -> tuple[datetime | None, datetime | None]:
    """The UTC instants ``[start 00:00, day after end 00:00)`` of an inclusive date range."""
    lo = datetime.combine(start, time(), timezone.utc) if start else None
    hi = datetime.combine(end + timedelta(days=1), time(), timezone.utc) if end else None
    return lo, hi


def bucket_of(day: date, interval: str) -> date:
    """The first day of the bucket holding ``day``: itself, its week's Monday, its month's 1st."""
    _check("interval", interval, INTERVALS)
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    return day


def buckets(start: date, end: date, interval: str) -> list[date]:
    """Every bucket from the one holding ``start`` to the one holding ``end``."""
    current, last = bucket_of(start, interval), bucket_of(end, interval)
    out = []
    while current <= last:
        out.append(current)
        if interval == "day":
            current += timedelta(days=1)
        elif interval == "week":
            current += timedelta(days=7)
        else:
            current = (current + timedelta(days=32)).replace(day=1)
    return out


signup_column = rollup.signup_column


def _bucket_expr(dialect: str, day: t.Any, interval: str) -> t.Any:
    """A SQL expression for the bucket of ``day`` (a date) in ``dialect``."""
    if dialect == "postgresql":
        return sa.cast(sa.func.date_trunc(interval, sa.cast(day, sa.DateTime)), sa.Date)
    if dialect == "sqlite":
        if interval == "week":
            # The next Sunday (or the day itself), then back to that week's Monday.
            return sa.func.date(day, "weekday 0", "-6 days")
        if interval == "month":
            return sa.func.strftime("%Y-%m-01", day)
        return sa.func.date(day)
    # Other dialects: group by day in SQL; ``leads`` rolls days up into weeks and months.
    return day


def as_date(value: t.Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _prepare(tracker: UTMTracker, session: Session, start: date | None, end: date | None) -> t.Any:
    """The ``LeadDay`` rows from ``start`` to ``end``, read only (see
    :func:`flask_utm_tracker.rollup.day_table`)."""
    return rollup.day_table(session, tracker.LeadSource, start, end)


def _where(table: t.Any, start: date | None, end: date | None, dimension: str) -> t.Any:
    """The ``LeadDay`` rows of ``dimension`` (``""``: the totals) from ``start`` to ``end``."""
    where = [table.c.dimension == dimension]
    if start is not None:
        where.append(table.c.day >= start)
    if end is not None:
        where.append(table.c.day <= end)
    return sa.and_(*where)


#: The ``LeadDay`` column of each model.
_COLUMNS = {"first": "first_touch", "last": "last_touch", "linear": "linear", ANY: "leads"}


class ReadOnly:
    """What the reports need of a session, on an engine of their own (a read replica): each
    query on a connection of its own, its rows read at once, nothing ever written."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def get_bind(self) -> sa.Engine:
        return self.engine

    def execute(self, statement: t.Any) -> sa.Result[t.Any]:
        with self.engine.connect() as conn:
            return conn.execute(statement).freeze()()

    def scalar(self, statement: t.Any) -> t.Any:
        return self.execute(statement).scalar()


def _session(tracker: UTMTracker, session: Session | None) -> Session:
    """``session``; else, with ``UTM_TRACKER_REPORTS_BIND`` set, a reader on that bind of
    ``SQLALCHEMY_BINDS`` (a read replica); else ``tracker.db.session``."""
    if session is not None:
        return session
    bind = tracker.settings().reports_bind
    if bind is not None:
        return t.cast("Session", ReadOnly(tracker.db.engines[bind]))
    return t.cast("Session", tracker.db.session)


def leads(
    tracker: UTMTracker,
    by: str = "channel",
    *,
    model: str = "first",
    start: date | None = None,
    end: date | None = None,
    interval: str | None = None,
    limit: int | None = None,
    session: Session | None = None,
) -> list[Count]:
    """Leads signed up from ``start`` to ``end`` (inclusive, UTC), credited to the values of
    ``by`` under ``model``, optionally per time bucket.

    :param tracker: the extension (its models and database).
    :param by: ``"channel"``, ``"source"``, ``"medium"`` or ``"campaign"``.
    :param model: ``"first"``, ``"last"``, ``"linear"`` or ``"any"`` (see the module docs).
    :param start: first day of the range; ``None`` for no lower bound.
    :param end: last day of the range; ``None`` for no upper bound.
    :param interval: ``"day"``, ``"week"`` or ``"month"`` to bucket by sign-up time, or ``None``.
    :param limit: keep the largest ``limit`` values (not bucketed only).
    :param session: the session to query with; default ``tracker.db.session``.
    :return: counts ordered by bucket, then leads (largest first), then key.
    """
    _check("dimension", by, DIMENSIONS)
    _check("attribution model", model, (*MODELS, ANY))
    if interval is not None:
        _check("interval", interval, INTERVALS)
    session = _session(tracker, session)
    dialect = session.get_bind().dialect.name
    table = _prepare(tracker, session, start, end)
    where = _where(table, start, end, by)
    value = sa.func.sum(table.c[_COLUMNS[model]])
    columns: list[t.Any] = [table.c.key.label("key")]
    if interval is not None:
        columns.append(_bucket_expr(dialect, table.c.day, interval).label("bucket"))
    # A value with touches but no lead under this model (never first, say) is left out.
    query = sa.select(*columns, value.label("leads")).where(where).group_by(*columns)
    query = query.having(value > 0)
    order: list[t.Any] = [sa.desc("leads"), sa.asc("key")]
    if interval is not None:
        order.insert(0, sa.asc("bucket"))
    elif limit is not None:
        query = query.limit(limit)
    rows = session.execute(query.order_by(*order)).all()
    if interval is None:
        return [Count(row.key or "", float(row.leads or 0)) for row in rows]
    counts: dict[tuple[date, str], float] = {}
    for row in rows:
        # A no-op but for dialects grouped by day (see _bucket_expr).
        slot = (bucket_of(as_date(row.bucket), interval), row.key or "")
        counts[slot] = counts.get(slot, 0.0) + float(row.leads or 0)
    return [
        Count(k, v, b)
        for (b, k), v in sorted(counts.items(), key=lambda item: (item[0][0], -item[1], item[0][1]))
    ]


def series(
    tracker: UTMTracker,
    by: str = "channel",
    *,
    model: str = "first",
    start: date | None = None,
    end: date | None = None,
    interval: str = "day",
    session: Session | None = None,
) -> Series:
    """:func:`leads` bucketed, as one list per key with every bucket from ``start`` to ``end``
    (from the first to the last lead when a bound is missing), zeros included.
    """
    counts = leads(
        tracker, by, model=model, start=start, end=end, interval=interval, session=session
    )
    if not counts and (start is None or end is None):
        return Series([])
    first = start or min(c.bucket for c in counts if c.bucket)
    last = end or max(c.bucket for c in counts if c.bucket)
    slots = buckets(first, last, interval)
    index = {b: i for i, b in enumerate(slots)}
    values: dict[str, list[float]] = {}
    for count in counts:
        if count.bucket in index:
            row = values.setdefault(count.key, [0.0] * len(slots))
            row[index[count.bucket]] += count.leads
    ordered = dict(sorted(values.items(), key=lambda item: (-sum(item[1]), item[0])))
    return Series(slots, ordered)


def _measures(table: t.Any) -> list[t.Any]:
    return [sa.func.sum(table.c[_COLUMNS[model]]).label(model) for model in MODELS] + [
        sa.func.sum(table.c.touches).label("touches")
    ]


GroupingSet = tuple[str, ...]


def _grouped(
    tracker: UTMTracker,
    session: Session,
    sets: t.Sequence[GroupingSet],
    start: date | None,
    end: date | None,
    interval: str | None = None,
) -> dict[GroupingSet, list[t.Any]]:
    """The measures of every grouping set: ``()`` for the totals, ``(dimension,)``, or
    ``("channel", "bucket")``; a query each over the ``LeadDay`` rows of the range.
    """
    dialect = session.get_bind().dialect.name
    if interval is not None:
        _check("interval", interval, INTERVALS)
    table = _prepare(tracker, session, start, end)
    out: dict[GroupingSet, list[t.Any]] = {}
    for grouping in sets:
        where = _where(table, start, end, grouping[0] if grouping else "")
        columns: list[t.Any] = [table.c.key.label(name) for name in grouping[:1]]
        if "bucket" in grouping:
            _check("interval", str(interval), INTERVALS)
            columns.append(_bucket_expr(dialect, table.c.day, str(interval)).label("bucket"))
        query = sa.select(*columns, *_measures(table)).where(where)
        if columns:
            query = query.group_by(*columns)
        out[tuple(grouping)] = list(session.execute(query))
    return out


def _comparison(row: t.Any, key: str) -> Comparison:
    return Comparison(
        key or "",
        float(row.first or 0),
        float(row.last or 0),
        float(row.linear or 0),
        int(row.touches or 0),
    )


def _sorted(rows: t.Iterable[Comparison]) -> list[Comparison]:
    return sorted(rows, key=lambda c: (-c.first, -c.last, -c.linear, c.key))


def compare(
    tracker: UTMTracker,
    by: str = "channel",
    *,
    start: date | None = None,
    end: date | None = None,
    session: Session | None = None,
) -> list[Comparison]:
    """Every value of ``by`` under the three models (one query), ordered by first-touch leads
    (largest first), then last-touch leads.
    """
    _check("dimension", by, DIMENSIONS)
    rows = _grouped(tracker, _session(tracker, session), [(by,)], start, end)[(by,)]
    return _sorted(_comparison(row, getattr(row, by)) for row in rows)


def _unclaimed(tracker: UTMTracker, session: Session, start: date | None, end: date | None) -> int:
    touch = tracker.Touch
    query = sa.select(sa.func.count()).select_from(touch).where(touch.claimed_by.is_(None))
    lo, hi = bounds(start, end)
    if lo is not None:
        query = query.where(touch.received_at >= lo)
    if hi is not None:
        query = query.where(touch.received_at < hi)
    return int(session.scalar(query) or 0)


def _totals(rows: list[t.Any], unclaimed: int) -> Totals:
    row = rows[0] if rows else None
    leads = int(row.first or 0) if row is not None else 0
    touches = int(row.touches or 0) if row is not None and leads else 0
    return Totals(leads, touches, unclaimed)


def totals(
    tracker: UTMTracker,
    *,
    start: date | None = None,
    end: date | None = None,
    session: Session | None = None,
) -> Totals:
    """The number of leads, their touches, and the unclaimed anonymous touches of a period."""
    session = _session(tracker, session)
    rows = _grouped(tracker, session, [()], start, end)[()]
    return _totals(rows, _unclaimed(tracker, session, start, end))


@dataclass(frozen=True)
class Summary:
    """Everything a dashboard shows for one period, under every model at once."""

    totals: Totals
    #: Per dimension, every value under every model, by first-touch leads.
    by: dict[str, list[Comparison]]
    #: The buckets from the start to the end of the period (empty without an interval).
    buckets: list[date]
    #: Per (bucket, channel), the channel's numbers in that bucket.
    cells: dict[tuple[date, str], Comparison]

    def top(self, dimension: str, model: str = "first", limit: int = 10) -> list[Count]:
        """The ``limit`` values of ``dimension`` with the most leads under ``model``."""
        ranked = sorted(self.by[dimension], key=lambda c: (-c.of(model), c.key))
        rows = [c for c in ranked if c.of(model) > 0]
        return [Count(c.key, c.of(model)) for c in rows[:limit]]

    def series(self, model: str = "first") -> Series:
        """Leads by channel per bucket under ``model``, as :func:`series` gives them."""
        index = {b: i for i, b in enumerate(self.buckets)}
        values: dict[str, list[float]] = {}
        for (bucket, key), cell in self.cells.items():
            if bucket in index and cell.of(model):
                row = values.setdefault(key, [0.0] * len(self.buckets))
                row[index[bucket]] += cell.of(model)
        ordered = dict(sorted(values.items(), key=lambda item: (-sum(item[1]), item[0])))
        return Series(list(self.buckets), ordered)


def summary(
    tracker: UTMTracker,
    *,
    start: date | None = None,
    end: date | None = None,
    interval: str | None = None,
    dimensions: t.Sequence[str] = ("channel", "source", "campaign"),
    session: Session | None = None,
) -> Summary:
    """Totals, every value of ``dimensions`` and the channels per ``interval`` from ``start``
    to ``end``, under the three models.
    """
    for name in dimensions:
        _check("dimension", name, DIMENSIONS)
    if interval is not None and (start is None or end is None):
        raise ValueError("A summary with an interval needs both a start and an end.")
    session = _session(tracker, session)
    sets: list[GroupingSet] = [(), *((name,) for name in dimensions)]
    if interval is not None:
        sets.append(("channel", "bucket"))
    grouped = _grouped(tracker, session, sets, start, end, interval)
    by = {
        name: _sorted(_comparison(row, getattr(row, name)) for row in grouped[(name,)])
        for name in dimensions
    }
    cells: dict[tuple[date, str], Comparison] = {}
    slots: list[date] = []
    if interval is not None:
        slots = buckets(t.cast(date, start), t.cast(date, end), interval)
        for row in grouped[("channel", "bucket")]:
            # bucket_of: a no-op but for dialects grouped by day (see _bucket_expr).
            slot = (bucket_of(as_date(row.bucket), interval), row.channel or "")
            cell = _comparison(row, slot[1])
            if slot in cells:
                old = cells[slot]
                cell = Comparison(
                    slot[1],
                    old.first + cell.first,
                    old.last + cell.last,
                    old.linear + cell.linear,
                    old.touches + cell.touches,
                )
            cells[slot] = cell
    totals = _totals(grouped[()], _unclaimed(tracker, session, start, end))
    return Summary(totals, by, slots, cells)
