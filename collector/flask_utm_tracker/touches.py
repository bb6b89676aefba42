"""One touch, from its raw form (beacon, cookie, query string, ``stash_touch``) to the row fields.

A raw touch is ``{"id", "ts", "url", "referrer", "params"}`` (the beacon's shape). :func:`fields`
turns it into the columns shared by ``LeadSource`` and ``Touch``: source and medium always filled
(from utm_*, else a click ID, else the referrer), the GA4 channel, click IDs and custom tags.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import typing as t
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

from . import models
from .channels import channel_for, click_id_source
from .classify import classify_referrer
from .params import CLICK_IDS, clean_text, from_url, normalize, strip_query
from .schemas import load_touch

#: Shown where a utm parameter leaves source or medium unknown, as GA4 does.
NOT_SET = "(not set)"
#: Oldest client time believed (2000-01-01); anything earlier or in the future becomes "now".
EARLIEST_MS = 946_684_800_000


@dataclass(frozen=True)
class Context:
    """What the server knows when it turns a raw touch into fields."""

    custom_tags: tuple[str, ...] = ()
    site_hosts: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    #: Query parameters kept in stored URLs besides the tracked ones and the custom tags.
    keep_params: tuple[str, ...] = ()
    #: The visitor's first contact with the server (epoch ms): no touch is placed before it.
    earliest_ms: int | None = None


def new_id() -> str:
    """A visitor or touch id: 22 base64url characters from 128 random bits."""
    return secrets.token_urlsafe(16)


def stable_id(*parts: str) -> str:
    """A touch id derived from ``parts``, for touches that must keep one id when rebuilt."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "replace")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")


def now_ms() -> int:
    return int(time.time() * 1000)


def host_of(url: str) -> str:
    """The lower-case host of ``url``, or ``""``."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def timestamp(ts: t.Any, earliest_ms: int | None = None) -> datetime:
    """The client's epoch-milliseconds ``ts`` as a UTC datetime: "now" when absent, absurd or in
    the future, and never before ``earliest_ms`` (the visitor's first contact with the server),
    so that a client's clock cannot make a touch someone's first.
    """
    now = now_ms()
    if isinstance(ts, bool) or not isinstance(ts, int) or not EARLIEST_MS <= ts <= now:
        ts = now
    if earliest_ms is not None and ts < earliest_ms <= now:
        ts = earliest_ms
    return datetime.fromtimestamp(ts / 1000, tz=timezone.utc)


def fields(
    raw: t.Mapping[str, t.Any], context: Context, visitor_id: str | None = None
) -> dict[str, t.Any] | None:
    """The row fields of ``raw``, or ``None`` when it is not a touch (a direct visit, an internal
    or spam referrer, an invalid id).

    :param raw: ``{"id", "ts", "url", "referrer", "params"}``; ``params`` wins over the URL's query.
    :param context: custom tags, the site's hosts, the excluded referrers.
    :param visitor_id: the visitor the touch came from, if known.
    """
    touch_id = raw.get("id")
    if not isinstance(touch_id, str) or not 1 <= len(touch_id) <= models.ID:
        return None
    url = clean_text(raw.get("url"), models.URL)
    keep = (*context.custom_tags, *context.keep_params)
    params_in = raw.get("params")
    if isinstance(params_in, t.Mapping) and params_in:
        params = normalize(params_in.items(), context.custom_tags)
    else:
        params = from_url(url, context.custom_tags) if url else {}
    referrer = clean_text(raw.get("referrer"), models.URL)
    ref = (
        classify_referrer(referrer, site_hosts=context.site_hosts, excluded=context.excluded)
        if referrer
        else None
    )
    if ref is not None and ref.medium in {"internal", "spam"}:
        if ref.medium == "spam":
            return None
        ref, referrer = None, ""

    click_ids = {name: params[name] for name in CLICK_IDS if name in params}
    custom = {name: params[name] for name in context.custom_tags if name in params}
    utm = {name: params[name] for name in models.UTM_COLUMNS if name in params}
    if not utm and not click_ids and not custom and ref is None:
        return None

    click_source = click_id_source(click_ids)
    fallback = click_source or ((ref.source, ref.medium) if ref is not None else None)
    source = utm.get("utm_source") or (fallback[0] if fallback else NOT_SET)
    medium = utm.get("utm_medium") or (fallback[1] if fallback else NOT_SET)
    term = utm.get("utm_term") or (ref.term if ref is not None and ref.term else "")
    row: dict[str, t.Any] = {
        "touch_id": touch_id,
        "visitor_id": visitor_id,
        "source": source[: models.SHORT],
        "medium": medium[: models.SHORT],
        "campaign": utm.get("utm_campaign", ""),
        "term": clean_text(term),
        "content": utm.get("utm_content", ""),
        "utm_id": utm.get("utm_id"),
        "source_platform": utm.get("utm_source_platform"),
        "creative_format": utm.get("utm_creative_format"),
        "marketing_tactic": utm.get("utm_marketing_tactic"),
        "click_ids": click_ids,
        "custom_tags": custom,
        "referrer": strip_query(referrer, keep) or None,
        "landing_url": strip_query(url, keep) or None,
        "timestamp": timestamp(raw.get("ts"), context.earliest_ms),
    }
    for name in models.CLICK_ID_COLUMNS:
        row[name] = click_ids.get(name)
    row["channel"] = channel_for(source, medium, row["campaign"] or None, click_ids)
    return row


def rows_of(
    raws: t.Iterable[t.Any], context: Context, visitor_id: str | None, *, validated: bool = False
) -> list[dict[str, t.Any]]:
    """The row fields of each raw touch that is one; invalid ones are logged and skipped.

    :param validated: the touches were loaded by :class:`~flask_utm_tracker.schemas.TouchSchema`
        already (a beacon's, the cookie's, a link token's).
    """
    rows = []
    for raw in raws:
        clean = raw if validated else load_touch(raw)
        row = fields(clean, context, visitor_id) if clean is not None else None
        if row is not None:
            rows.append(row)
    return rows


def signal_payload(row: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """What ``touch_recorded`` sends as ``touch``: the row fields, whatever stored them."""
    return {name: row.get(name) for name in models.TOUCH_FIELDS}
