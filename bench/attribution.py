"""Attribution reports at scale: 1,000,000 ``LeadSource`` rows and 200,000 conversions.

    BENCH_DB=postgresql+psycopg://postgres@127.0.0.1:5432/test python -m bench.attribution

Loads users, lead sources and conversions into a PostgreSQL schema of its own
(``bench_attribution``, dropped first) with ``COPY``, builds the attribution tables with the
same code as ``flask utm rebuild`` (timed), then times ``tracker.attribute()`` for every model
and prints the median (p50) and the slowest run per model. The targets: every model's p50 under
300 ms, ``data_driven`` under 2 s.

Knobs: ``BENCH_USERS`` (250,000), ``BENCH_LEADS`` (1,000,000), ``BENCH_CONVERSIONS``
(200,000), ``BENCH_ROUNDS`` (7), ``BENCH_KEEP=1`` keeps the schema and reuses it when it is
already loaded.
"""

from __future__ import annotations

import os
import random
import statistics
import time
import typing as t
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from flask import Flask
from flask_login import UserMixin
from flask_sqlalchemy import SQLAlchemy
from flask_utm_tracker import UTMTracker
from flask_utm_tracker import conversions as conv
from flask_utm_tracker.attribution import MODELS
from flask_utm_tracker.channels import channel_for

SCHEMA = "bench_attribution"
USERS = int(os.environ.get("BENCH_USERS", 250_000))
LEADS = int(os.environ.get("BENCH_LEADS", 1_000_000))
CONVERSIONS = int(os.environ.get("BENCH_CONVERSIONS", 200_000))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 7))
END = datetime(2025, 12, 31, tzinfo=timezone.utc)
DAYS = 365
#: (source, medium) pairs, with their weights; campaigns are drawn apart.
SOURCES = [
    (("google", "cpc"), 20),
    (("google", "organic"), 18),
    (("facebook", "paid_social"), 10),
    (("facebook", "social"), 6),
    (("newsletter", "email"), 12),
    (("bing", "cpc"), 5),
    (("chatgpt.com", "ai"), 3),
    (("partner-a.com", "referral"), 4),
    (("partner-b.com", "referral"), 3),
    (("tiktok", "cpc"), 4),
    (("youtube", "video"), 3),
    (("affiliate-net", "affiliate"), 2),
]
CAMPAIGNS = [f"campaign-{i:02d}" for i in range(40)] + [""]


def make_app(url: str) -> tuple[Flask, SQLAlchemy, UTMTracker]:
    app = Flask(__name__)
    options = sa.make_url(url).update_query_dict({"options": f"-csearch_path={SCHEMA}"})
    app.config.update(
        SQLALCHEMY_DATABASE_URI=options.render_as_string(hide_password=False), SECRET_KEY="b"
    )
    db = SQLAlchemy()

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "users"
        id = sa.Column(sa.Integer, primary_key=True)
        email = sa.Column(sa.String(200), nullable=False)

    db.init_app(app)
    tracker = UTMTracker(app, db=db, user_model=User)
    return app, db, tracker


def copy(
    conn: sa.Connection, table: str, columns: list[str], rows: t.Iterable[tuple[t.Any, ...]]
) -> None:
    """``COPY table (columns) FROM STDIN`` through psycopg's copy protocol."""
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor:  # type: ignore[union-attr]
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as out:
            for row in rows:
                out.write_row(row)


