"""Conversions sent back to ad platforms: offline-conversion files and a delivery outbox.

``Delivery`` is the outbox: one row per conversion and destination (a unique constraint), so
that each conversion is delivered once to each destination. ``flask utm destinations push``

1. adds a ``pending`` row for every conversion of a mapped name that has none yet
   (``INSERT ... SELECT ... ON CONFLICT DO NOTHING``);
2. claims due rows in batches with one ``UPDATE`` that sets ``status='sending'``, a lease token
   and a lease end (on PostgreSQL its row choice is ``FOR UPDATE SKIP LOCKED``; SQLite runs
   one writer at a time), so two pushes at once never claim the same row;
3. sends each batch without holding a transaction, and records the answer under the lease
   token: ``sent``; ``pending`` again with exponential backoff after a 429, a 5xx or a network
   error; ``failed`` with the platform's message after another 4xx (or too many attempts).
   Conversions too old for the platform become ``expired``, those it cannot match or whose
   user has not consented ``skipped``; none of these is sent.

A push that dies mid-request leaves its rows ``sending`` until the lease ends; a later push then
sends them again with the same event id, which every platform here deduplicates.

The destinations are ``UTM_TRACKER_DESTINATIONS`` (read when a command runs)::

    UTM_TRACKER_DESTINATIONS = {
        "meta": {
            "platform": "meta",
            "pixel_id": "1234567890",
            "access_token": "...",
            "events": {"purchase": "Purchase", "sign_up": "CompleteRegistration"},
            "send_user_data": True,     # hashed email/phone from @tracker.user_data
        },
    }

Common keys: ``platform`` (``meta``, ``google-ads``, ``tiktok``, ``linkedin``), ``events``
(conversion name -> the platform's event name, conversion action id or conversion rule id),
``api_url`` (default the platform's), ``send_user_data`` (default ``False``), ``batch_size``
(events per request, at most the platform's limit), ``require_consent`` (send only conversions
whose user's ``@tracker.user_data`` mapping has ``"ad_consent": True``; a mapping with
``"ad_consent": False`` is never sent anywhere) and ``window_days`` (how far before a
conversion its touches count; default ``UTM_TRACKER_LOOKBACK_DAYS``, 90).
"""

from __future__ import annotations

import json
import logging
import sys
import typing as t
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
import sqlalchemy as sa

from .models import utcnow
from .platforms import PLATFORMS, ConfigurationError, Event, Platform
from .platforms.base import Outcome, Request, post, utc
from .platforms.files import LAYOUTS
from .platforms.files import write as write_file
from .platforms.path import paths

if t.TYPE_CHECKING:
    from flask.cli import AppGroup
    from flask_sqlalchemy import SQLAlchemy

logger = logging.getLogger("flask_utm_tracker")

CONFIG_KEY = "UTM_TRACKER_DESTINATIONS"
#: Every status of a ``Delivery`` row.
STATUSES = ("pending", "sending", "sent", "failed", "expired", "skipped")
#: How long a push owns the rows it claimed.
LEASE = timedelta(minutes=10)
#: The first retry waits this long; each further one twice as long, up to ``MAX_BACKOFF``.
BACKOFF = timedelta(minutes=1)
MAX_BACKOFF = timedelta(hours=12)
#: Attempts after which a retried delivery is recorded as failed.
MAX_ATTEMPTS = 10
#: Most characters kept of an error message.
ERROR = 1000
#: Default of ``window_days``.
LOOKBACK_DAYS = 90


