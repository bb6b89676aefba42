"""Touches born on the app's own pages: the request hook, ``stash_touch`` and the session stash.

The hook runs ``after_request`` on every request of the host app. A request with no query string,
no ``Referer``, no visitor cookie, no login and no stash leaves after reading the environ alone.
Otherwise a tagged landing becomes a pending touch in the visitor cookie, and an authenticated
request (or a login in this request, through Flask-Login's ``user_logged_in``) writes the
cookie's pending touches and the session's stashed touches as the user's ``LeadSource`` rows.

The session is read through :data:`flask.session` only when it can hold a stash: the request
carries the session cookie, logged in, or called :func:`stash_touch`. Flask then adds
``Vary: Cookie`` as it should; a page the tracker leaves alone is not marked.
"""

from __future__ import annotations

import logging
import typing as t
from dataclasses import replace

from flask import (
    Flask,
    Request,
    Response,
    current_app,
    g,
    has_request_context,
    redirect,
    request,
    session,
)
from werkzeug.wrappers import Response as BaseResponse

from . import cookie as cookies
from .config import EXTENSION, Settings
from .params import TRACKED, from_query, normalize, strip_query
from .schemas import load_touch
from .signals import touch_recorded
from .touches import Context, fields, host_of, new_id, now_ms, rows_of, signal_payload, stable_id

if t.TYPE_CHECKING:
    from .extension import UTMTracker

logger = logging.getLogger("flask_utm_tracker")

#: Session key of the touches stashed by :func:`stash_touch`.
SESSION_KEY = "_utm_tracker_touches"
#: The session keys django-utm-tracker's README tells applications to set by hand.
SEED_SESSION_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
#: ``g`` attributes: the user id logged in during this request; a stash made in it.
_LOGIN = "_utm_tracker_login"
_STASHED = "_utm_tracker_stashed"
#: ``g`` attributes: the touches of a ``_utm`` link token; the linker's redirect.
_LINKED = "_utm_tracker_linked"
_LINK_REDIRECT = "_utm_tracker_link_redirect"
#: Most touches written for a user by one request (the cookie's and the session's together).
MAX_PER_REQUEST = 50


#: The query parameter of the cross-domain link token, and the most of it read.
LINK_PARAM = "_utm"
LINK_MAX_LENGTH = 2048
LINK_MAX_TOUCHES = 20


def install(app: Flask, tracker: UTMTracker, settings: Settings) -> None:
    """Register the request hooks on ``app``."""

    def follow_link() -> BaseResponse | None:
        return adopt_link_token(tracker, settings)

    def track_request(response: Response) -> Response:
        return after_request(tracker, settings, response)

    app.before_request(follow_link)
    app.after_request(track_request)


def decode_link_token(token: str) -> list[dict[str, t.Any]] | None:
    """The touches of a ``_utm`` link token (base64url of ``{"at": ms, "t": [touches]}``), each
    checked by the beacon's touch schema; ``None`` for anything else (never raises)."""
    data = cookies.b64_json(token, LINK_MAX_LENGTH)
    if not isinstance(data, dict) or type(data.get("at")) not in (int, float):
        return None
    touches = data.get("t")
    if type(touches) is not list or not 1 <= len(touches) <= LINK_MAX_TOUCHES:
        return None
    loaded = [load_touch(touch) for touch in touches]
    if any(touch is None for touch in loaded):
        return None
    return [cookies.compact(touch) for touch in loaded if touch is not None]


def adopt_link_token(tracker: UTMTracker, settings: Settings) -> BaseResponse | None:
    """The ``before_request`` hook of the cross-domain linker: a request carrying ``_utm`` adds
    the token's touches to this browser's own visitor cookie (each touch id once, their URLs
    stripped as every stored URL is), written by this request's :func:`after_request`, so a
    login in the same request (a sign-up form posted with ``_utm``) writes them at once. A
    ``GET`` is redirected to the same URL without ``_utm``. A token only adds touches to the
    browser that opens it: the ``Touch`` rows of other visitor ids stay theirs. A malformed
    token is dropped silently.
    """
    query = request.environ.get("QUERY_STRING", "")
    if LINK_PARAM not in query:
        return None
    endpoint = request.endpoint
    if endpoint is not None and endpoint.startswith(EXTENSION + "."):
        return None
    parts = query.split("&")
    kept = [part for part in parts if part.split("=", 1)[0] not in (LINK_PARAM, "")]
    if len(kept) == len(parts):
        return None  # "_utm" only inside another parameter
    tokens = [part.split("=", 1)[1] for part in parts if part.startswith(LINK_PARAM + "=")]
    gpc = settings.respect_gpc and request.environ.get("HTTP_SEC_GPC") == "1"
    touches = decode_link_token(tokens[0]) if len(tokens) == 1 and not gpc else None
    if touches:
        keep = (*settings.custom_tags, *settings.keep_query_params)
        for touch in touches:
            for key in ("url", "referrer"):
                if touch.get(key):
                    touch[key] = strip_query(touch[key], keep)
        setattr(g, _LINKED, touches)
    if request.method != "GET":
        return None
    setattr(g, _LINK_REDIRECT, True)
    target = request.base_url + ("?" + "&".join(kept) if kept else "")
    response = redirect(target, code=302)
    response.headers["Cache-Control"] = "no-store"
    return response


