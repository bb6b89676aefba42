"""Which query parameters are tracked, and how their names and values are normalised.

The list lives in ``data/params.json``, shared with the JavaScript snippet so both halves track
the same names. Names match case-insensitively and are kept lower-case; values are trimmed,
utm values lower-cased, click IDs and custom tags kept as sent, and anything longer than
:data:`MAX_VALUE_LENGTH` truncated, never rejected.
"""

from __future__ import annotations

import functools
import json
import re
import typing as t
from importlib import resources
from urllib.parse import parse_qsl, unquote_plus, urlsplit

_DATA = json.loads(
    resources.files("flask_utm_tracker").joinpath("data/params.json").read_text("utf-8")
)

#: The utm_* parameters, in the order of their columns.
UTM_PARAMS: tuple[str, ...] = tuple(_DATA["utm"])
#: Ad-platform click IDs (lower-case names).
CLICK_IDS: tuple[str, ...] = tuple(_DATA["click_ids"])
#: Longest value kept; longer ones are truncated.
MAX_VALUE_LENGTH: int = int(_DATA["max_value_length"])
#: Everything tracked without configuration.
TRACKED: frozenset[str] = frozenset(UTM_PARAMS + CLICK_IDS)
#: Most parameters read from one query string or beacon touch (a huge one is cut short).
MAX_PARAMS = 100


def clean_text(value: t.Any, limit: int = MAX_VALUE_LENGTH) -> str:
    """Return ``value`` as text that every database accepts: no NUL bytes, no lone surrogates,
    trimmed and at most ``limit`` characters. Non-strings give ``""``.
    """
    if not isinstance(value, str):
        return ""
    text: str = value.replace("\x00", "") if "\x00" in value else value
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.strip()[:limit].strip()


def normalize(
    pairs: t.Iterable[tuple[t.Any, t.Any]], custom_tags: t.Collection[str] = ()
) -> dict[str, str]:
    """Keep the tracked parameters of ``pairs``, with normalised names and values.

    The first non-empty value of a name wins, as a browser shows it in the address bar.

    :param pairs: ``(name, value)`` pairs, e.g. ``request.args.items(multi=True)``.
    :param custom_tags: extra lower-case names to keep (``UTM_TRACKER_CUSTOM_TAGS``).
    """
    result: dict[str, str] = {}
    for count, (name, value) in enumerate(pairs):
        if count >= MAX_PARAMS:
            break
        if not isinstance(name, str):
            continue
        key = name.strip().lower()
        if key in result or (key not in TRACKED and key not in custom_tags):
            continue
        text = clean_text(value)
        if not text:
            continue
        result[key] = text.lower() if key.startswith("utm_") else text
    return result


@functools.lru_cache(maxsize=16)
def _names(custom_tags: tuple[str, ...]) -> re.Pattern[str]:
    """Any tracked name, anywhere, in any case: the test that lets an untracked query string
    skip parsing."""
    names = set(TRACKED.union(custom_tags))
    # A custom tag beyond ASCII sent raw arrives as UTF-8 bytes read as latin-1.
    names.update(n.encode("utf-8").decode("latin-1") for n in custom_tags if not n.isascii())
    return re.compile("|".join(map(re.escape, sorted(names, key=len, reverse=True))), re.IGNORECASE)


def from_query(query: str, custom_tags: tuple[str, ...] = ()) -> dict[str, str]:
    """The tracked parameters of a raw query string (a WSGI ``QUERY_STRING``: UTF-8 bytes as
    latin-1 text), read as ``parse_qsl`` and the snippet's ``URLSearchParams`` read it: the
    pairs in the order of the query, blank values skipped, then :func:`normalize`.

    That is what :func:`normalize` keeps from ``request.args``, but for two cases no browser
    makes: werkzeug groups a repeated name before the names that follow it (so with
    ``utm_source=&UTM_SOURCE=b&utm_source=c`` it keeps ``c``, we and the snippet ``b``), and
    counts blank values towards the :data:`MAX_PARAMS` read.

    A query that names no tracked parameter, not even percent-encoded, is not parsed.
    """
    if "%" not in query and not _names(custom_tags).search(query):
        return {}
    plain = "%" not in query and "+" not in query
    try:
        query = query.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # characters past latin-1: not a WSGI string, read as text
        pass
    if not plain:
        return normalize(parse_qsl(query), custom_tags)
    # Nothing to unquote: parse_qsl's pairs without its unquoting (names and values as sent;
    # blank values and parts without "=" skipped, as parse_qsl skips them).
    pairs = []
    for part in query.split("&"):
        name, sep, value = part.partition("=")
        if value:
            pairs.append((name, value))
    return normalize(pairs, custom_tags)


def from_url(url: str, custom_tags: t.Collection[str] = ()) -> dict[str, str]:
    """The tracked parameters of ``url``'s query string (``{}`` for anything unparseable)."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return {}
    return normalize(parse_qsl(query, keep_blank_values=False), custom_tags)


def strip_query(url: str, keep: t.Collection[str] = ()) -> str:
    """``url`` with only the tracked parameters and the names in ``keep`` (lower-case) left in
    its query string, and no fragment: a password-reset token, an OAuth ``code`` or a session
    id in a landing URL is never stored.

    The parameters kept are kept as written (their encoding and order).
    """
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    kept = []
    for part in parts.query.split("&") if parts.query else ():
        name = unquote_plus(part.split("=", 1)[0]).strip().lower()
        if name in TRACKED or name in keep:
            kept.append(part)
    return parts._replace(query="&".join(kept), fragment="").geturl()