def make_models(db: SQLAlchemy, conversion: type[t.Any], table_prefix: str) -> type[t.Any]:
    """Build the ``Delivery`` outbox model on ``db.Model``, referencing ``conversion``."""
    name = f"{table_prefix}delivery"
    target = f"{conversion.__table__.fullname}.id"
    return type(
        "Delivery",
        (db.Model,),
        {
            "__tablename__": name,
            "__doc__": "One conversion's delivery to one destination (the outbox).",
            "id": sa.Column(sa.Integer, primary_key=True),
            "conversion_id": sa.Column(
                sa.Integer, sa.ForeignKey(target, ondelete="CASCADE"), nullable=False
            ),
            "destination": sa.Column(sa.String(64), nullable=False),
            #: ``pending``, ``sending``, ``sent``, ``failed``, ``expired`` or ``skipped``.
            "status": sa.Column(sa.String(16), nullable=False, default="pending"),
            "attempts": sa.Column(sa.Integer, nullable=False, default=0),
            "next_attempt_at": sa.Column(sa.DateTime(timezone=True), nullable=True),
            #: The push that owns a ``sending`` row, and until when.
            "lease_token": sa.Column(sa.String(32), nullable=True),
            "lease_until": sa.Column(sa.DateTime(timezone=True), nullable=True),
            "last_error": sa.Column(sa.Text, nullable=True),
            "sent_at": sa.Column(sa.DateTime(timezone=True), nullable=True),
            #: The value and currency sent, to notice a restatement (a refund) made later.
            "sent_value": sa.Column(sa.Numeric(18, 4), nullable=True),
            "sent_currency": sa.Column(sa.String(3), nullable=True),
            "created_at": sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow),
            "updated_at": sa.Column(sa.DateTime(timezone=True), nullable=True),
            "__table_args__": (
                sa.UniqueConstraint("conversion_id", "destination", name=f"uq_{name}_once"),
                sa.Index(f"ix_{name}_status", "destination", "status"),
            ),
        },
    )


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    """One entry of ``UTM_TRACKER_DESTINATIONS``."""

    name: str
    platform: Platform
    events: t.Mapping[str, str]
    send_user_data: bool
    require_consent: bool
    window: timedelta
    #: Events per request: ``batch_size``, at most (and by default) the platform's limit.
    batch: int


def configured(config: t.Mapping[str, t.Any]) -> list[Destination]:
    """The destinations of ``config[UTM_TRACKER_DESTINATIONS]`` (default ``{}``).

    :raises ConfigurationError: naming the destination and the key to fix.
    """
    raw = config.get(CONFIG_KEY) or {}
    if not isinstance(raw, t.Mapping):
        raise ConfigurationError(f"{CONFIG_KEY} must be a dict of destinations, not {raw!r}.")
    lookback = config.get("UTM_TRACKER_LOOKBACK_DAYS", LOOKBACK_DAYS)
    found = []
    for name, entry in raw.items():
        where = f"Destination {name!r} in {CONFIG_KEY}"
        if not isinstance(name, str) or not 1 <= len(name) <= 64:
            raise ConfigurationError(f"{where}: a destination's name is 1 to 64 characters.")
        if not isinstance(entry, t.Mapping):
            raise ConfigurationError(f"{where} must be a dict, not {entry!r}.")
        kind = entry.get("platform")
        if kind not in PLATFORMS:
            choices = ", ".join(repr(p) for p in PLATFORMS)
            raise ConfigurationError(f"{where} has platform {kind!r}; use one of {choices}.")
        events = entry.get("events")
        if (
            not isinstance(events, t.Mapping)
            or not events
            or not all(
                isinstance(k, str) and v and isinstance(v, (str, int)) for k, v in events.items()
            )
        ):
            raise ConfigurationError(
                f"{where} needs 'events': a dict of conversion name -> the platform's event"
                ' name or id, such as {"purchase": "Purchase"}.'
            )
        window = entry.get("window_days", lookback)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigurationError(f"{where}: 'window_days' must be a whole number of days.")
        platform = PLATFORMS[kind](name, entry)
        batch = entry.get("batch_size", platform.max_batch)
        if (
            isinstance(batch, bool)
            or not isinstance(batch, int)
            or not 1 <= batch <= platform.max_batch
        ):
            raise ConfigurationError(
                f"{where}: 'batch_size' must be 1 to {platform.max_batch}"
                f" ({platform.title}'s limit)."
            )
        found.append(
            Destination(
                name=name,
                platform=platform,
                events={k: str(v) for k, v in events.items()},
                send_user_data=bool(entry.get("send_user_data", False)),
                require_consent=bool(entry.get("require_consent", False)),
                window=timedelta(days=window),
                batch=batch,
            )
        )
    return found


# -- the outbox ------------------------------------------------------------------------------


@dataclass
class Counts:
    """What one push did for one destination."""

    sent: int = 0
    retry: int = 0
    failed: int = 0
    expired: int = 0
    skipped: int = 0
    requests: int = 0

    def __str__(self) -> str:
        return (
            f"{self.sent} sent, {self.retry} to retry, {self.failed} failed,"
            f" {self.expired} expired, {self.skipped} skipped ({self.requests} requests)"
        )


