"""The dashboard at ``GET /utm/``, its data at ``GET /utm/report.json`` and the conversions report
at ``GET /utm/conversions.json``: denied unless the host grants them with
``@tracker.dashboard_permission``.

The dashboard's conversions section shows conversions, revenue, spend, ROAS and CPA under the
attribution model (``cmodel``, one of six) and dimension (``by``) chosen above it, for the
conversion name ``conversion`` (default: every conversion), over the page's date range, and a
chart of the revenue over time (in the range's main currency) credited to the dimension's values.

The chart is an SVG drawn on the server (:func:`chart`), not by a JavaScript charting library:
the page then needs no script at all (it works under a strict Content-Security-Policy, and
there is no second build to keep fresh beside the snippet's), every value reaches the browser
through Jinja's autoescaping only, and the host can restyle or replace it by overriding
``utm_tracker/_chart.html``. Native SVG ``<title>`` elements give the hover tooltips.

A denied request gets ``utm_tracker/403.html`` (a page with a link home, and one to the host's
Flask-Login ``login_view`` for a visitor who is not logged in); the JSON routes answer a JSON 403.
The user column names users with the host's ``@tracker.user_label`` callback (default: the
primary key). A bad filter answers 400 with the form as it was typed and the error beside it.

Templates (``utm_tracker/base.html``, ``dashboard.html``, ``403.html``, ``_chart.html``,
``_revenue_chart.html``, ``_plot.html``, ``_channel_rule.html``) are looked up in the host app's
template folder first, so a host overrides any of them by placing a file of the same name under
its own ``templates/utm_tracker/``.
"""

from __future__ import annotations

import functools
import math
import typing as t
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from importlib import metadata, resources
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    render_template,
    request,
    send_file,
    url_for,
)
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from werkzeug.routing import BuildError

from . import attribution, channels, conversion_reports, reports

if t.TYPE_CHECKING:
    from .extension import UTMTracker

#: Days shown when the request names no range (ending today, UTC).
DEFAULT_DAYS = 30
#: The quick ranges offered above the filters, in days.
QUICK_RANGES = (7, 30, 90, 365)
#: Most bars the chart draws; past that the interval grows (day -> week -> month).
MAX_BUCKETS = 120
#: Longest range the dashboard shows, in days (ten years: 120 months).
MAX_DAYS = 3653
#: Rows in the top-sources and top-campaigns tables, and in the latest-rows table.
TOP = 10
LATEST = 20
#: Colours of the channels (Okabe-Ito and Tableau hues, readable on white).
CHANNEL_COLOURS = {
    "Paid Search": "#1f77b4",
    "Organic Search": "#2ca02c",
    "Email": "#ff7f0e",
    "Organic Social": "#d62728",
    "Paid Social": "#9467bd",
    "Referral": "#8c564b",
    "Display": "#e377c2",
    "AI Assistants": "#17becf",
    "Affiliates": "#bcbd22",
    "Direct": "#7f7f7f",
    "Unassigned": "#c7c7c7",
}
FALLBACK_COLOURS = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2")


# -- the filters ---------------------------------------------------------------------------------


class FiltersSchema(Schema):
    """The dashboard's filters, from the query string."""

    start = fields.Date(metadata={"description": "First sign-up day; default: 30 days ago."})
    end = fields.Date(metadata={"description": "Last sign-up day; default: today."})
    model = fields.String(
        load_default="first",
        validate=validate.OneOf(list(reports.MODELS)),
        metadata={"description": "Attribution model."},
    )
    interval = fields.String(
        load_default="auto",
        validate=validate.OneOf(["auto", *reports.INTERVALS]),
        metadata={"description": "Time bucket of the series; auto picks one from the range."},
    )

    @validates_schema
    def _order(self, data: dict[str, t.Any], **kwargs: t.Any) -> None:
        start, end = data.get("start"), data.get("end")
        if start and end and start > end:
            raise ValidationError("The start must not be after the end.", "start")


@dataclass(frozen=True)
class Filters:
    start: date
    end: date
    model: str
    interval: str
    #: What the user asked for (``auto`` or an interval the range made too fine).
    asked_interval: str = "auto"


def auto_interval(start: date, end: date, asked: str = "auto") -> str:
    """``asked``, or the finest interval that keeps the chart within :data:`MAX_BUCKETS` bars."""
    order = list(reports.INTERVALS)
    first = 0 if asked == "auto" else order.index(asked)
    for interval in order[first:]:
        if len(reports.buckets(start, end, interval)) <= MAX_BUCKETS:
            return interval
    return order[-1]


