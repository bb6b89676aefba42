"""The beacon lane: a new visitor's beacon answered before Flask builds a request context.

About a third of a beacon's cost in a typical host app is Flask's own machinery, which a beacon
from a visitor with no session has no use for: the request and app contexts, the signed session,
URL matching, the hooks, the response object. The lane is a WSGI middleware that
:meth:`~flask_utm_tracker.UTMTracker.init_app` puts directly around the Flask app's own
``wsgi_app`` (inside ``ProxyFix`` and any middleware added later). It answers
``POST <UTM_TRACKER_URL_PREFIX>/beacon`` itself only when Flask would run nothing for it but
the beacon view, and only on the view's success path: the same validation, fields, per-visitor
cap, group commit and visitor cookie as the view, hence the same rows and the same 204.

Everything else goes to Flask unchanged (the body the lane read is handed back as it was):

- a request that carries the host's session cookie or Flask-Login's remember cookie, an app
  with a Flask-Login request loader, or ``touch_recorded`` receivers (the view handles users and
  signals);
- an app with any ``before_request``, ``after_request``, ``teardown_request``,
  ``teardown_appcontext`` function or URL value preprocessor, app-wide or on the blueprint, other
  than ones known to do nothing for an anonymous beacon (the tracker's own hook, Flask-Login's
  remember-cookie refresh, Flask-WTF's CSRF check with the beacon exempted, Flask-SQLAlchemy's
  session removal), or with receivers of Flask's request and app-context signals (APM tools):
  so a host's IP ban, maintenance mode or Flask-Limiter default limits still apply to beacons;
- a Flask subclass that overrides how a request is dispatched (``ensure_sync`` included), or a
  patch of those methods on the class; another request, response or session class, or settings
  made on ``flask.Request`` (``trusted_hosts``, ``max_content_length``) or ``flask.Response``;
  ``TRUSTED_HOSTS``, ``SERVER_NAME``, ``REMEMBER_COOKIE_REFRESH_EACH_REQUEST``, host or subdomain
  matching; another view at the beacon's route, or the tracker's view wrapped by the host;
- the app's first request (its setup is finished only then), and a test client's ``with
  client:`` (which keeps the request context for the test to look at);
- anything the view answers with other than 204: a cross-origin or preflight request,
  ``Sec-GPC``, a crawler, an invalid, oversized or chunked body (the length read as werkzeug
  reads it), a beacon the plain-Python check does not accept (marshmallow gives the 400
  message), a rate-limited client (the limit is counted once, here, and the view answers 429),
  a failed write (the view answers 503 without writing again).

A failure inside the lane hands the beacon to Flask too, and is logged (raised when the app is
``testing``, so that a host's tests see it). ``UTM_TRACKER_BEACON_LANE = False`` turns it off.
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import typing as t

import flask
import flask.signals
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from werkzeug.wsgi import get_content_length, get_host

from . import cookie as cookies
from . import ingest
from .schemas import MAX_BODY, accepted_type
from .signals import touch_recorded

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .extension import UTMTracker

#: Environ keys by which the lane tells the view what it already did: counted the beacon
#: against the rate limit (the value: ``None``, or the seconds to wait), failed to store it.
RATE_COUNTED = "flask_utm_tracker.lane.rate_limit"
UNAVAILABLE = "flask_utm_tracker.lane.unavailable"
logger = logging.getLogger("flask_utm_tracker")
ENDPOINT = "utm_tracker.beacon"
_BLUEPRINT = "utm_tracker"

#: Flask methods on a request's way; a subclass overriding one of them, or a patch of one of
#: them on the class (an APM agent's), gets no lane.
_DISPATCH = (
    "wsgi_app",
    "ensure_sync",
    "async_to_sync",
    "handle_exception",
    "handle_user_exception",
    "log_exception",
    "request_context",
    "app_context",
    "full_dispatch_request",
    "preprocess_request",
    "dispatch_request",
    "finalize_request",
    "make_response",
    "process_response",
    "do_teardown_request",
    "do_teardown_appcontext",
    "create_url_adapter",
)
#: Flask's signals sent for every request; a receiver (an APM tool, say) gets no lane.
_SIGNALS = (
    flask.signals.request_started,
    flask.signals.request_finished,
    flask.signals.request_tearing_down,
    flask.signals.got_request_exception,
    flask.signals.appcontext_pushed,
    flask.signals.appcontext_popped,
    flask.signals.appcontext_tearing_down,
)
#: Hooks of other extensions that do nothing for a beacon of a visitor with no session and no
#: remember cookie (module, qualified name).
_LOGIN_REFRESH = ("flask_login.login_manager", "LoginManager._update_remember_cookie")
_CSRF_CHECK = ("flask_wtf.csrf", "CSRFProtect.init_app.<locals>.csrf_protect")
_SESSION_REMOVAL = ("flask_sqlalchemy.extension", "SQLAlchemy._teardown_session")


#: ``flask.Request.max_content_length`` as Flask defines it (from ``MAX_CONTENT_LENGTH``).
_MAX_CONTENT_LENGTH = vars(flask.Request).get("max_content_length")


def _name(func: t.Any) -> tuple[str, str]:
    func = getattr(func, "__func__", func)
    return getattr(func, "__module__", ""), getattr(func, "__qualname__", "")


def _flask_own(cls: type[Flask], name: str) -> bool:
    """Whether ``cls.<name>`` is Flask's own method: not overridden by a subclass, nor replaced
    on the class by a patch (which keeps its name with ``functools.wraps``, and a ``__wrapped__``).
    """
    func = getattr(cls, name, None)
    module = getattr(func, "__module__", None) or ""
    return (
        func is not None
        and module.startswith(("flask.app", "flask.sansio.app"))
        and not hasattr(func, "__wrapped__")
    )


def _session_access_marks() -> bool:
    """Whether this Flask marks the session accessed (so that it adds ``Vary: Cookie``) whenever
    a request's session is looked at, as Flask 3.1.3 does, or only when a key is read."""
    from flask.ctx import RequestContext
    from flask.sessions import SecureCookieSession

    prop = inspect.getattr_static(RequestContext, "session", None)
    if not isinstance(prop, property) or prop.fget is None:
        return False  # Flask 3.0: a plain attribute
    try:
        ctx = object.__new__(RequestContext)  # no app, no push: nothing of a host runs
        ctx._session = SecureCookieSession()
        return bool(prop.fget(ctx).accessed)
    except Exception:  # pragma: no cover - another layout: assume it does not
        return False