@dataclass(frozen=True)
class Prepared:
    """A claimed or previewed conversion: its event, or why it is not sent."""

    delivery_id: int | None
    attempts: int
    conversion_id: int
    value: Decimal | None
    currency: str | None
    payload: dict[str, t.Any] | None = None
    status: str | None = None  # "expired", "skipped", or "retry" (the callback failed)
    reason: str = ""


def backoff(attempts: int, retry_after: float | None = None) -> timedelta:
    """The wait after the ``attempts``-th failed try: 1, 2, 4, ... minutes, at most 12 hours,
    and at least the platform's ``Retry-After``.
    """
    wait: timedelta = min(BACKOFF * 2 ** max(0, attempts - 1), MAX_BACKOFF)
    if retry_after is not None:
        wait = max(wait, timedelta(seconds=min(retry_after, MAX_BACKOFF.total_seconds())))
    return wait


class Outbox:
    """The outbox of one tracker on the current app."""

    def __init__(self, tracker: t.Any, config: t.Mapping[str, t.Any]) -> None:
        self.tracker = tracker
        self.config = config
        self.delivery = tracker.Delivery.__table__
        self.conversion = tracker.Conversion.__table__
        self.engine: sa.Engine = tracker.db.engine
        self.currency = str(config.get("UTM_TRACKER_CURRENCY") or "USD")

    # -- writing rows ---------------------------------------------------------------------

    def enqueue(self, destination: Destination) -> int:
        """Add a ``pending`` row for each conversion of a mapped name that has none yet."""
        d, c = self.delivery, self.conversion
        now = utcnow()
        missing = sa.select(
            c.c.id,
            sa.literal(destination.name),
            sa.literal("pending"),
            sa.literal(0),
            sa.literal(now, d.c.created_at.type),
        ).where(
            c.c.name.in_(list(destination.events)),
            ~sa.exists().where(d.c.conversion_id == c.c.id, d.c.destination == destination.name),
        )
        insert = _insert(self.engine)(d).from_select(
            ["conversion_id", "destination", "status", "attempts", "created_at"], missing
        )
        with self.engine.begin() as conn:
            return conn.execute(insert.on_conflict_do_nothing()).rowcount or 0

    def _due(self, destination: Destination, now: datetime, retry_now: bool) -> t.Any:
        d = self.delivery
        pending = d.c.status == "pending"
        if not retry_now:
            pending = sa.and_(
                pending, sa.or_(d.c.next_attempt_at.is_(None), d.c.next_attempt_at <= now)
            )
        abandoned = sa.and_(d.c.status == "sending", d.c.lease_until < now)
        return sa.and_(d.c.destination == destination.name, sa.or_(pending, abandoned))

    def claim(
        self, destination: Destination, token: str, after: int, limit: int, retry_now: bool
    ) -> list[t.Any]:
        """Claim up to ``limit`` due rows with ids above ``after`` for the push ``token``."""
        d = self.delivery
        now = utcnow()
        due = sa.and_(self._due(destination, now, retry_now), d.c.id > after)
        choice = sa.select(d.c.id).where(due).order_by(d.c.id).limit(limit)
        if self.engine.dialect.name == "postgresql":
            # A materialised CTE: PostgreSQL may run an IN (subquery) more than once in an
            # UPDATE, and each run of a SKIP LOCKED query can pick other rows (past the LIMIT).
            chosen = (
                choice.with_for_update(skip_locked=True)
                .cte("claimable")
                .prefix_with("MATERIALIZED")
            )
            rows = sa.update(d).where(d.c.id == chosen.c.id, due)
        else:  # SQLite: one writer at a time, and the subquery runs once
            rows = sa.update(d).where(d.c.id.in_(choice.scalar_subquery()), due)
        claim = rows.values(
            status="sending",
            lease_token=token,
            lease_until=now + LEASE,
            attempts=d.c.attempts + 1,
            updated_at=now,
        )
        with self.engine.begin() as conn:
            conn.execute(claim)
            return list(
                conn.execute(
                    sa.select(d.c.id, d.c.attempts, d.c.conversion_id)
                    .where(d.c.lease_token == token, d.c.status == "sending", d.c.id > after)
                    .order_by(d.c.id)
                )
            )

    def record(self, token: str, results: list[tuple[Prepared, Outcome | None]]) -> Counts:
        """Record what happened to claimed rows (an ``Outcome``, or a ``Prepared.status``)."""
        counts = Counts()
        now = utcnow()
        rows: list[dict[str, t.Any]] = []
        for prepared, outcome in results:
            values: dict[str, t.Any] = {
                "rid": prepared.delivery_id,
                "status": None,
                "next_attempt_at": None,
                "last_error": None,
                "sent_at": None,
                "sent_value": None,
                "sent_currency": None,
            }
            retry_after = None
            if outcome is not None and outcome.ok:
                values.update(
                    status="sent",
                    sent_at=now,
                    sent_value=prepared.value,
                    sent_currency=prepared.currency,
                )
                counts.sent += 1
            elif outcome is not None or prepared.status == "retry":
                message = outcome.message if outcome is not None else prepared.reason
                retry = outcome.retry if outcome is not None else True
                retry_after = outcome.retry_after if outcome is not None else None
                if retry and prepared.attempts < MAX_ATTEMPTS:
                    values.update(
                        status="pending",
                        next_attempt_at=now + backoff(prepared.attempts, retry_after),
                        last_error=message[:ERROR],
                    )
                    counts.retry += 1
                else:
                    if retry:
                        message = f"{message} (gave up after {prepared.attempts} attempts)"
                    values.update(status="failed", last_error=message[:ERROR])
                    counts.failed += 1
            else:
                values.update(status=prepared.status, last_error=prepared.reason[:ERROR])
                if prepared.status == "expired":
                    counts.expired += 1
                else:
                    counts.skipped += 1
            rows.append(values)
        if not rows:
            return counts
        d = self.delivery
        statement = (
            sa.update(d)
            .where(d.c.id == sa.bindparam("rid"), d.c.lease_token == token)
            .values(
                status=sa.bindparam("status"),
                next_attempt_at=sa.bindparam("next_attempt_at"),
                last_error=sa.bindparam("last_error"),
                sent_at=sa.bindparam("sent_at"),
                sent_value=sa.bindparam("sent_value"),
                sent_currency=sa.bindparam("sent_currency"),
                lease_token=None,
                lease_until=None,
                updated_at=now,
            )
        )
        with self.engine.begin() as conn:
            conn.execute(statement, rows)
        return counts

    # -- building events ------------------------------------------------------------------

    def prepare(
        self, destination: Destination, claimed: t.Sequence[tuple[int | None, int, int]]
    ) -> list[Prepared]:
        """The events of ``claimed`` ``(delivery id, attempts, conversion id)`` rows."""
        c = self.conversion
        ids = [conversion_id for _, _, conversion_id in claimed]
        with self.engine.connect() as conn:
            rows = {
                row.id: row
                for row in conn.execute(
                    sa.select(
                        c.c.id,
                        c.c.user_id,
                        c.c.name,
                        c.c.value,
                        c.c.currency,
                        c.c.order_id,
                        c.c.occurred_at,
                    ).where(c.c.id.in_(ids))
                )
            }
            found = paths(
                conn,
                self.tracker.LeadSource,
                [(row.id, row.user_id, row.occurred_at) for row in rows.values()],
                destination.window,
            )
        platform = destination.platform
        now = utcnow()
        users: dict[t.Any, t.Mapping[str, t.Any] | Exception] = {}
        prepared = []
        for delivery_id, attempts, conversion_id in claimed:
            row = rows.get(conversion_id)
            if row is None:  # deleted since the claim: its delivery row went with it
                continue
            currency = row.currency or (self.currency if row.value is not None else None)
            base = Prepared(delivery_id, attempts, row.id, row.value, currency)
            occurred = utc(row.occurred_at)
            if platform.max_age is not None and occurred < now - platform.max_age:
                days = platform.max_age.days
                reason = f"older than the {days} days {platform.title} accepts"
                prepared.append(_with(base, status="expired", reason=reason))
                continue
            data = users.get(row.user_id)
            if data is None:
                data = users[row.user_id] = self._user_data(row.user_id)
            if isinstance(data, Exception):
                reason = f"the @tracker.user_data callback raised {data!r}"
                prepared.append(_with(base, status="retry", reason=reason))
                continue
            consent = data.get("ad_consent")
            if consent is False or (destination.require_consent and consent is not True):
                reason = "the user has not consented to ad measurement (ad_consent)"
                prepared.append(_with(base, status="skipped", reason=reason))
                continue
            path = found[row.id]
            event = Event(
                conversion_id=row.id,
                name=row.name,
                platform_event=destination.events[row.name],
                event_id=row.order_id or f"utm-conversion-{row.id}",
                occurred_at=occurred,
                value=row.value,
                currency=currency,
                clicks=path.clicks(),
                landing_url=path.landing_url,
                user_data=data if destination.send_user_data else {},
                consent=consent if isinstance(consent, bool) else None,
            )
            payload = platform.event(event)
            if isinstance(payload, str):
                prepared.append(_with(base, status="skipped", reason=payload))
            else:
                prepared.append(_with(base, payload=payload))
        return prepared

    def _user_data(self, user_id: t.Any) -> t.Mapping[str, t.Any] | Exception:
        callback = self.tracker.user_data_callback
        if callback is None:
            return {}
        try:
            user = self.tracker.db.session.get(self.tracker.user_model, user_id)
            data = callback(user) if user is not None else {}
        except Exception as err:  # the host's code: recorded, retried later
            logger.exception("The @tracker.user_data callback failed for user %s.", user_id)
            return err
        return data if isinstance(data, t.Mapping) else {}

    # -- pushing --------------------------------------------------------------------------

    def push(self, destination: Destination, *, retry_now: bool = False) -> Counts:
        """Send every due conversion to ``destination``; see the module's docstring."""
        self.enqueue(destination)
        token = uuid.uuid4().hex
        total = Counts()
        after = 0
        platform = destination.platform
        while True:
            claimed = self.claim(destination, token, after, destination.batch, retry_now)
            if not claimed:
                return total
            after = claimed[-1].id
            prepared = self.prepare(
                destination, [(r.id, r.attempts, r.conversion_id) for r in claimed]
            )
            results: list[tuple[Prepared, Outcome | None]] = [
                (p, None) for p in prepared if p.payload is None
            ]
            sending = [p for p in prepared if p.payload is not None]
            if sending:
                total.requests += 1
                outcomes = _send(platform, [t.cast(dict[str, t.Any], p.payload) for p in sending])
                results += list(zip(sending, outcomes, strict=True))
            counts = self.record(token, results)
            for name in ("sent", "retry", "failed", "expired", "skipped"):
                setattr(total, name, getattr(total, name) + getattr(counts, name))

    def preview(self, destination: Destination, *, retry_now: bool = False) -> list[Prepared]:
        """What a push would do now, without writing anything."""
        d, c = self.delivery, self.conversion
        now = utcnow()
        new = sa.select(sa.null(), sa.literal(0), c.c.id).where(
            c.c.name.in_(list(destination.events)),
            ~sa.exists().where(d.c.conversion_id == c.c.id, d.c.destination == destination.name),
        )
        due = sa.select(d.c.id, d.c.attempts + 1, d.c.conversion_id).where(
            self._due(destination, now, retry_now)
        )
        with self.engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(new)] + [tuple(r) for r in conn.execute(due)]
        prepared = []
        for start in range(0, len(rows), 1000):
            prepared += self.prepare(destination, rows[start : start + 1000])
        return prepared