def filters_from(args: t.Mapping[str, str], today: date | None = None) -> Filters:
    """Read the filters from a query string; empty values are ignored.

    :raises marshmallow.ValidationError: for a bad date, model or interval.
    """
    known = FiltersSchema().fields
    data = FiltersSchema().load({k: v for k, v in args.items() if k in known and v})
    today = today or datetime.now(timezone.utc).date()
    end = data.get("end") or max(today, data.get("start") or today)
    start = data.get("start") or end - timedelta(days=min(DEFAULT_DAYS - 1, end.toordinal() - 1))
    if end.year == date.max.year or (end - start).days >= MAX_DAYS:
        raise ValidationError(f"The range may span at most {MAX_DAYS} days, before 9999.", "end")
    asked = data["interval"]
    return Filters(start, end, data["model"], auto_interval(start, end, asked), asked)


# -- the chart -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    #: Left edge and width in percent of the plot's width; top and height in pixels.
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True)
class Tick:
    #: Pixels from the top (a y tick) or percent of the plot's width (an x tick).
    position: float
    label: str
    #: An x label hidden on narrow screens (every other one), so the rest stay readable.
    minor: bool = False


@dataclass
class Chart:
    """A stacked bar chart's geometry, ready for ``utm_tracker/_chart.html``.

    Vertical positions are pixels; horizontal ones are percentages of the plot's width, so the
    chart stretches to its container without scaling its text (axis labels keep their CSS size
    on a phone as on a desktop). The y axis is a separate strip ``axis_width`` pixels wide.
    """

    height: int
    top: int
    plot_height: float
    axis_width: int
    bars: list[Bar] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    legend: list[tuple[str, str, float]] = field(default_factory=list)
    total: float = 0.0

    @property
    def bottom(self) -> float:
        return self.top + self.plot_height


def colours(keys: t.Iterable[str]) -> dict[str, str]:
    """A colour per key: the channel's own, else the next fallback colour."""
    out: dict[str, str] = {}
    spare = 0
    for key in keys:
        if key in CHANNEL_COLOURS:
            out[key] = CHANNEL_COLOURS[key]
        else:
            out[key] = FALLBACK_COLOURS[spare % len(FALLBACK_COLOURS)]
            spare += 1
    return out


def nice_step(top: float, ticks: int = 4) -> float:
    """A round step (1, 2 or 5 times a power of ten, at least 1) for about ``ticks`` ticks."""
    raw = max(top / ticks, 1.0)
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return float(factor * power)
    return float(10 * power)  # pragma: no cover (the loop always returns)


def bucket_label(day: date, interval: str) -> str:
    if interval == "month":
        return day.strftime("%b %Y")
    return f"{day.strftime('%b')} {day.day}"


#: Most x labels drawn (every other one is hidden on a phone).
X_LABELS = 8


