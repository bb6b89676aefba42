"""Offline-conversion upload files: Google Ads' and Microsoft Advertising's click-ID layout.

Both files start with ``Parameters:TimeZone=<zone>``, then the header
``<Click ID column>,Conversion Name,Conversion Time,Conversion Value,Conversion Currency``, then
one row per conversion whose path (its user's touches at or before it, within the click-through
window) holds the platform's click: for Google the latest touch with a gclid, gbraid or wbraid
(its gclid, else gbraid, else wbraid: one only), for Microsoft the latest msclkid. Conversion
Time is ``yyyy-MM-dd HH:mm:ss`` in the file's time zone.
"""

from __future__ import annotations

import csv
import typing as t
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from .base import amount, utc
from .google_ads import google_click
from .path import paths

#: Conversions read per query.
BATCH = 1000


@dataclass(frozen=True)
class Layout:
    column: str

    def click(self, clicks: t.Mapping[str, t.Any]) -> str | None:
        raise NotImplementedError


class _Google(Layout):
    def click(self, clicks: t.Mapping[str, t.Any]) -> str | None:
        found = google_click(clicks)
        return found[1].value if found else None


class _Microsoft(Layout):
    def click(self, clicks: t.Mapping[str, t.Any]) -> str | None:
        found = clicks.get("msclkid")
        return found.value if found else None


LAYOUTS: dict[str, Layout] = {
    "google-ads": _Google("Google Click ID"),
    "microsoft-ads": _Microsoft("Microsoft Click ID"),
}


def write(
    tracker: t.Any,
    output: t.TextIO,
    *,
    platform: str,
    name: str,
    conversion_name: str,
    zone: str,
    start: date | None,
    end: date | None,
    window_days: int,
) -> int:
    """Write the upload file of the conversions called ``name`` to ``output``; return the rows.

    :param zone: an IANA time zone name (``Europe/Paris``); ``start`` and ``end`` are days in it.
    """
    layout = LAYOUTS[platform]
    tz = ZoneInfo(zone)
    table = tracker.Conversion.__table__
    where = [table.c.name == name]
    if start is not None:
        where.append(table.c.occurred_at >= utc(datetime.combine(start, time(), tz)))
    if end is not None:
        after = end + timedelta(days=1)
        where.append(table.c.occurred_at < utc(datetime.combine(after, time(), tz)))
    writer = csv.writer(output, lineterminator="\n")
    output.write(f"Parameters:TimeZone={zone}\n")
    writer.writerow(
        [
            layout.column,
            "Conversion Name",
            "Conversion Time",
            "Conversion Value",
            "Conversion Currency",
        ]
    )
    window = timedelta(days=window_days)
    rows = 0
    last_id = 0
    with tracker.db.engine.connect() as conn:
        while True:
            batch = conn.execute(
                sa.select(
                    table.c.id,
                    table.c.user_id,
                    table.c.occurred_at,
                    table.c.value,
                    table.c.currency,
                )
                .where(*where, table.c.id > last_id)
                .order_by(table.c.id)
                .limit(BATCH)
            ).all()
            if not batch:
                break
            last_id = batch[-1].id
            found = paths(
                conn, tracker.LeadSource, [(r.id, r.user_id, r.occurred_at) for r in batch], window
            )
            for row in sorted(batch, key=lambda r: (utc(r.occurred_at), r.id)):
                click = layout.click(found[row.id].clicks())
                if click is None:
                    continue
                writer.writerow(
                    [
                        click,
                        conversion_name,
                        utc(row.occurred_at).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
                        "" if row.value is None else amount(row.value),
                        row.currency or "",
                    ]
                )
                rows += 1
    return rows