def _with(base: Prepared, **changes: t.Any) -> Prepared:
    from dataclasses import replace

    return replace(base, **changes)


def _send(platform: Platform, payloads: list[dict[str, t.Any]]) -> list[Outcome]:
    try:
        request = platform.request(payloads)
        response = post(request)
    except OSError as err:
        return [Outcome(False, retry=True, message=f"network error: {err}")] * len(payloads)
    except ConfigurationError as err:
        return [Outcome(False, retry=True, message=str(err))] * len(payloads)
    return platform.outcomes(response, len(payloads))


def _insert(engine: sa.Engine) -> t.Any:
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    if engine.dialect.name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert
    raise RuntimeError(  # pragma: no cover - the two databases the project supports
        f"The delivery outbox supports SQLite and PostgreSQL, not {engine.dialect.name}."
    )


def requests_of(destination: Destination, prepared: list[Prepared]) -> list[Request]:
    """The requests a push would make for ``prepared``."""
    payloads = [p.payload for p in prepared if p.payload is not None]
    size = destination.batch
    return [
        destination.platform.request(payloads[i : i + size]) for i in range(0, len(payloads), size)
    ]


# -- status ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """The outbox of one destination."""

    destination: str
    title: str
    counts: t.Mapping[str, int]
    restated: int
    restatement: str
    waiting: int
    next_retry: datetime | None
    errors: list[tuple[datetime | None, int, str, int, str]]


