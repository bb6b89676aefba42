"""A local stand-in for the ad platforms' conversion APIs (no internet in tests).

One threading HTTP server answers for every platform under its own path prefix (point a
destination's ``api_url`` at ``server.url + "/meta"``, ``"/google"``, ``"/tiktok"`` or
``"/linkedin"``). Each request is checked against the shape the platform documents (path,
headers, required fields, limits); a request that breaks it gets the platform's kind of 400 and
is listed in ``server.violations``, so a test can assert there were none. Answers can be
scripted (``server.script("meta", 500)``); otherwise a valid request gets the platform's
success answer.
"""

from __future__ import annotations

import collections
import json
import re
import threading
import time
import typing as t
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SHA256 = re.compile(r"[0-9a-f]{64}")
FBC = re.compile(r"fb\.1\.\d{13}\.\S+")
CURRENCY = re.compile(r"[A-Z]{3}")
META_ACTION_SOURCES = {
    "email",
    "website",
    "app",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
}
LINKEDIN_ID_TYPES = {
    "SHA256_EMAIL",
    "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID",
    "ACXIOM_ID",
    "ORACLE_MOAT_ID",
}


@dataclass
class Received:
    platform: str
    path: str
    #: Case-insensitive, as HTTP header names are (``email.message.Message``).
    headers: t.Any
    query: dict[str, list[str]]
    body: t.Any

    @property
    def events(self) -> list[dict[str, t.Any]]:
        """The events of the request, whatever the platform calls the list."""
        key = {"meta": "data", "tiktok": "data", "google": "events", "linkedin": "elements"}
        items = self.body.get(key[self.platform]) if isinstance(self.body, dict) else None
        return items if isinstance(items, list) else []


@dataclass
class Scripted:
    status: int
    body: t.Any = None
    headers: dict[str, str] = field(default_factory=dict)


