"""Data the report, conversion and dashboard tests build: users with lead sources dated by hand."""

from __future__ import annotations

import itertools
import secrets
import typing as t
from datetime import date, datetime, timedelta, timezone

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from flask_utm_tracker import UTMTracker, reports
from flask_utm_tracker.channels import channel_for

from .conftest import HostApp, _made

MARCH = {"start": date(2024, 3, 1), "end": date(2024, 3, 31)}


_ids = itertools.count(1)


def at(day: int, month: int = 3, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(2024, month, day, hour, minute, tzinfo=timezone.utc)


def touch(
    channel: str,
    source: str,
    medium: str,
    ts: datetime,
    created: datetime,
    campaign: str = "",
) -> dict[str, t.Any]:
    return {
        "channel": channel,
        "source": source,
        "medium": medium,
        "campaign": campaign,
        "timestamp": ts,
        "created_at": created,
    }


def add_user(env: HostApp, email: str, *touches: dict[str, t.Any], **user: t.Any) -> t.Any:
    db, lead = env.db, env.tracker.LeadSource
    person = env.User(email=email, **user)
    db.session.add(person)
    db.session.flush()
    for fields in touches:
        db.session.add(lead(user_id=person.id, touch_id=f"t{next(_ids)}", **fields))
    db.session.commit()
    return person.id


def build(env: HostApp) -> None:
    """Five users with known answers.

    ann: three touches before signing up on 5 March (Paid Search, Email, Organic Social), and
         one after (Paid Search on the 20th) that must not count.
    bob: one Email touch, signed up on Sunday 10 March.
    cat: no touch: not a lead.
    dan: Organic Search in February, Paid Search on 2 April, the day he signed up.
    eve: a client clock ahead of the server: her only touch before the cut-off is stamped an
         hour after her sign-up on 15 March; a later one (the 16th) must not count.
    """
    signup = at(5)
    add_user(
        env,
        "ann@example.com",
        touch("Paid Search", "google", "cpc", at(1), signup, "spring"),
        touch("Email", "newsletter", "email", at(3), signup, "march-news"),
        touch("Organic Social", "facebook", "social", at(5, hour=11), signup),
        touch("Paid Search", "bing", "cpc", at(20), at(20), "spring"),
    )
    add_user(env, "bob@example.com", touch("Email", "newsletter", "email", at(10), at(10)))
    add_user(env, "cat@example.com")
    add_user(
        env,
        "dan@example.com",
        touch("Organic Search", "google", "organic", at(25, month=2), at(2, month=4)),
        touch("Paid Search", "google", "cpc", at(2, month=4, hour=9), at(2, month=4), "spring"),
    )
    add_user(
        env,
        "eve@example.com",
        touch("Referral", "example.org", "referral", at(15, hour=13), at(15)),
        touch("Organic Search", "bing", "organic", at(16), at(16)),
    )


def by_key(counts: list[reports.Count]) -> dict[str, float]:
    return {c.key: c.leads for c in counts}


T0 = datetime(2025, 3, 1, 12, tzinfo=timezone.utc)


DAY = timedelta(days=1)


def add_lead(env: HostApp, touches: t.Sequence[tuple[str, str, str, datetime]] = ()) -> int:
    """A user with ``LeadSource`` rows ``(source, medium, campaign, timestamp)``."""
    db, tracker = env.db, env.tracker
    user = env.User(email=f"{secrets.token_hex(6)}@example.com")
    db.session.add(user)
    db.session.flush()
    for source, medium, campaign, when in touches:
        db.session.add(
            tracker.LeadSource(
                user_id=user.id,
                touch_id=secrets.token_hex(8),
                source=source,
                medium=medium,
                campaign=campaign,
                channel=channel_for(source, medium, campaign),
                timestamp=when,
            )
        )
    db.session.commit()
    return int(user.id)


def make_app_with_signup(db_url: str, aware: bool = True) -> HostApp:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=db_url, TESTING=True, SECRET_KEY="x")
    db = SQLAlchemy()

    class Member(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "members"
        id = sa.Column(sa.Integer, primary_key=True)
        email = sa.Column(sa.String(200), unique=True, nullable=False)
        created_at = sa.Column(sa.DateTime(timezone=aware), nullable=True)

    db.init_app(app)
    tracker = UTMTracker(app, db=db, user_model=Member)
    with app.app_context():
        db.create_all()
    made = HostApp(app, db, Member, tracker)
    _made.append(made)
    return made