def _adopt(state: cookies.CookieState, touches: list[dict[str, t.Any]]) -> None:
    """Add a link token's touches to ``state``, each id once. The latest touch becomes the
    newest of them, dated now (when the visitor arrived by the link), so that the link's own
    referral from the marketing site, right after, makes no touch of its own."""
    known = {touch["id"] for touch in state.pending}
    if state.latest is not None:
        known.add(state.latest["id"])
    for touch in touches:
        if touch["id"] not in known:
            known.add(touch["id"])
            state.pending.append(touch)
    newest = max(touches, key=lambda touch: touch.get("ts") or 0)
    state.latest = {**cookies.latest_of({**newest, "ts": now_ms()})}


def on_login(sender: Flask, user: t.Any = None, **extra: t.Any) -> None:
    """Flask-Login's ``user_logged_in``: remember who logged in, for this request's hook."""
    state = sender.extensions.get(EXTENSION)
    if state is not None and has_request_context():
        setattr(g, _LOGIN, (state.tracker.user_id_of(user),))


def _session_cookie(app: Flask) -> str:
    return str(app.config.get("SESSION_COOKIE_NAME") or "session")


def _may_have_stash(app: Flask) -> bool:
    """Whether the session can hold a stash, judged without opening it."""
    if g.get(_STASHED) or g.get(_LOGIN) is not None:
        return True
    return cookies.from_request(request, _session_cookie(app)) is not None


def _has_stash() -> bool:
    return any(key in session for key in (SESSION_KEY, *SEED_SESSION_KEYS))


def _stash() -> list[dict[str, t.Any]]:
    """The touches stashed in the session: by :func:`stash_touch` and by the seed's keys."""
    stash = session.get(SESSION_KEY)
    raws = [raw for raw in stash if isinstance(raw, dict)] if isinstance(stash, list) else []
    seed = {k: session[k] for k in SEED_SESSION_KEYS if isinstance(session.get(k), str)}
    if seed:
        id_parts = [f"{k}={v}" for k, v in sorted(seed.items())]
        raws.append({"id": stable_id("session", *id_parts), "ts": now_ms(), "params": seed})
    return raws


def _clear_stash() -> None:
    for key in (SESSION_KEY, *SEED_SESSION_KEYS):
        session.pop(key, None)


def candidate(settings: Settings, req: Request) -> tuple[dict[str, str], str] | None:
    """The tracked parameters and external referrer of this request, if it may be a touch."""
    environ = req.environ
    query = environ.get("QUERY_STRING")
    referrer = environ.get("HTTP_REFERER", "")
    if not query and not referrer:
        return None
    if not settings.capture_querystring or req.method not in ("GET", "HEAD"):
        return None
    if settings.respect_gpc and environ.get("HTTP_SEC_GPC") == "1":
        return None
    params = from_query(query, settings.custom_tags) if query else {}
    if referrer:
        host = host_of(referrer)
        if not host or host == req.host.rsplit(":", 1)[0].lower():
            referrer = ""  # the site's own pages
    if not params and not referrer:
        return None
    return params, referrer


def is_new_touch(
    params: t.Mapping[str, str], latest: t.Mapping[str, t.Any] | None, now: int, timeout: int
) -> bool:
    """Campaign parameters or a click ID make a new touch unless identical to the latest; a
    referral only when the latest touch is older than the session timeout (seconds).
    """
    if latest is None:
        return True
    if params:
        return dict(params) != latest.get("params")
    ts = latest.get("ts")
    return not isinstance(ts, int) or now - ts > timeout * 1000


def after_request(tracker: UTMTracker, settings: Settings, response: Response) -> Response:
    """The request hook: capture, then write what an authenticated request may write."""
    req = request
    environ = req.environ
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    login = g.pop(_LOGIN, None)
    if (
        not environ.get("QUERY_STRING")
        and not environ.get("HTTP_REFERER")
        and settings.cookie_name not in environ.get("HTTP_COOKIE", "")
        and login is None
        and not g.get(_STASHED)
        and not g.get(_LINKED)
    ):
        return response  # a plain request: nothing to track
    endpoint = req.endpoint
    if endpoint is not None and (endpoint == "static" or endpoint.startswith(EXTENSION + ".")):
        return response
    try:
        _track(tracker, settings, app, response, login)
    except Exception:  # tracking must never break a page
        logger.exception("flask-utm-tracker failed on %s; the page is unaffected.", req.path)
    return response


