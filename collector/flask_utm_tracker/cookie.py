"""The first-party cookie shared by the request hook and the snippet.

Its value is base64url (RFC 4648 section 5, no padding) of compact UTF-8 JSON, so firewalls do not
mistake it for SQL and RFC 6265's cookie-octet rules hold::

    {"v": "<visitor id>",
     "t": [<pending touch>, ...],                      # oldest first, cleared at reconciliation
     "l": {"id": "...", "ts": 1700000000000, "params": {...}}}   # the latest touch

A pending touch has the beacon's shape: ``{"id", "ts", "url", "referrer", "params"}``. The
encoded value is at most :data:`MAX_LENGTH` characters: URLs are cut to :data:`URL_LIMIT` and the
oldest pending touches after the first are dropped first.
"""

from __future__ import annotations

import base64
import binascii
import json
import typing as t
from dataclasses import dataclass, field

from itsdangerous import BadSignature, Signer
from werkzeug.sansio.http import parse_cookie

from .schemas import ID_RE, load_latest, load_touch

if t.TYPE_CHECKING:
    from werkzeug.wrappers import Request

#: Longest encoded value written (browsers keep 4,096 bytes per cookie, attributes included).
MAX_LENGTH = 3800
#: Longest encoded value read; anything longer is ignored.
READ_LIMIT = 8192
#: URLs and referrers kept in the cookie are cut to this many characters.
URL_LIMIT = 512


@dataclass
class CookieState:
    """The decoded cookie."""

    visitor_id: str
    pending: list[dict[str, t.Any]] = field(default_factory=list)
    latest: dict[str, t.Any] | None = None


def from_request(req: Request, name: str) -> str | None:
    """The value of cookie ``name`` on ``req``; the ``Cookie`` header is parsed only when the
    name appears in it (parsing costs more than the rest of a plain request's tracking)."""
    header = req.environ.get("HTTP_COOKIE")
    return req.cookies.get(name) if header and name in header else None


def from_header(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header (as the environ holds it), as
    :func:`from_request` reads it."""
    return parse_cookie(header).get(name) if name in header else None


def valid_id(value: t.Any) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def b64_json(value: str | None, limit: int) -> t.Any:
    """The JSON in ``value``, base64url of UTF-8 (the cookie's and the link token's encoding);
    ``None`` for anything longer than ``limit`` or not that (never raises)."""
    if not value or len(value) > limit:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        return json.loads(raw.decode("utf-8"))
    except (ValueError, binascii.Error, RecursionError):
        return None


def decode(value: str | None) -> CookieState | None:
    """Decode a cookie value; ``None`` for anything that is not a cookie we wrote (never raises)."""
    data = b64_json(value, READ_LIMIT)
    if not isinstance(data, dict) or not valid_id(data.get("v")):
        return None
    pending = data.get("t")
    loaded = [load_touch(raw) for raw in pending] if type(pending) is list else []
    return CookieState(
        visitor_id=data["v"],
        pending=[compact(touch) for touch in loaded if touch is not None],
        latest=load_latest(data.get("l")),
    )


def for_beacon(value: str | None, visitor_id: str) -> tuple[CookieState, bool]:
    """The cookie state a beacon answers with, and whether to write it: the browser's cookie
    with ``visitor_id`` (the server's id of this browser) as its visitor.

    The pending touches are the browser's own, whatever visitor id the snippet wrote beside
    them; a cookie already naming ``visitor_id`` is written again to refresh its lifetime.
    """
    state = decode(value)
    if state is None:
        return CookieState(visitor_id), True
    state.visitor_id = visitor_id
    return state, True


# -- the signed visitor cookie -------------------------------------------------------------------
#
# The cookie above is the snippet's to read and write, so its visitor id is the browser's word
# only. The server's own claim on the ``Touch`` rows of a browser is a second cookie, HttpOnly
# and signed with the app's secret key: the visitor id the server issued to that browser and when
# (its first contact). Only that id stores and claims ``Touch`` rows.

#: The salt of the signature (so no other signed value of the app can pass for one).
SIGNED_SALT = "flask-utm-tracker.visitor"


@dataclass(frozen=True)
class Browser:
    """The server's visitor id of a browser and its first contact (epoch milliseconds)."""

    visitor_id: str
    first_ms: int
    new: bool = False


#: The secret, or the secrets oldest first (``SECRET_KEY_FALLBACKS``, then ``SECRET_KEY``): the
#: newest signs, every one verifies, so rotating the key keeps the visitors' claims.
Secret = str | bytes | t.Sequence[str | bytes]


def _signer(secret: Secret) -> Signer:
    keys = [secret] if isinstance(secret, (str, bytes)) else list(secret)
    return Signer([k.encode("utf-8") if isinstance(k, str) else k for k in keys], salt=SIGNED_SALT)


def sign(secret: Secret, browser: Browser) -> str:
    """The signed cookie's value for ``browser``."""
    return _signer(secret).sign(f"{browser.visitor_id}.{browser.first_ms}").decode("ascii")


def unsign(secret: Secret, value: str | None) -> Browser | None:
    """The browser a signed cookie value names, or ``None`` for anything the server did not
    sign (never raises)."""
    if not value or len(value) > 200:
        return None
    try:
        payload = _signer(secret).unsign(value).decode("ascii")
    except (BadSignature, UnicodeError):
        return None
    visitor_id, _, first = payload.rpartition(".")
    if not valid_id(visitor_id) or not first.isdigit():
        return None
    return Browser(visitor_id, int(first))


#: One encoder for every cookie (``json.dumps`` with options builds a new one per call).
_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _b64(data: dict[str, t.Any]) -> str:
    raw = _json.encode(data).encode("utf-8", "replace")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def compact(touch: dict[str, t.Any]) -> dict[str, t.Any]:
    out = {k: v for k, v in touch.items() if v not in (None, "", {})}
    for key in ("url", "referrer"):
        if isinstance(out.get(key), str):
            out[key] = out[key][:URL_LIMIT]
    return out


def encode(state: CookieState) -> str:
    """Encode ``state``, dropping the oldest pending touches after the first until it fits."""
    pending = [compact(p) for p in state.pending]
    data: dict[str, t.Any] = {"v": state.visitor_id}
    if state.latest is not None:
        data["l"] = state.latest
    while True:
        if pending:
            data["t"] = pending
        else:
            data.pop("t", None)
        value = _b64(data)
        if len(value) <= MAX_LENGTH or not pending:
            return value
        if len(pending) > 1:
            del pending[1]
        else:
            pending = []


def latest_of(touch: dict[str, t.Any]) -> dict[str, t.Any]:
    """The ``l`` entry for ``touch``: its id, time and parameters."""
    return {"id": touch["id"], "ts": touch["ts"], "params": touch.get("params") or {}}