def status(tracker: t.Any, config: t.Mapping[str, t.Any], errors: int = 5) -> list[Status]:
    """Counts per status, restatements and the last errors of every destination (configured
    or with rows).
    """
    d, c = tracker.Delivery.__table__, tracker.Conversion.__table__
    platforms = {dest.name: dest.platform for dest in configured(config)}
    now = utcnow()
    found = []
    with tracker.db.engine.connect() as conn:
        names = set(conn.scalars(sa.select(d.c.destination).distinct())) | set(platforms)
        for name in sorted(names):
            counts = dict.fromkeys(STATUSES, 0)
            for value, count in conn.execute(
                sa.select(d.c.status, sa.func.count())
                .where(d.c.destination == name)
                .group_by(d.c.status)
            ):
                counts[value] = count
            restated = conn.scalar(
                sa.select(sa.func.count())
                .select_from(d.join(c, c.c.id == d.c.conversion_id))
                .where(
                    d.c.destination == name,
                    d.c.status == "sent",
                    sa.or_(
                        c.c.value.is_distinct_from(d.c.sent_value),
                        sa.and_(
                            c.c.currency.is_not(None),
                            c.c.currency.is_distinct_from(d.c.sent_currency),
                        ),
                    ),
                )
            )
            waiting = conn.execute(
                sa.select(sa.func.count(), sa.func.min(d.c.next_attempt_at)).where(
                    d.c.destination == name, d.c.status == "pending", d.c.next_attempt_at > now
                )
            ).one()
            last = conn.execute(
                sa.select(
                    d.c.updated_at, d.c.conversion_id, d.c.status, d.c.attempts, d.c.last_error
                )
                .where(d.c.destination == name, d.c.last_error.is_not(None))
                .order_by(d.c.updated_at.desc(), d.c.id.desc())
                .limit(errors)
            ).all()
            platform = platforms.get(name)
            found.append(
                Status(
                    destination=name,
                    title=platform.title if platform else "not configured any more",
                    counts=counts,
                    restated=restated or 0,
                    restatement=platform.restatement if platform else "",
                    waiting=waiting[0],
                    next_retry=waiting[1],
                    errors=[tuple(row) for row in last],
                )
            )
    return found


