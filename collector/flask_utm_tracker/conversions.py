"""Conversions and ad spend: the ``Conversion`` and ``Spend`` models and recording them.

``Conversion`` is what a user did that the product counts (``sign_up``, ``purchase``), with an
optional value; ``Spend`` is what a campaign cost per day, imported from GA4's cost-data layout.
Both are built on the host's ``db`` like ``LeadSource``.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import orm

from .models import SHORT, utcnow

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

#: Longest conversion name and order id.
NAME = 64
ORDER_ID = 255


@dataclass(frozen=True)
class ConversionModels:
    """The models made for one tracker."""

    Conversion: type[t.Any]
    Spend: type[t.Any]


def make_models(
    db: SQLAlchemy, user_model: type[t.Any], user_fk: sa.Column[t.Any], table_prefix: str
) -> ConversionModels:
    """Build ``Conversion`` and ``Spend`` on ``db.Model``.

    :param user_fk: the user model's primary-key column, referenced by ``Conversion.user_id``.
    """
    target = f"{user_fk.table.fullname}.{user_fk.name}"
    user_type = user_fk.type.copy() if hasattr(user_fk.type, "copy") else user_fk.type
    conversion_table = f"{table_prefix}conversion"
    conversion = type(
        "Conversion",
        (db.Model,),
        {
            "__tablename__": conversion_table,
            "__doc__": "Something a user did that counts (a purchase, a sign-up), with its value.",
            "id": sa.Column(sa.Integer, primary_key=True),
            "user_id": sa.Column(
                user_type, sa.ForeignKey(target, ondelete="CASCADE"), nullable=False, index=True
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
    return ConversionModels(conversion, spend)


def record(
    tracker: t.Any,
    user: t.Any,
    name: str,
    *,
    value: t.Any = None,
    currency: str | None = None,
    order_id: str | None = None,
    occurred_at: t.Any = None,
) -> t.Any:
    """Record a conversion (placeholder: implemented with the conversions issue)."""
    raise NotImplementedError
