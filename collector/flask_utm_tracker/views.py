"""The blueprint: ``POST /beacon`` and ``GET /snippet.js`` (and its parts); ``init_app`` adds the
dashboard's and the OpenAPI document's routes to it."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import typing as t
from dataclasses import replace
from importlib import resources

from flask import Blueprint, Request, Response, current_app, jsonify, request
from marshmallow import ValidationError
from werkzeug.datastructures import HeaderSet
from werkzeug.http import parse_set_header

from . import cookie as cookies
from .abuse import is_bot
from .schemas import MAX_BODY, MAX_TOUCHES, BeaconSchema, accepted_type
from .signals import touch_recorded
from .store import StoreError
from .touches import rows_of, signal_payload

if t.TYPE_CHECKING:
    from .extension import UTMTracker

logger = logging.getLogger("flask_utm_tracker")
_beacon_schema = BeaconSchema()
#: ``Cache-Control`` max-age of ``snippet.js`` (it is revalidated with its ETag after that).
SNIPPET_MAX_AGE = 3600


class BeaconError(Exception):
    """A beacon answered with a 4xx or 5xx and a JSON body."""

    def __init__(self, status: int, message: str, details: t.Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def error_response(status: int, message: str, details: t.Any = None) -> Response:
    body: dict[str, t.Any] = {"error": message}
    if details:
        body["details"] = details
    response = jsonify(body)
    response.status_code = status
    if status == 503:
        response.headers["Retry-After"] = "30"
    return response


def _same_origin(req: Request, origin: str) -> bool:
    return origin == f"{req.scheme}://{req.host}"


def _cors(response: Response, origin: str | None, allowed: frozenset[str]) -> Response:
    if origin and origin in allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.vary.add("Origin")
    return response


def read_beacon() -> dict[str, t.Any]:
    """Read and validate the beacon body (``text/plain`` or ``application/json``).

    :raises BeaconError: 413 past :data:`~flask_utm_tracker.schemas.MAX_BODY` bytes, 415 for
        another content type, 400 for anything that is not a valid beacon.
    """
    req = request._get_current_object()  # type: ignore[attr-defined]
    length = req.content_length
    if length is not None and length > MAX_BODY:
        raise BeaconError(413, f"The beacon body is larger than {MAX_BODY} bytes.")
    if not accepted_type(req.environ):
        raise BeaconError(415, "Send the beacon as text/plain or application/json.")
    body = req.stream.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise BeaconError(413, f"The beacon body is larger than {MAX_BODY} bytes.")
    if not body.strip():
        raise BeaconError(400, "The beacon body is empty; send a JSON object.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BeaconError(400, "The beacon body is not valid UTF-8.") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise BeaconError(400, "The beacon body is nested too deeply.") from None
    except ValueError as err:
        raise BeaconError(400, f"The beacon body is not valid JSON: {err}.") from None
    if not isinstance(data, dict):
        raise BeaconError(400, "The beacon body must be a JSON object with 'v' and 'touches'.")
    try:
        return t.cast(dict[str, t.Any], _beacon_schema.load(data))
    except ValidationError as err:
        raise BeaconError(400, "The beacon is invalid.", err.messages) from None
    except RecursionError:
        raise BeaconError(400, "The beacon body is nested too deeply.") from None


#: The built scripts ``GET /snippet.js`` and ``GET /snippet-<part>.js`` serve.
_SCRIPT_NAME = re.compile(r"snippet(-[a-z]{1,20})?\.js")


@functools.lru_cache(maxsize=8)
def _script_bytes(name: str) -> bytes | None:
    """A built script of the package's ``static/``, read once per process."""
    path = resources.files("flask_utm_tracker").joinpath(f"static/{name}")
    return path.read_bytes() if path.is_file() else None


class SharedResponse(Response):
    """A response that is the same for every visitor (a script, a document): shared caches may
    keep one copy, so the ``Vary: Cookie`` Flask adds when any hook of the request looked at
    the session (Flask-Login's looks at every request) does not apply to it.
    """

    @property
    def vary(self) -> HeaderSet:
        def on_update(header_set: HeaderSet) -> None:
            kept = [value for value in header_set if value.lower() != "cookie"]
            if kept:
                self.headers["Vary"] = ", ".join(kept)
            else:
                self.headers.pop("Vary", None)

        return parse_set_header(self.headers.get("Vary"), on_update)