def chart(series: reports.Series, interval: str, height: int = 240) -> Chart:
    """Lay out ``series`` as stacked bars, the largest key at the bottom of each stack."""
    top, bottom = 12, 28
    result = Chart(height, top, height - top - bottom, axis_width=32)
    palette = colours(series.values)
    totals = series.totals
    result.total = sum(totals)
    result.legend = [(key, palette[key], sum(values)) for key, values in series.values.items()]
    n = len(series.buckets)
    if not n:
        return result
    step = nice_step(max(totals, default=0.0))
    y_max = max(step * math.ceil(max(totals, default=0.0) / step), step)
    scale = result.plot_height / y_max
    result.y_ticks = [
        Tick(result.bottom - value * scale, _number(value))
        for value in (step * i for i in range(int(round(y_max / step)) + 1))
    ]
    # About 7 px per character of a 12 px label, and room for the gap to the plot.
    result.axis_width = max(32, 7 * max(len(tick.label) for tick in result.y_ticks) + 10)
    band = 100.0 / n
    bar_width = min(band * 0.72, 8.0)  # a few wide buckets: bars, not walls
    label_every = max(1, math.ceil(n / X_LABELS))
    for i, bucket in enumerate(series.buckets):
        x = band * i + (band - bar_width) / 2
        if i % label_every == 0:
            minor = (i // label_every) % 2 == 1
            result.x_ticks.append(Tick(band * (i + 0.5), bucket_label(bucket, interval), minor))
        y = result.bottom
        for key, values in series.values.items():
            value = values[i]
            if value <= 0:
                continue
            h = value * scale
            y -= h
            title = f"{bucket_label(bucket, interval)}: {key or '(not set)'}, {_number(value)}"
            result.bars.append(Bar(x, y, bar_width, h, palette[key], title))
    return result


# -- the page ------------------------------------------------------------------------------------


def _number(value: float) -> str:
    """An integer as such, a fraction (linear attribution) with one decimal."""
    value = float(value)
    if value.is_integer():
        return f"{value:,.0f}"
    return f"{value:,.1f}" if abs(value) >= 0.05 else f"{value:.2f}"


def safe_href(url: str | None) -> str | None:
    """``url`` if it is an absolute http or https URL (worth a link), else ``None``."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url.strip()


@dataclass(frozen=True)
class Report:
    """Everything the dashboard and ``report.json`` show for one set of filters."""

    filters: Filters
    totals: reports.Totals
    series: reports.Series
    top_sources: list[reports.Count]
    top_campaigns: list[reports.Count]
    comparison: list[reports.Comparison]


def build_report(tracker: UTMTracker, filters: Filters) -> Report:
    """The dashboard's numbers (see :func:`reports.summary`)."""
    model = filters.model
    numbers = reports.summary(
        tracker, start=filters.start, end=filters.end, interval=filters.interval
    )
    return Report(
        filters=filters,
        totals=numbers.totals,
        series=numbers.series(model),
        top_sources=numbers.top("source", model, TOP),
        top_campaigns=numbers.top("campaign", model, TOP),
        comparison=numbers.by["channel"],
    )


def latest_rows(tracker: UTMTracker, filters: Filters) -> list[t.Any]:
    lead = tracker.LeadSource
    lo, hi = reports.bounds(filters.start, filters.end)
    query = (
        sa.select(lead)
        .where(lead.created_at >= lo, lead.created_at < hi)
        .order_by(lead.created_at.desc(), lead.id.desc())
        .limit(LATEST)
    )
    return list(tracker.db.session.scalars(query))


def user_labels(tracker: UTMTracker, ids: t.Iterable[t.Any]) -> dict[t.Any, str]:
    """How the dashboard names each user of ``ids``: the host's ``@tracker.user_label``
    callback called with the user, else (no callback, a deleted user, an empty label) the
    primary key.
    """
    labels = {user_id: str(user_id) for user_id in ids}
    callback = tracker.user_label_callback
    if callback is None or not labels:
        return labels
    mapper = sa.inspect(tracker.user_model)
    query = sa.select(tracker.user_model).where(mapper.primary_key[0].in_(list(labels)))
    for user in tracker.db.session.scalars(query):
        label = callback(user)
        if label:
            labels[mapper.primary_key_from_instance(user)[0]] = str(label)
    return labels


def click_id_note(row: t.Any) -> str | None:
    """Why ``row``'s channel is not the one its source and medium alone give, when a click ID
    decided it (GA4's rule: an auto-tagging click ID wins over ``utm_medium``); else ``None``.
    """
    click_ids = row.click_ids or {}
    if not click_ids:
        return None
    if channels.channel_for(row.source, row.medium, row.campaign) == row.channel:
        return None
    names = ", ".join(sorted(click_ids))
    return (
        f"{row.channel} because of the click ID ({names}): a click ID decides the channel over"
        f" utm_medium ({row.medium or '(not set)'}), as GA4's rule does."
    )


@functools.cache
def docs_url() -> str | None:
    """The documentation's base URL (ending in ``/``): the distribution's ``Documentation``
    project URL, or ``None`` when it has none.
    """
    try:
        urls = metadata.metadata("flask-utm-tracker").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:  # pragma: no cover (run from a bare checkout)
        return None
    for entry in urls:
        name, _, url = str(entry).partition(",")
        href = safe_href(url)
        if name.strip().lower() == "documentation" and href:
            return href.rstrip("/") + "/"
    return None


# -- JSON ----------------------------------------------------------------------------------------


class CountSchema(Schema):
    key = fields.String(metadata={"description": "The value (empty when not set)."})
    leads = fields.Float(metadata={"description": "Leads credited (a fraction under linear)."})


class ComparisonSchema(Schema):
    key = fields.String(metadata={"description": "The channel."})
    first = fields.Float()
    last = fields.Float()
    linear = fields.Float()
    touches = fields.Integer(metadata={"description": "The leads' touches in this channel."})


class TotalsSchema(Schema):
    leads = fields.Integer(metadata={"description": "Users who signed up, with a touch."})
    touches = fields.Integer(metadata={"description": "Their touches up to the sign-up."})
    touches_per_lead = fields.Float()
    unclaimed = fields.Integer(metadata={"description": "Anonymous touches not yet claimed."})


class SeriesSchema(Schema):
    buckets = fields.List(fields.Date(), metadata={"description": "First day of each bucket."})
    values = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.Float()),
        metadata={"description": "Per channel, the leads of each bucket."},
    )