def _track(
    tracker: UTMTracker,
    settings: Settings,
    app: Flask,
    response: Response,
    login: tuple[t.Any] | None,
) -> None:
    state = cookies.decode(cookies.from_request(request, settings.cookie_name))
    browser = tracker.browser(settings)
    changed = False
    linked = g.get(_LINKED)
    if linked:
        browser = browser or tracker.browser(settings, create=True)
        visitor = browser.visitor_id if browser else state.visitor_id if state else new_id()
        state = state or cookies.CookieState(visitor)
        state.visitor_id = visitor
        _adopt(state, linked)
        changed = True
    page_view = response.status_code < 500 and not g.get(_LINK_REDIRECT)
    found = candidate(settings, request) if page_view else None
    context = tracker.context(settings)
    if found is not None:
        params, referrer = found
        now = now_ms()
        keep = (*context.custom_tags, *context.keep_params)
        raw = {"id": new_id(), "ts": now, "url": strip_query(request.url, keep)}
        if referrer:
            raw["referrer"] = referrer
        if params:
            raw["params"] = params
        latest = state.latest if state else None
        if is_new_touch(params, latest, now, settings.session_timeout):
            browser = browser or tracker.browser(settings, create=True)
            visitor = browser.visitor_id if browser else state.visitor_id if state else new_id()
            # Tracked parameters always make a touch; a bare referrer only when it is neither
            # internal nor spam, which takes the classifier to know. The row fields are built
            # here only for that, or for a touch_recorded receiver: the login builds them anyway.
            signal = touch_recorded.has_receivers_for(app)
            row = fields(raw, context, visitor) if signal or not params else None
            if row is not None or params:
                if state is None:
                    state = cookies.CookieState(visitor)
                state.visitor_id = visitor
                state.pending.append(raw)
                state.latest = cookies.latest_of(raw)
                changed = True
                if row is not None and signal:
                    touch_recorded.send(app, touch=signal_payload(row), user_id=None)

    pending = state.pending if state else []
    stashed = _may_have_stash(app) and _has_stash()
    if pending or stashed or login is not None:
        user_id = login[0] if login is not None else tracker.current_user_id()
        if user_id is not None:
            # The browser's own touches: in its cookie, in its session, and the Touch rows its
            # signed cookie names. A visitor id the browser merely claims never claims rows.
            visitor_id = browser.visitor_id if browser else state.visitor_id if state else None
            if browser is not None:
                context = replace(context, earliest_ms=browser.first_ms)
            # Checked already: the cookie's and a link token's touches when read, and the
            # touch of this request is the hook's own.
            rows = rows_of(pending[:MAX_PER_REQUEST], context, visitor_id, validated=True)
            if stashed:
                stash = _stash()
                extra = tuple(
                    k
                    for raw in stash
                    for k in raw.get("params", {})
                    if k not in TRACKED and k not in context.custom_tags
                )
                stash_context = replace(
                    context, custom_tags=(*context.custom_tags, *dict.fromkeys(extra))
                )
                rows += rows_of(stash[:MAX_PER_REQUEST], stash_context, visitor_id)
            claim = browser.visitor_id if browser is not None else None
            if tracker.write(user_id, rows[:MAX_PER_REQUEST], claim=claim):
                if stashed:
                    _clear_stash()
                if state is not None and state.pending:
                    state.pending = []
                    changed = True
    if (changed or (browser is not None and browser.new)) and state is not None:
        tracker.set_cookie(response, state, settings, browser)


def stash_touch(
    *,
    source: str | None = None,
    medium: str | None = None,
    campaign: str | None = None,
    term: str | None = None,
    content: str | None = None,
    **custom: str,
) -> str:
    """Record a touch by hand (a referral link, an invite token). It becomes a ``LeadSource`` row
    at the end of this request when the user is logged in, else at their login::

        stash_touch(source="internal", medium="referral", campaign="july", term=token)

    Extra keyword arguments are kept in ``custom_tags``.

    :return: the touch id.
    :raises ValueError: no value given.
    """
    if not has_request_context():
        raise RuntimeError(
            "stash_touch() needs a request: call it from a view, not at import time or in a CLI."
        )
    given = {
        "utm_source": source,
        "utm_medium": medium,
        "utm_campaign": campaign,
        "utm_term": term,
        "utm_content": content,
    }
    custom_tags = tuple(k.lower() for k in custom)
    params = normalize([*given.items(), *custom.items()], custom_tags)
    if not params:
        raise ValueError("stash_touch() needs at least one non-empty value, such as source=...")
    touch_id = new_id()
    raw = {"id": touch_id, "ts": now_ms(), "params": params}
    stash = session.get(SESSION_KEY)
    session[SESSION_KEY] = [*(stash if isinstance(stash, list) else []), raw]
    setattr(g, _STASHED, True)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    state = app.extensions.get(EXTENSION)
    if state is not None and touch_recorded.has_receivers_for(app):
        context = state.tracker.context(state.settings)
        row = fields(raw, Context(custom_tags=(*context.custom_tags, *custom_tags)), None)
        if row is not None:
            touch_recorded.send(app, touch=signal_payload(row), user_id=None)
    return touch_id
