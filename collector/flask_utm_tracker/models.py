"""``LeadSource`` and ``Touch``, built on the host app's Flask-SQLAlchemy ``db``.

The models are made per :class:`~flask_utm_tracker.UTMTracker` so that they live on the host's
metadata (``db.create_all()`` and Flask-Migrate see them) and reference the host's user model.

``LeadSource`` keeps django-utm-tracker's column names and adds the touch id, the visitor id,
the referrer, the landing URL, the channel, the remaining utm_* fields and ``click_ids``: every
click ID of the touch as JSON (``gclid``, ``aclk``, ``msclkid``, ``twclid`` and ``fbclid`` are
also columns, as in django-utm-tracker).

Two more tables serve the reports (see :mod:`flask_utm_tracker.rollup`): ``Lead`` (one row per
user with a ``LeadSource`` row: the sign-up time and a fingerprint of the user's rows, kept in
step at write time) and ``LeadDay`` (the attribution numbers per sign-up day, computed again
for a user's days whenever their lead sources are written). Both are derived data:
``flask utm rebuild`` makes them again from ``LeadSource``.
"""

from __future__ import annotations

import typing as t
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy import orm

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

#: Column lengths; longer values are truncated before they reach the database.
SHORT = 255
URL = 2048
ID = 64

#: The utm fields kept as columns, by parameter.
UTM_COLUMNS = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "campaign",
    "utm_term": "term",
    "utm_content": "content",
    "utm_id": "utm_id",
    "utm_source_platform": "source_platform",
    "utm_creative_format": "creative_format",
    "utm_marketing_tactic": "marketing_tactic",
}
#: The click IDs that are also columns (django-utm-tracker's).
CLICK_ID_COLUMNS = ("gclid", "aclk", "msclkid", "twclid", "fbclid")
#: Every column filled from a touch, shared by ``LeadSource`` and ``Touch``.
TOUCH_FIELDS = (
    "touch_id",
    "visitor_id",
    "medium",
    "source",
    "campaign",
    "term",
    "content",
    "utm_id",
    "source_platform",
    "creative_format",
    "marketing_tactic",
    *CLICK_ID_COLUMNS,
    "click_ids",
    "custom_tags",
    "referrer",
    "landing_url",
    "channel",
    "timestamp",
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _touch_columns() -> dict[str, t.Any]:
    """Fresh column objects for the fields every touch carries."""
    columns: dict[str, t.Any] = {
        "touch_id": sa.Column(sa.String(ID), nullable=False),
        "visitor_id": sa.Column(sa.String(ID), nullable=True),
        "medium": sa.Column(sa.String(SHORT), nullable=False, default=""),
        "source": sa.Column(sa.String(SHORT), nullable=False, default=""),
        "campaign": sa.Column(sa.String(SHORT), nullable=False, default=""),
        "term": sa.Column(sa.String(SHORT), nullable=False, default=""),
        "content": sa.Column(sa.String(SHORT), nullable=False, default=""),
        "utm_id": sa.Column(sa.String(SHORT), nullable=True),
        "source_platform": sa.Column(sa.String(SHORT), nullable=True),
        "creative_format": sa.Column(sa.String(SHORT), nullable=True),
        "marketing_tactic": sa.Column(sa.String(SHORT), nullable=True),
        "click_ids": sa.Column(sa.JSON, nullable=False, default=dict),
        "custom_tags": sa.Column(sa.JSON, nullable=False, default=dict),
        "referrer": sa.Column(sa.String(URL), nullable=True),
        "landing_url": sa.Column(sa.String(URL), nullable=True),
        "channel": sa.Column(sa.String(40), nullable=False, default="Unassigned"),
        "timestamp": sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow),
    }
    for name in CLICK_ID_COLUMNS:
        columns[name] = sa.Column(sa.String(SHORT), nullable=True)
    return columns


def user_pk(user_model: type[t.Any]) -> sa.Column[t.Any]:
    table = getattr(user_model, "__table__", None)
    if table is None or len(table.primary_key.columns) != 1:
        raise TypeError(
            "user_model must be a mapped Flask-SQLAlchemy model with a single-column primary key,"
            f" not {user_model!r}."
        )
    return t.cast("sa.Column[t.Any]", next(iter(table.primary_key.columns)))