class ReportSchema(Schema):
    """The dashboard's numbers (``GET /utm/report.json``)."""

    start = fields.Date(attribute="filters.start")
    end = fields.Date(attribute="filters.end")
    model = fields.String(attribute="filters.model")
    interval = fields.String(attribute="filters.interval")
    totals = fields.Nested(TotalsSchema)
    series = fields.Nested(SeriesSchema)
    top_sources = fields.List(fields.Nested(CountSchema))
    top_campaigns = fields.List(fields.Nested(CountSchema))
    comparison = fields.List(fields.Nested(ComparisonSchema))


# -- conversions ---------------------------------------------------------------------------------

#: Values of the chosen dimension drawn apart in the revenue chart; the rest is "Other".
CHART_KEYS = 6


class ConversionFiltersSchema(Schema):
    """The conversions section's filters, from the query string."""

    conversion = fields.String(
        validate=validate.Regexp(r"^[A-Za-z0-9_.:-]{1,64}$"),
        metadata={"description": "Conversion name; default: every conversion."},
    )
    cmodel = fields.String(
        load_default="last",
        validate=validate.OneOf(list(attribution.MODELS)),
        metadata={"description": "Attribution model of the conversions."},
    )
    by = fields.String(
        load_default="channel",
        validate=validate.OneOf(attribution.DIMENSIONS),
        metadata={"description": "Dimension the conversions are credited to."},
    )


class ConversionsQuerySchema(Schema):
    """The query of ``GET /utm/conversions.json`` (the arguments of ``tracker.attribute``)."""

    name = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_.:-]{1,64}$"))
    model = fields.String(load_default="last", validate=validate.OneOf(list(attribution.MODELS)))
    by = fields.String(load_default="channel", validate=validate.OneOf(attribution.DIMENSIONS))
    start = fields.Date()
    end = fields.Date()

    @validates_schema
    def _order(self, data: dict[str, t.Any], **kwargs: t.Any) -> None:
        start, end = data.get("start"), data.get("end")
        if start and end and start > end:
            raise ValidationError("The start must not be after the end.", "start")


class ConversionRowSchema(Schema):
    key = fields.String(metadata={"description": "The value of the dimension, or (direct)."})
    conversions = fields.Float(metadata={"description": "Conversions credited."})
    revenue = fields.Dict(keys=fields.String(), values=fields.Float())
    spend = fields.Dict(keys=fields.String(), values=fields.Float())
    roas = fields.Float(allow_none=True)
    cpa = fields.Float(allow_none=True)


class ConversionsSchema(Schema):
    """``GET /utm/conversions.json``: ``rows`` is what ``tracker.attribute`` returns."""

    name = fields.String(allow_none=True)
    model = fields.String(metadata={"description": "The model asked for."})
    used = fields.String(metadata={"description": "The model used (data_driven may fall back)."})
    by = fields.String()
    start = fields.Date(allow_none=True)
    end = fields.Date(allow_none=True)
    notes = fields.List(fields.String())
    rows = fields.List(fields.Nested(ConversionRowSchema))


@dataclass(frozen=True)
class ConversionFilters:
    name: str | None
    model: str
    by: str


@dataclass
class ConversionReport:
    """The conversions section: the rows, their totals, and the revenue series."""

    filters: ConversionFilters
    result: conversion_reports.Report
    names: list[str]
    conversions: float
    revenue: dict[str, float]
    spend: dict[str, float]
    roas: float | None
    currency: str | None
    series: reports.Series