class PlatformServer:
    """The stand-in server; use as a context manager."""

    def __init__(self, delay: float = 0.0) -> None:
        #: Seconds each answer waits (to make concurrent pushes overlap).
        self.delay = delay
        self.received: list[Received] = []
        self.violations: list[str] = []
        self._scripts: dict[str, collections.deque[Scripted]] = collections.defaultdict(
            collections.deque
        )
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                server._handle(self)

            def do_GET(self) -> None:  # noqa: N802
                self.send_error(405)

            def log_message(self, format: str, *args: t.Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> PlatformServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def script(
        self, platform: str, status: int, body: t.Any = None, *, times: int = 1, **headers: str
    ) -> None:
        """Answer the next ``times`` requests to ``platform`` with ``status`` and ``body``."""
        for _ in range(times):
            self._scripts[platform].append(Scripted(status, body, headers))

    def requests(self, platform: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.platform == platform]

    def events(self, platform: str) -> list[dict[str, t.Any]]:
        return [event for r in self.requests(platform) for event in r.events]

    # -- handling -----------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        platform, _, rest = parts.path.lstrip("/").partition("/")
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        received = Received(platform, "/" + rest, handler.headers, parse_qs(parts.query), body)
        check = CHECKS.get(platform)
        problems = check(received) if check else [f"unknown platform path {parts.path!r}"]
        with self._lock:
            self.received.append(received)
            self.violations += [f"{platform}: {p}" for p in problems]
            scripted = self._scripts[platform].popleft() if self._scripts[platform] else None
        if self.delay:
            time.sleep(self.delay)
        if scripted is not None:
            answer = scripted
        elif problems:
            answer = REFUSALS.get(platform, lambda m: Scripted(400, {"error": m}))(problems[0])
        else:
            answer = Scripted(200, SUCCESS[platform](received))
        data = json.dumps(answer.body if answer.body is not None else {}).encode()
        handler.send_response(answer.status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in answer.headers.items():
            handler.send_header(key.replace("_", "-"), value)
        handler.end_headers()
        handler.wfile.write(data)


# -- the documented shapes ----------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(timezone.utc)


def check_meta(r: Received) -> list[str]:
    """Meta Conversions API: POST /{pixel_id}/events, access_token, data[] of server events."""
    problems = []
    if not re.fullmatch(r"/\d+/events", r.path):
        problems.append(f"path {r.path!r} is not /<pixel id>/events")
    body = r.body if isinstance(r.body, dict) else {}
    if not (body.get("access_token") or r.query.get("access_token")):
        problems.append("no access_token")
    data = body.get("data")
    if not isinstance(data, list) or not data:
        return [*problems, "data must be a non-empty list"]
    if len(data) > 1000:
        problems.append(f"{len(data)} events in one request (at most 1000)")
    oldest = _now() - timedelta(days=7)
    for event in data:
        for key in ("event_name", "event_time", "action_source", "user_data"):
            if key not in event:
                problems.append(f"event without {key}")
        if not isinstance(event.get("event_time"), int):
            problems.append("event_time must be unix seconds (an integer)")
        elif datetime.fromtimestamp(event["event_time"], timezone.utc) < oldest:
            problems.append("event_time more than 7 days old")
        if event.get("action_source") not in META_ACTION_SOURCES:
            problems.append(f"action_source {event.get('action_source')!r}")
        url = event.get("event_source_url")
        if event.get("action_source") == "website" and url is not None and "?" in url:
            problems.append("event_source_url with a query string")
        user = event.get("user_data") or {}
        if not any(user.get(k) for k in ("em", "ph", "fbc", "fbp", "external_id")):
            problems.append("user_data without a customer information parameter")
        for key in ("em", "ph"):
            if key in user and not (
                isinstance(user[key], list) and all(SHA256.fullmatch(v) for v in user[key])
            ):
                problems.append(f"{key} must be a list of SHA-256 hashes")
        if "fbc" in user and not FBC.fullmatch(user["fbc"]):
            problems.append(f"fbc {user['fbc']!r} is not fb.1.<ms>.<fbclid>")
        custom = event.get("custom_data")
        if custom is not None and (
            not isinstance(custom.get("value"), (int, float))
            or not CURRENCY.fullmatch(str(custom.get("currency")))
        ):
            problems.append("custom_data needs a numeric value and an ISO 4217 currency")
    return problems


def check_google(r: Received) -> list[str]:
    """Data Manager API: POST /events:ingest, a Bearer token, destinations and events."""
    problems = []
    if r.path != "/events:ingest":
        problems.append(f"path {r.path!r} is not /events:ingest")
    if not r.headers.get("Authorization", "").startswith("Bearer "):
        problems.append("no Bearer token")
    body = r.body if isinstance(r.body, dict) else {}
    destinations = body.get("destinations") or []
    references = set()
    for destination in destinations:
        account = destination.get("operatingAccount") or {}
        if (
            account.get("accountType") != "GOOGLE_ADS"
            or not str(account.get("accountId", "")).isdigit()
        ):
            problems.append("operatingAccount must be a GOOGLE_ADS account id")
        if not destination.get("productDestinationId"):
            problems.append("destination without productDestinationId")
        references.add(destination.get("reference"))
    if not destinations:
        problems.append("no destinations")
    events = body.get("events")
    if not isinstance(events, list) or not events:
        return [*problems, "events must be a non-empty list"]
    if len(events) > 2000:
        problems.append(f"{len(events)} events in one request (at most 2000)")
    for event in events:
        try:
            datetime.fromisoformat(str(event.get("eventTimestamp")).replace("Z", "+00:00"))
        except ValueError:
            problems.append("eventTimestamp is not RFC 3339")
        for ref in event.get("destinationReferences", []):
            if ref not in references:
                problems.append(f"destinationReferences {ref!r} names no destination")
        ids = event.get("adIdentifiers") or {}
        if len([k for k in ("gclid", "gbraid", "wbraid") if ids.get(k)]) > 1:
            problems.append("more than one of gclid, gbraid, wbraid")
        user = event.get("userData")
        if user is not None:
            if body.get("encoding") != "HEX":
                problems.append("userData without encoding HEX")
            for identifier in user.get("userIdentifiers", []):
                for value in identifier.values():
                    if not SHA256.fullmatch(value):
                        problems.append("user identifier is not a hex SHA-256")
        if not ids and user is None:
            problems.append("event with neither adIdentifiers nor userData")
    return problems


def check_tiktok(r: Received) -> list[str]:
    """TikTok Events API: POST /event/track/, Access-Token, event_source web and data[]."""
    problems = []
    if r.path != "/event/track/":
        problems.append(f"path {r.path!r} is not /event/track/")
    if not r.headers.get("Access-Token"):
        problems.append("no Access-Token header")
    body = r.body if isinstance(r.body, dict) else {}
    if body.get("event_source") != "web" or not body.get("event_source_id"):
        problems.append("event_source must be web, with event_source_id (the pixel code)")
    data = body.get("data")
    if not isinstance(data, list) or not data:
        return [*problems, "data must be a non-empty list"]
    if len(data) > 1000:
        problems.append(f"{len(data)} events in one request (at most 1000)")
    for event in data:
        if not event.get("event") or not isinstance(event.get("event_time"), int):
            problems.append("event needs event and event_time (unix seconds)")
        user = event.get("user") or {}
        if not user:
            problems.append("event without user")
        for key in ("email", "phone"):
            if key in user and not SHA256.fullmatch(user[key]):
                problems.append(f"user.{key} is not a SHA-256")
    return problems


def check_linkedin(r: Received) -> list[str]:
    """LinkedIn Conversions API: POST /conversionEvents as BATCH_CREATE with its headers."""
    problems = []
    if r.path != "/conversionEvents":
        problems.append(f"path {r.path!r} is not /conversionEvents")
    headers = r.headers
    if not headers.get("Authorization", "").startswith("Bearer "):
        problems.append("no Bearer token")
    if not re.fullmatch(r"\d{6}", headers.get("LinkedIn-Version", "")):
        problems.append("LinkedIn-Version must be YYYYMM")
    if headers.get("X-Restli-Protocol-Version") != "2.0.0":
        problems.append("X-Restli-Protocol-Version must be 2.0.0")
    if headers.get("X-RestLi-Method") != "BATCH_CREATE":
        problems.append("a batch needs X-RestLi-Method: BATCH_CREATE")
    body = r.body if isinstance(r.body, dict) else {}
    elements = body.get("elements")
    if not isinstance(elements, list) or not elements:
        return [*problems, "elements must be a non-empty list"]
    if len(elements) > 5000:
        problems.append(f"{len(elements)} events in one request (at most 5000)")
    oldest = _now() - timedelta(days=90)
    for event in elements:
        if not re.fullmatch(r"urn:lla:llaPartnerConversion:\d+", str(event.get("conversion"))):
            problems.append("conversion must be urn:lla:llaPartnerConversion:<id>")
        at = event.get("conversionHappenedAt")
        if not isinstance(at, int) or datetime.fromtimestamp(at / 1000, timezone.utc) < oldest:
            problems.append("conversionHappenedAt must be epoch ms within 90 days")
        ids = (event.get("user") or {}).get("userIds") or []
        if not ids or any(i.get("idType") not in LINKEDIN_ID_TYPES for i in ids):
            problems.append("user.userIds needs at least one known idType")
        value = event.get("conversionValue")
        if value is not None and not (
            CURRENCY.fullmatch(str(value.get("currencyCode")))
            and isinstance(value.get("amount"), str)
        ):
            problems.append("conversionValue needs currencyCode and a string amount")
    return problems


CHECKS: dict[str, t.Callable[[Received], list[str]]] = {
    "meta": check_meta,
    "google": check_google,
    "tiktok": check_tiktok,
    "linkedin": check_linkedin,
}

SUCCESS: dict[str, t.Callable[[Received], t.Any]] = {
    "meta": lambda r: {"events_received": len(r.events), "messages": [], "fbtrace_id": "AbC"},
    "google": lambda r: {"requestId": "request-1"},
    "tiktok": lambda r: {"code": 0, "message": "OK", "request_id": "r1", "data": {}},
    "linkedin": lambda r: {"elements": [{"status": 201} for _ in r.events]},
}


def meta_error(message: str, code: int = 100) -> dict[str, t.Any]:
    return {
        "error": {
            "message": "Invalid parameter",
            "type": "OAuthException",
            "code": code,
            "error_user_msg": message,
            "fbtrace_id": "AbC",
        }
    }


REFUSALS: dict[str, t.Callable[[str], Scripted]] = {
    "meta": lambda m: Scripted(400, meta_error(m)),
    "google": lambda m: Scripted(
        400, {"error": {"code": 400, "message": m, "status": "INVALID_ARGUMENT"}}
    ),
    "tiktok": lambda m: Scripted(200, {"code": 40002, "message": m, "request_id": "r1"}),
    "linkedin": lambda m: Scripted(400, {"status": 400, "message": m}),
}