def make_models(
    db: SQLAlchemy, user_model: type[t.Any], table_prefix: str = "utm_"
) -> tuple[type[t.Any], type[t.Any], type[t.Any], type[t.Any]]:
    """Build ``LeadSource``, ``Touch``, ``Lead`` and ``LeadDay`` on ``db.Model``, with foreign
    keys to ``user_model``.

    :param db: the host app's :class:`flask_sqlalchemy.SQLAlchemy` instance.
    :param user_model: the Flask-Login user model (single-column primary key).
    :param table_prefix: prefix of the two table names.
    """
    pk = user_pk(user_model)
    target = f"{pk.table.fullname}.{pk.name}"
    user_type = pk.type.copy() if hasattr(pk.type, "copy") else pk.type
    lead_table = f"{table_prefix}lead_source"
    touch_table = f"{table_prefix}touch"

    lead_attrs: dict[str, t.Any] = {
        "__tablename__": lead_table,
        "__doc__": "One marketing touch that led to a user: written once per (user, touch).",
        "id": sa.Column(sa.Integer, primary_key=True),
        "user_id": sa.Column(
            user_type, sa.ForeignKey(target, ondelete="CASCADE"), nullable=False, index=True
        ),
        **_touch_columns(),
        "created_at": sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow),
        "__table_args__": (
            sa.UniqueConstraint("user_id", "touch_id", name=f"uq_{lead_table}_user_touch"),
            sa.Index(f"ix_{lead_table}_timestamp", "timestamp"),
            sa.Index(f"ix_{lead_table}_created_at", "created_at"),
            sa.Index(f"ix_{lead_table}_channel", "channel"),
        ),
        "user": orm.relationship(
            user_model,
            backref=orm.backref(
                "lead_sources",
                cascade="all, delete-orphan",
                order_by=lambda: lead_attrs["timestamp"],
            ),
        ),
        "__repr__": lambda self: (
            f"<LeadSource {self.id} user={self.user_id} {self.source}/{self.medium}>"
        ),
    }
    lead_source = type("LeadSource", (db.Model,), lead_attrs)

    touch_columns = _touch_columns()
    touch_columns["visitor_id"] = sa.Column(sa.String(ID), nullable=False)
    touch_attrs: dict[str, t.Any] = {
        "__tablename__": touch_table,
        "__doc__": "A touch received by beacon, kept by visitor id until a login claims it.",
        "id": sa.Column(sa.Integer, primary_key=True),
        **touch_columns,
        "received_at": sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow),
        "claimed_by": sa.Column(
            user_type, sa.ForeignKey(target, ondelete="CASCADE"), nullable=True, index=True
        ),
        "claimed_at": sa.Column(sa.DateTime(timezone=True), nullable=True),
        "__table_args__": (
            sa.UniqueConstraint("visitor_id", "touch_id", name=f"uq_{touch_table}_visitor_touch"),
            sa.Index(f"ix_{touch_table}_received_at", "received_at"),
        ),
        "__repr__": lambda self: (
            f"<Touch {self.id} visitor={self.visitor_id} {self.source}/{self.medium}>"
        ),
    }
    touch = type("Touch", (db.Model,), touch_attrs)

    lead_name = f"{table_prefix}lead"
    lead = type(
        "Lead",
        (db.Model,),
        {
            "__tablename__": lead_name,
            "__doc__": "A user with lead sources: the sign-up and a fingerprint of the rows.",
            "user_id": sa.Column(
                user_type.copy() if hasattr(user_type, "copy") else user_type,
                sa.ForeignKey(target, ondelete="CASCADE"),
                primary_key=True,
                autoincrement=False,
            ),
            "signed_up_at": sa.Column(sa.DateTime(timezone=True), nullable=False),
            "signup_day": sa.Column(sa.Date, nullable=False),
            "rows": sa.Column(sa.Integer, nullable=False),
            "max_id": sa.Column(sa.Integer, nullable=False),
            "__table_args__": (
                sa.Index(f"ix_{lead_name}_signup_day", "signup_day", "rows", "max_id"),
                sa.Index(f"ix_{lead_name}_max_id", "max_id"),
            ),
        },
    )
    day_name = f"{table_prefix}lead_day"
    lead_day = type(
        "LeadDay",
        (db.Model,),
        {
            "__tablename__": day_name,
            "__doc__": "Leads of one sign-up day credited to one value of a dimension.",
            #: ``channel``, ``source``, ``medium``, ``campaign``, or ``""`` for the day's totals;
            #: first in the key, so a report reads one contiguous range of it.
            "dimension": sa.Column(sa.String(16), primary_key=True),
            "day": sa.Column(sa.Date, primary_key=True),
            "key": sa.Column(sa.String(SHORT), primary_key=True),
            "first_touch": sa.Column(sa.Integer, nullable=False),
            "last_touch": sa.Column(sa.Integer, nullable=False),
            "linear": sa.Column(sa.Float, nullable=False),
            "touches": sa.Column(sa.Integer, nullable=False),
            "leads": sa.Column(sa.Integer, nullable=False),
            #: On the totals row: the day's ``Lead`` rows when the numbers were computed.
            "fingerprint": sa.Column(sa.String(100), nullable=True),
        },
    )
    return lead_source, touch, lead, lead_day
