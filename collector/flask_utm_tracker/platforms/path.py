"""A conversion's path: its user's ``LeadSource`` rows at or before the conversion, within a
window, oldest first; and the click IDs it holds (the latest touch holding each).
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from ..models import CLICK_ID_COLUMNS
from .base import Click, utc

#: Users per query.
CHUNK = 500


@dataclass(frozen=True)
class Path:
    """The touches of one conversion's path, oldest first."""

    touches: tuple[t.Any, ...]

    def clicks(self) -> dict[str, Click]:
        """Each click ID of the path, from the latest touch holding it."""
        found: dict[str, Click] = {}
        for touch in self.touches:
            for key, value in click_ids(touch).items():
                found[key] = Click(value, utc(touch.timestamp), touch.landing_url)
        return found

    @property
    def landing_url(self) -> str | None:
        """The last touch's landing URL."""
        return self.touches[-1].landing_url if self.touches else None


def click_ids(touch: t.Any) -> dict[str, str]:
    """The click IDs of a ``LeadSource`` row: its ``click_ids`` JSON and the click-ID columns."""
    found = {
        str(k): v for k, v in (touch.click_ids or {}).items() if isinstance(v, str) and v.strip()
    }
    for column in CLICK_ID_COLUMNS:
        value = getattr(touch, column, None)
        if value:
            found.setdefault(column, value)
    return found


def paths(
    conn: sa.Connection,
    lead_source: type[t.Any],
    conversions: t.Sequence[tuple[int, t.Any, datetime]],
    window: timedelta,
) -> dict[int, Path]:
    """The path of each conversion, by conversion id.

    :param conversions: ``(id, user_id, occurred_at)`` triples.
    :param window: how far before a conversion its touches count.
    """
    table = lead_source.__table__
    columns = [table.c[name] for name in ("user_id", "timestamp", "id", "click_ids", "landing_url")]
    columns += [table.c[name] for name in CLICK_ID_COLUMNS]
    by_user: dict[t.Any, list[t.Any]] = {}
    users = list(dict.fromkeys(user for _, user, _ in conversions))
    for start in range(0, len(users), CHUNK):
        chunk = users[start : start + CHUNK]
        members = set(chunk)
        moments = [utc(at) for _, user, at in conversions if user in members]
        query = (
            sa.select(*columns)
            .where(
                table.c.user_id.in_(chunk),
                table.c.timestamp >= min(moments) - window,
                table.c.timestamp <= max(moments),
            )
            .order_by(table.c.user_id, table.c.timestamp, table.c.id)
        )
        for row in conn.execute(query):
            by_user.setdefault(row.user_id, []).append(row)
    found = {}
    for conversion_id, user, at in conversions:
        end = utc(at)
        begin = end - window
        touches = tuple(row for row in by_user.get(user, ()) if begin <= utc(row.timestamp) <= end)
        found[conversion_id] = Path(touches)
    return found