def cacheable(body: bytes, mimetype: str, max_age: int) -> Response:
    """``body`` for shared caches: an ETag, ``Cache-Control: public, max-age``, ``304 Not
    Modified`` to ``If-None-Match``, no ``Vary: Cookie``, and no ``Date`` of its own (the server
    adds one)."""
    response = SharedResponse(body, mimetype=mimetype)
    response.set_etag(hashlib.sha256(body).hexdigest()[:32])
    response.cache_control.public = True
    response.cache_control.max_age = max_age
    response.make_conditional(request)
    response.headers.pop("Date", None)
    return response


def make_blueprint(tracker: UTMTracker) -> Blueprint:
    """The extension's blueprint, named ``utm_tracker``, with the beacon and the snippet (the
    dashboard and the OpenAPI document add their routes to it)."""
    bp = Blueprint("utm_tracker", __name__, template_folder="templates")

    @bp.route("/beacon", methods=["POST", "OPTIONS"])
    def beacon() -> Response:
        settings = tracker.settings()
        req = request._get_current_object()  # type: ignore[attr-defined]
        origin = req.environ.get("HTTP_ORIGIN")
        cross = bool(origin) and not _same_origin(req, origin)
        if cross and origin not in settings.allowed_origins:
            return error_response(
                403,
                f"Origin {origin} may not send beacons; add it to UTM_TRACKER_ALLOWED_ORIGINS.",
            )
        if req.method == "OPTIONS":
            response = Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "POST"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type"
            response.headers["Access-Control-Max-Age"] = "86400"
            return _cors(response, origin, settings.allowed_origins)
        try:
            response = _ingest(tracker, req)
        except BeaconError as err:
            response = error_response(err.status, err.message, err.details)
        return _cors(response, origin, settings.allowed_origins)

    @bp.route("/snippet.js", defaults={"part": ""})
    @bp.route("/snippet-<part>.js")
    def snippet(part: str) -> Response:
        name = f"snippet-{part}.js" if part else "snippet.js"
        body = _script_bytes(name) if _SCRIPT_NAME.fullmatch(name) else None
        if body is None:
            if part:
                return error_response(404, f"There is no {name}.")
            return error_response(404, "snippet.js is not built; run `npm run build`.")
        response = cacheable(body, "text/javascript", SNIPPET_MAX_AGE)
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    return bp


def _ingest(tracker: UTMTracker, req: Request) -> Response:
    """Store a beacon: ``Touch`` rows, and ``LeadSource`` rows at once when authenticated."""
    state_ = tracker.state()
    settings = state_.settings
    environ = req.environ
    wait = state_.limiter.hit(req.remote_addr or "")
    if wait is not None:
        response = error_response(429, "Too many beacons from this client; retry later.")
        response.headers["Retry-After"] = str(wait)
        return response
    if settings.respect_gpc and environ.get("HTTP_SEC_GPC") == "1":
        # Global Privacy Control: acknowledged, nothing stored.
        return Response(status=204)
    beacon = read_beacon()
    if settings.drop_bots and is_bot(req.user_agent.string):
        return Response(status=204)  # acknowledged, so that bots learn nothing
    # The server's visitor id of this browser stores the touches, never the body's "v": a
    # visitor id is a claim on stored touches (the signed cookie, issued here if missing).
    browser = tracker.browser(settings, create=True)
    visitor_id: str = browser.visitor_id if browser is not None else beacon["v"]
    context = tracker.context(settings)
    if browser is not None:
        context = replace(context, earliest_ms=browser.first_ms)
    rows = rows_of(beacon["touches"], context, visitor_id, validated=True)
    state, own_cookie = cookies.for_beacon(
        cookies.from_request(req, settings.cookie_name), visitor_id
    )

    user_id = tracker.current_user_id()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if rows:
        if user_id is not None:
            # Authenticated (session or request_loader): Touch rows claimed and LeadSource rows
            # for these touches, the cookie's pending ones and this browser's unclaimed ones.
            pending = rows_of(state.pending[:MAX_TOUCHES], context, visitor_id, validated=True)
            claim = browser.visitor_id if browser is not None else None
            both = [*rows, *pending][:MAX_TOUCHES]  # as many as an anonymous beacon holds
            if not tracker.write(user_id, both, claim=claim, store_touches=True):
                raise BeaconError(503, "The database is unavailable; the beacon was not stored.")
            state.pending = []
            stored = rows
        else:
            try:
                stored = tracker.store_anonymous(settings, visitor_id, rows)
            except StoreError:
                raise BeaconError(
                    503, "The database is unavailable; the beacon was not stored."
                ) from None
        if touch_recorded.has_receivers_for(app):
            for row in stored:
                touch_recorded.send(app, touch=signal_payload(row), user_id=user_id)
    response = Response(status=204)
    if own_cookie:
        tracker.set_cookie(response, state, settings, browser)
    return response