def install(app: Flask, tracker: UTMTracker, own_hook: t.Callable[..., t.Any]) -> bool:
    """Put the lane directly around ``app``'s own ``wsgi_app`` (through ``ProxyFix`` layers).

    :return: whether it was installed (not when ``app.wsgi_app`` is already wrapped by another
        middleware, which the lane would otherwise bypass, nor for a Flask subclass that
        overrides a dispatch method).
    """
    cls = type(app)
    if not all(_flask_own(cls, name) for name in _DISPATCH):
        return False
    view = app.view_functions.get(ENDPOINT)
    if view is None:
        return False
    from werkzeug.middleware.proxy_fix import ProxyFix

    parent: t.Any = None
    inner: t.Any = app.wsgi_app
    while isinstance(inner, ProxyFix):
        parent, inner = inner, inner.app
    if getattr(inner, "__self__", None) is not app or getattr(inner, "__func__", None) is not (
        Flask.wsgi_app
    ):
        return False
    lane = BeaconLane(app, tracker, inner, own_hook, view)
    if parent is None:
        app.wsgi_app = lane
    else:
        parent.app = lane
    return True


class BeaconLane:
    """The WSGI middleware; see the module's documentation."""

    def __init__(
        self,
        app: Flask,
        tracker: UTMTracker,
        wsgi_app: WSGIApplication,
        own_hook: t.Callable[..., t.Any],
        view: t.Callable[..., t.Any],
    ) -> None:
        self.app = app
        self.tracker = tracker
        self.wsgi_app = wsgi_app
        self.own_hook = own_hook
        #: The beacon view as the tracker registered it (a host may wrap it later).
        self.view = view
        settings = tracker.settings(app)
        self.path = f"{settings.url_prefix.rstrip('/')}/beacon"
        self._ready: bool | None = None  # the route and the engine, checked after 1st request
        self._engine: t.Any = None
        self._harmless: dict[t.Any, bool] = {}
        self._vary = _session_access_marks()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> t.Any:
        if environ.get("PATH_INFO") != self.path or environ.get("REQUEST_METHOD") != "POST":
            return self.wsgi_app(environ, start_response)
        try:
            answered = self._beacon(environ, start_response)
        except Exception:  # the view does it again, and answers as it does
            if self.app.testing:
                raise  # a lane bug must fail the host's tests, not hide behind the view
            logger.exception("The beacon lane failed; the beacon goes through Flask.")
            answered = None
        if answered is None:
            return self.wsgi_app(environ, start_response)
        return answered

    # -- when the lane may answer ----------------------------------------------------------------

    def _prepare(self) -> bool:
        """Once, after the app's first request (when its setup is finished): whether the
        beacon's route is ours and plain, and the engine to write with."""
        app = self.app
        if not all(_flask_own(type(app), name) for name in _DISPATCH):
            return False  # patched after init_app (an APM agent set up late)
        url_map = app.url_map
        if url_map.host_matching or app.subdomain_matching or url_map.default_subdomain:
            return False
        try:
            endpoint, args = url_map.bind("localhost").match(self.path, "POST")
        except Exception:
            return False
        if endpoint != ENDPOINT or args:
            return False
        # Only after _transparent(): no receiver or teardown of the host's sees this context.
        with app.app_context():
            self._engine = self.tracker.db.engine
        return True

    def _is_harmless(self, func: t.Any) -> bool:
        known = self._harmless.get(func)
        if known is None:
            name = _name(func)
            if name == _CSRF_CHECK:
                return self._csrf_exempt()  # not cached: exemptions can come later
            known = func is self.own_hook or name in (_LOGIN_REFRESH, _SESSION_REMOVAL)
            self._harmless[func] = known
        return known

    def _login_hook(self) -> bool:
        """Whether Flask-Login's remember-cookie hook runs after every request."""
        return any(_name(f) == _LOGIN_REFRESH for f in self.app.after_request_funcs.get(None, ()))

    def _csrf_exempt(self) -> bool:
        """Whether Flask-WTF's ``CSRFProtect`` lets the beacon through."""
        from .extension import BEACON_VIEW

        csrf = self.app.extensions.get("csrf")
        return BEACON_VIEW in getattr(csrf, "_exempt_views", ()) and _name(self.view) == (
            "flask_utm_tracker.views",
            "make_blueprint.<locals>.beacon",
        )

    def _transparent(self) -> bool:
        """Whether Flask would run nothing for an anonymous beacon but the view (checked on
        every beacon: hooks and receivers can be added at any time)."""
        app = self.app
        for hooks in (app.before_request_funcs, app.after_request_funcs):
            for key in (None, _BLUEPRINT):
                for func in hooks.get(key, ()):
                    if not self._is_harmless(func):
                        return False
        for key in (None, _BLUEPRINT):
            if app.teardown_request_funcs.get(key) or app.url_value_preprocessors.get(key):
                return False
        for func in app.teardown_appcontext_funcs:
            if not self._is_harmless(func):
                return False
        for signal in _SIGNALS:
            if signal.receivers and signal.has_receivers_for(app):
                return False
        if touch_recorded.receivers and touch_recorded.has_receivers_for(app):
            return False
        config = app.config
        if (
            config.get("TRUSTED_HOSTS")
            or config.get("SERVER_NAME")  # Flask 3.0 answers 404 to another host
            or config.get("REMEMBER_COOKIE_REFRESH_EACH_REQUEST")  # Flask-Login writes the session
        ):
            return False
        request_class = app.request_class
        return (
            request_class is flask.Request
            and request_class.trusted_hosts is None
            and vars(request_class).get("max_content_length") is _MAX_CONTENT_LENGTH
            and app.response_class is flask.Response
            and flask.Response.default_mimetype == "text/html"
            and type(app.session_interface) is SecureCookieSessionInterface
            and app.view_functions.get(ENDPOINT) is self.view
            and getattr(getattr(app, "login_manager", None), "_request_callback", None) is None
        )

    # -- the beacon --------------------------------------------------------------------------

    def _beacon(self, environ: WSGIEnvironment, start_response: StartResponse) -> t.Any:
        """The 204 of a stored beacon, or ``None`` to let Flask answer."""
        app = self.app
        if self._ready is False or "werkzeug.debug.preserve_context" in environ:
            return None  # ``with client:`` in a test keeps the request context: Flask's to make
        if not getattr(app, "_got_first_request", False) or not self._transparent():
            return None
        if self._ready is None:
            self._ready = self._prepare()
            if not self._ready:
                return None
        state = self.tracker.state(app)
        settings = state.settings
        header = environ.get("HTTP_COOKIE", "")
        if header and (
            app.config.get("SESSION_COOKIE_NAME", "session") in header
            or app.config.get("REMEMBER_COOKIE_NAME", "remember_token") in header
        ):
            return None  # maybe a user: the view asks Flask-Login
        host = get_host(environ)
        scheme = environ.get("wsgi.url_scheme", "http")
        origin = environ.get("HTTP_ORIGIN")
        if origin and origin != f"{scheme}://{host}":
            return None  # cross-origin: the view checks the allow-list and answers with CORS
        if settings.respect_gpc and environ.get("HTTP_SEC_GPC") == "1":
            return None
        if settings.drop_bots and ingest.is_bot(environ.get("HTTP_USER_AGENT")):
            return None
        if not accepted_type(environ):
            return None
        length = get_content_length(environ)  # werkzeug's reading: None when chunked
        limit = app.config.get("MAX_CONTENT_LENGTH")
        if length is None or not 0 < length <= MAX_BODY or (limit is not None and length > limit):
            return None
        # Counted before the body is read, as the view counts it: a client over its limit
        # costs no read and no parse.
        wait = environ[RATE_COUNTED] = state.limiter.hit(environ.get("REMOTE_ADDR") or "")
        if wait is not None:
            return None
        try:
            body = environ["wsgi.input"].read(length)
        except Exception:
            body = b""  # the client went away: the view answers as werkzeug does
        # From here on the view must be able to read the body again.
        environ["wsgi.input"] = io.BytesIO(body)
        if len(body) != length:
            return None
        try:
            data = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):
            return None
        beacon = ingest.plain_beacon(data) if isinstance(data, dict) else None
        if beacon is None:
            return None  # marshmallow decides, with its messages
        visitor_id: str = beacon["v"]
        tracker = self.tracker
        rows = ingest.rows_of(beacon["touches"], tracker.context(settings, host), visitor_id)
        value = cookies.from_header(header, settings.cookie_name) if header else None
        cookie, own_cookie = cookies.for_beacon(value, visitor_id)
        if rows:
            try:
                tracker.store_anonymous(self._engine, settings, visitor_id, rows, returning=False)
            except ingest.StoreError:
                environ[UNAVAILABLE] = True
                return None
        # The view's 204, with the Vary that Flask adds there once the session was looked at
        # (since Flask 3.1.3, looking at it is enough: Flask-Login's hook does, and Flask saves
        # a session only when there is a secret key).
        headers = [("Content-Type", "text/html; charset=utf-8")]
        if own_cookie:
            headers.append(("Set-Cookie", tracker.cookie_header(cookie, settings, scheme)))
        if self._vary and app.secret_key and self._login_hook():
            headers.append(("Vary", "Cookie"))
        start_response("204 NO CONTENT", headers)
        return []