def load(app: Flask, db: SQLAlchemy, tracker: UTMTracker) -> None:
    rng = random.Random(42)
    pairs, weights = zip(*SOURCES, strict=True)
    started = time.perf_counter()
    with app.app_context():
        db.create_all()
        with db.engine.begin() as conn:
            copy(
                conn,
                "users",
                ["id", "email"],
                ((i, f"u{i}@example.com") for i in range(1, USERS + 1)),
            )
            # Lead sources: each user 1..7 touches (mean 4) over the year, until LEADS rows.
            leads: list[tuple[t.Any, ...]] = []
            first_touch: dict[int, datetime] = {}
            last_touch: dict[int, datetime] = {}
            user = 0
            while len(leads) < LEADS:
                user = user % USERS + 1
                n = min(rng.randint(1, 7), LEADS - len(leads))
                when = END - timedelta(days=rng.uniform(30, DAYS))
                for _ in range(n):
                    ((source, medium),) = rng.choices(pairs, weights)
                    campaign = rng.choice(CAMPAIGNS) if medium != "organic" else ""
                    when += timedelta(hours=rng.uniform(1, 24 * 6))
                    leads.append(
                        (
                            user, f"t{len(leads)}", source, medium, campaign, "", "",
                            channel_for(source, medium, campaign), "{}", "{}", when, when,
                        )
                    )  # fmt: skip
                    first_touch.setdefault(user, when)
                    last_touch[user] = when
            copy(
                conn,
                tracker.LeadSource.__tablename__,
                ["user_id", "touch_id", "source", "medium", "campaign", "term", "content",
                 "channel", "click_ids", "custom_tags", "timestamp", "created_at"],
                leads,
            )  # fmt: skip
            # Conversions: users with touches, shortly after their latest touch (some repeat).
            buyers = list(last_touch)
            rng.shuffle(buyers)
            rows = []
            for i in range(CONVERSIONS):
                buyer = buyers[i % int(len(buyers) * 0.8)]
                at = min(last_touch[buyer] + timedelta(hours=rng.uniform(0, 24 * 10)), END)
                value = round(rng.uniform(5, 300), 2)
                currency = "EUR" if rng.random() < 0.8 else "USD"
                rows.append((buyer, "purchase", value, currency, f"o{i}", at, at))
            copy(
                conn,
                tracker.Conversion.__tablename__,
                ["user_id", "name", "value", "currency", "order_id", "occurred_at", "created_at"],
                rows,
            )
            spend_rows = []
            for day in range(DAYS):
                for (source, medium), _ in SOURCES[:6]:
                    for campaign in CAMPAIGNS[:10]:
                        spend_rows.append(
                            ((END - timedelta(days=day)).date(), source, medium, campaign, "",
                             round(rng.uniform(1, 50), 2), "EUR")
                        )  # fmt: skip
            copy(
                conn,
                tracker.Spend.__tablename__,
                ["date", "source", "medium", "campaign", "utm_id", "cost", "currency"],
                spend_rows,
            )
            for name in (
                "users",
                tracker.LeadSource.__tablename__,
                tracker.Conversion.__tablename__,
            ):
                conn.execute(sa.text(f"ANALYZE {name}"))
    print(f"loaded {USERS:,} users, {LEADS:,} lead sources, {CONVERSIONS:,} conversions,"
          f" {len(spend_rows):,} spend rows in {time.perf_counter() - started:.1f} s")  # fmt: skip
    started = time.perf_counter()
    with app.app_context(), db.engine.begin() as conn:
        converted, users = conv.rebuild(conn, tracker)
    print(f"rebuild (flask utm rebuild's conversion part): {converted:,} conversions,"
          f" {users:,} users' paths in {time.perf_counter() - started:.1f} s")  # fmt: skip


def measure(app: Flask, tracker: UTMTracker) -> list[tuple[str, str, float, float]]:
    out = []
    with app.app_context():
        for by in ("channel", "campaign"):
            for model in MODELS:
                times = []
                for _ in range(ROUNDS):
                    started = time.perf_counter()
                    rows = tracker.attribute(name="purchase", model=model, by=by)
                    times.append(time.perf_counter() - started)
                assert rows, "no rows: the load failed"
                out.append((model, by, statistics.median(times) * 1000, max(times) * 1000))
        # A month's range too (the dashboard's default is 30 days).
        for model in ("last", "data_driven"):
            times = []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                tracker.attribute(
                    name="purchase", model=model, by="channel", start="2025-12-01", end="2025-12-31"
                )
                times.append(time.perf_counter() - started)
            out.append((model, "channel, Dec", statistics.median(times) * 1000, max(times) * 1000))
    return out


def main() -> None:
    url = os.environ.get("BENCH_DB", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    engine = sa.create_engine(url)
    keep = os.environ.get("BENCH_KEEP") == "1"
    with engine.begin() as conn:
        exists = conn.scalar(
            sa.text("SELECT count(*) FROM information_schema.schemata WHERE schema_name = :s"),
            {"s": SCHEMA},
        )
        if exists and not keep:
            conn.execute(sa.text(f"DROP SCHEMA {SCHEMA} CASCADE"))
        if not exists or not keep:
            conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
    app, db, tracker = make_app(url)
    if not (exists and keep):
        load(app, db, tracker)
    results = measure(app, tracker)
    print()
    print(f"{'model':<14}{'by':<14}{'p50 ms':>9}{'max ms':>9}  target")
    for model, by, p50, worst in results:
        target = 2000 if model == "data_driven" else 300
        verdict = "ok" if p50 < target else "SLOW"
        print(f"{model:<14}{by:<14}{p50:>9.1f}{worst:>9.1f}  < {target} {verdict}")
    if not keep:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {SCHEMA} CASCADE"))
    engine.dispose()


if __name__ == "__main__":
    main()