def conversion_filters_from(args: t.Mapping[str, str]) -> ConversionFilters:
    """:raises marshmallow.ValidationError: for a bad name, model or dimension."""
    known = ConversionFiltersSchema().fields
    data = ConversionFiltersSchema().load({k: v for k, v in args.items() if k in known and v})
    return ConversionFilters(data.get("conversion"), data["cmodel"], data["by"])


def _sum(rows: t.Iterable[dict[str, t.Any]], field_name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in rows:
        for currency, value in row[field_name].items():
            out[currency] = out.get(currency, 0.0) + value
    return out


def build_conversions(
    tracker: UTMTracker, filters: Filters, chosen: ConversionFilters
) -> ConversionReport:
    """The conversions section's numbers (see :func:`conversion_reports.report`)."""
    from .conversions import tables

    result = conversion_reports.report(
        tracker,
        name=chosen.name,
        model=chosen.model,
        by=chosen.by,
        start=filters.start,
        end=filters.end,
    )
    revenue = _sum(result.rows, "revenue")
    spend = _sum(result.rows, "spend")
    currency = max(revenue, key=lambda c: revenue[c]) if revenue else None
    roas = None
    if len(spend) == 1 and set(revenue) <= set(spend) and next(iter(spend.values())) > 0:
        ((code, cost),) = spend.items()
        roas = revenue.get(code, 0.0) / cost
    day = tables(tracker).day
    names = list(tracker.db.session.scalars(sa.select(day.c.name).distinct().order_by(day.c.name)))
    buckets = reports.buckets(filters.start, filters.end, filters.interval)
    per_key: dict[str, list[float]] = {}
    if currency is not None:
        # data_driven credits no single day: its revenue chart shows the fallback's split.
        model = chosen.model if chosen.model in attribution.POSITIONAL else attribution.FALLBACK
        where = [
            day.c.dimension == chosen.by,
            day.c.currency == currency,
            day.c.day >= filters.start,
            day.c.day <= filters.end,
        ]
        if chosen.name is not None:
            where.append(day.c.name == chosen.name)
        query = (
            sa.select(day.c.day, day.c.key, sa.func.sum(day.c["revenue_" + model]))
            .where(*where)
            .group_by(day.c.day, day.c.key)
        )
        index = {bucket: i for i, bucket in enumerate(buckets)}
        for when, key, amount in tracker.db.session.execute(query):
            amounts = per_key.setdefault(key, [0.0] * len(buckets))
            bucket = reports.bucket_of(reports.as_date(when), filters.interval)
            amounts[index[bucket]] += float(amount or 0)
    ordered = sorted(per_key, key=lambda k: (-sum(per_key[k]), k))
    values = {key: per_key[key] for key in ordered[:CHART_KEYS]}
    rest = ordered[CHART_KEYS:]
    if rest:
        values["Other"] = [sum(per_key[k][i] for k in rest) for i in range(len(buckets))]
    series = reports.Series(buckets, {k: [max(v, 0.0) for v in vs] for k, vs in values.items()})
    return ConversionReport(
        filters=chosen,
        result=result,
        names=names,
        conversions=sum(row["conversions"] for row in result.rows),
        revenue=revenue,
        spend=spend,
        roas=roas,
        currency=currency,
        series=series,
    )


def money(amounts: t.Mapping[str, float]) -> str:
    """``{"EUR": 1234.5}`` as ``1,234.50 EUR``; several currencies joined by `` · ``."""
    if not amounts:
        return "–"
    return " · ".join(f"{value:,.2f} {code}" for code, value in sorted(amounts.items()))


# -- routes --------------------------------------------------------------------------------------


def _messages(err: ValidationError) -> dict[str, t.Any]:
    """The error's messages by field (a field-level error raised outside a schema included)."""
    messages = err.messages
    if isinstance(messages, dict):
        return messages
    return {err.field_name: messages}


def _allowed(tracker: UTMTracker) -> bool:
    check = tracker.dashboard_permission_callback
    return check is not None and bool(check())


def _json_error(status: int, message: str, details: t.Any = None) -> Response:
    from .views import error_response

    return _private(error_response(status, message, details))


def _private(response: Response) -> Response:
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["X-Robots-Tag"] = "noindex"
    return response


def _forbidden() -> Response:
    """The dashboard's 403 page (``utm_tracker/403.html``): what happened and a way back."""
    login = None
    manager = getattr(current_app, "login_manager", None)
    view = getattr(manager, "login_view", None)
    if view and not _logged_in():
        try:
            login = url_for(view, next=request.full_path.rstrip("?"))
        except BuildError:  # a host's login_view that needs arguments: no link
            login = None
    html = render_template("utm_tracker/403.html", home=request.script_root + "/", login=login)
    return _private(Response(html, status=403, mimetype="text/html"))


def _logged_in() -> bool:
    from flask_login import current_user

    return bool(getattr(current_user, "is_authenticated", False))


#: The dashboard's form fields, in the order they appear.
FORM_FIELDS = ("start", "end", "model", "interval", "conversion", "cmodel", "by")


def form_values(
    args: t.Mapping[str, str], filters: Filters, chosen: ConversionFilters, errors: bool
) -> dict[str, str]:
    """What the forms show: the filters in use, or, after a bad filter, what was typed (so
    the user corrects it rather than typing it again)."""
    values = {
        "start": filters.start.isoformat(),
        "end": filters.end.isoformat(),
        "model": filters.model,
        "interval": filters.asked_interval,
        "conversion": chosen.name or "",
        "cmodel": chosen.model,
        "by": chosen.by,
    }
    if errors:
        values.update({k: args[k][:200] for k in FORM_FIELDS if k in args})
    return values


def register(bp: Blueprint, tracker: UTMTracker) -> None:
    """Add the dashboard routes to the extension's blueprint."""

    @bp.route("/")
    def dashboard() -> Response:
        if not _allowed(tracker):
            return _forbidden()
        errors: dict[str, t.Any] = {}
        try:
            filters = filters_from(request.args)
        except ValidationError as err:
            errors = _messages(err)
            filters = filters_from({})
        report = build_report(tracker, filters)
        try:
            chosen = conversion_filters_from(request.args)
        except ValidationError as err:
            errors.update(_messages(err))
            chosen = conversion_filters_from({})
        converted = build_conversions(tracker, filters, chosen)
        rows = latest_rows(tracker, filters)
        today = datetime.now(timezone.utc).date()
        html = render_template(
            "utm_tracker/dashboard.html",
            report=report,
            filters=filters,
            form=form_values(request.args, filters, chosen, bool(errors)),
            errors=errors,
            chart=chart(report.series, filters.interval),
            converted=converted,
            revenue_chart=chart(converted.series, filters.interval),
            conversion_models=attribution.MODELS,
            dimensions=attribution.DIMENSIONS,
            money=money,
            rows=rows,
            user_labels=user_labels(tracker, {row.user_id for row in rows}),
            click_id_note=click_id_note,
            docs_url=docs_url(),
            models=reports.MODELS,
            intervals=reports.INTERVALS,
            quick_ranges=[
                (days, (today - timedelta(days=days - 1)).isoformat(), today.isoformat())
                for days in QUICK_RANGES
            ],
            number=_number,
            safe_href=safe_href,
        )
        response = Response(html, mimetype="text/html")
        if errors:
            response.status_code = 400
        return _private(response)

    @bp.route("/report.json")
    def report_json() -> Response:
        if not _allowed(tracker):
            return _json_error(403, "The dashboard permission check denied this request.")
        try:
            filters = filters_from(request.args)
        except ValidationError as err:
            return _json_error(400, "The filters are invalid.", _messages(err))
        return _private(jsonify(ReportSchema().dump(build_report(tracker, filters))))

    @bp.route("/conversions.json")
    def conversions_json() -> Response:
        if not _allowed(tracker):
            return _json_error(403, "The dashboard permission check denied this request.")
        known = ConversionsQuerySchema().fields
        try:
            query = ConversionsQuerySchema().load(
                {k: v for k, v in request.args.items() if k in known and v}
            )
        except ValidationError as err:
            return _json_error(400, "The query is invalid.", _messages(err))
        result = conversion_reports.report(tracker, **query)
        body = {
            "name": query.get("name"),
            "model": result.model,
            "used": result.used,
            "by": query["by"],
            "start": query.get("start"),
            "end": query.get("end"),
            "notes": result.notes,
            "rows": result.rows,
        }
        return _private(jsonify(ConversionsSchema().dump(body)))

    @bp.route("/dashboard.css")
    def dashboard_css() -> Response:
        path = resources.files("flask_utm_tracker").joinpath("static/dashboard.css")
        return send_file(str(path), mimetype="text/css", max_age=3600, conditional=True)
