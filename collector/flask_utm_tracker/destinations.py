"""Conversions sent back to ad platforms: offline-conversion files and a delivery outbox.

``Delivery`` is the outbox: one row per conversion and destination, so that each conversion is
delivered at most once to each destination.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa

from .models import utcnow

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy


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
            #: ``pending``, ``sent``, ``failed``, ``expired`` or ``skipped``.
            "status": sa.Column(sa.String(16), nullable=False, default="pending"),
            "attempts": sa.Column(sa.Integer, nullable=False, default=0),
            "next_attempt_at": sa.Column(sa.DateTime(timezone=True), nullable=True),
            "last_error": sa.Column(sa.Text, nullable=True),
            "sent_at": sa.Column(sa.DateTime(timezone=True), nullable=True),
            "created_at": sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow),
            "__table_args__": (
                sa.UniqueConstraint("conversion_id", "destination", name=f"uq_{name}_once"),
                sa.Index(f"ix_{name}_status", "destination", "status"),
            ),
        },
    )