# -- the CLI ---------------------------------------------------------------------------------


def _config() -> t.Mapping[str, t.Any]:
    from flask import current_app

    return current_app.config


def _destinations(only: tuple[str, ...] = ()) -> list[Destination]:
    try:
        found = configured(_config())
    except ConfigurationError as err:
        raise click.UsageError(str(err)) from None
    if only:
        unknown = set(only) - {d.name for d in found}
        if unknown:
            names = ", ".join(sorted(d.name for d in found)) or "none"
            raise click.BadParameter(
                f"{', '.join(sorted(unknown))} is not in {CONFIG_KEY} (configured: {names}).",
                param_hint="--destination",
            )
        found = [d for d in found if d.name in only]
    return found


def add_commands(group: AppGroup, tracker: t.Any) -> None:
    """Add ``export-conversions`` and ``destinations push|status`` to the ``utm`` group."""
    day = click.DateTime(["%Y-%m-%d"])

    @group.command("export-conversions")
    @click.option(
        "--platform",
        type=click.Choice(list(LAYOUTS)),
        required=True,
        help="The upload file's layout.",
    )
    @click.option("--name", required=True, help="The conversions to export (their name).")
    @click.option(
        "--conversion-name",
        help="The conversion action's name in the ad platform; default: --name.",
    )
    @click.option("--start", type=day, help="First day (YYYY-MM-DD, in --timezone).")
    @click.option("--end", type=day, help="Last day (YYYY-MM-DD, in --timezone).")
    @click.option(
        "--timezone",
        "zone",
        default="UTC",
        show_default=True,
        help="IANA time zone of Conversion Time and of --start/--end (e.g. Europe/Paris).",
    )
    @click.option(
        "--window-days",
        type=click.IntRange(1, 540),
        default=90,
        show_default=True,
        help="Click-through window: clicks older than this before a conversion are not used.",
    )
    def export_conversions(
        platform: str,
        name: str,
        conversion_name: str | None,
        start: datetime | None,
        end: datetime | None,
        zone: str,
        window_days: int,
    ) -> None:
        """Write an offline-conversion upload file (Google Ads or Microsoft Advertising) of the
        conversions called NAME whose path holds the platform's click ID, to standard output.
        """
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise click.BadParameter(
                f"{zone!r} is not a time zone name; use an IANA name such as UTC or"
                " America/New_York.",
                param_hint="--timezone",
            ) from None
        first: date | None = start.date() if start else None
        last: date | None = end.date() if end else None
        if first and last and first > last:
            raise click.BadParameter(
                f"--start {first} is after --end {last}.", param_hint="--start"
            )
        rows = write_file(
            tracker,
            sys.stdout,  # looked up at call time: the test runner swaps it
            platform=platform,
            name=name,
            conversion_name=conversion_name or name,
            zone=zone,
            start=first,
            end=last,
            window_days=window_days,
        )
        click.echo(f"{rows} conversions exported.", err=True)

    @group.group("destinations")
    def destinations_group() -> None:
        """Send conversions to ad platforms (UTM_TRACKER_DESTINATIONS) and see the outbox."""

    @destinations_group.command("push")
    @click.option("--dry-run", is_flag=True, help="Print the requests (JSON lines); send nothing.")
    @click.option(
        "--retry-now", is_flag=True, help="Also send what waits for its backoff after an error."
    )
    @click.option(
        "--destination",
        "only",
        multiple=True,
        help="Only this destination (repeatable); default: all.",
    )
    def push(dry_run: bool, retry_now: bool, only: tuple[str, ...]) -> None:
        """Send every conversion not yet delivered to each destination, once."""
        found = _destinations(only)
        if not found:
            click.echo(
                f"No destinations: set {CONFIG_KEY} (see the docs' conversions page).", err=True
            )
            return
        outbox = Outbox(tracker, _config())
        for destination in found:
            if dry_run:
                prepared = outbox.preview(destination, retry_now=retry_now)
                for request in requests_of(destination, prepared):
                    click.echo(json.dumps(request.printable(), sort_keys=True))
                held = [p for p in prepared if p.payload is None]
                sending = len(prepared) - len(held)
                click.echo(
                    f"{destination.name}: would send {sending}, not send {len(held)}"
                    " (dry run: nothing sent or recorded).",
                    err=True,
                )
                for p in held:
                    click.echo(f"  conversion {p.conversion_id}: {p.status}: {p.reason}", err=True)
                continue
            counts = outbox.push(destination, retry_now=retry_now)
            click.echo(f"{destination.name}: {counts}.")

    @destinations_group.command("status")
    @click.option("--errors", type=click.IntRange(0, 100), default=5, show_default=True)
    def status_command(errors: int) -> None:
        """Pending, sent, failed, expired and skipped counts and the last errors per destination."""
        try:
            found = status(tracker, _config(), errors)
        except ConfigurationError as err:
            raise click.UsageError(str(err)) from None
        if not found:
            click.echo(f"No destinations: set {CONFIG_KEY} (see the docs' conversions page).")
            return
        for s in found:
            click.echo(f"{s.destination} ({s.title})")
            click.echo("  " + ", ".join(f"{s.counts[k]} {k}" for k in STATUSES))
            if s.waiting:
                click.echo(
                    f"  {s.waiting} waiting for a retry, the next at {_when(s.next_retry)}"
                    " (--retry-now sends them now)"
                )
            if s.restated:
                click.echo(
                    f"  {s.restated} restated after they were sent (value or currency changed):"
                    f" {s.restatement}"
                )
            for when, conversion_id, state, attempts, message in s.errors:
                click.echo(
                    f"  {_when(when)} conversion {conversion_id} ({state}, attempt {attempts}):"
                    f" {_line(message)}"
                )


def _when(moment: datetime | None) -> str:
    return utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _line(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text)


__all__ = ["Destination", "Outbox", "add_commands", "configured", "make_models", "status"]
