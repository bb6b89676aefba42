"""``UTMTracker``: registration, the request hook, reconciliation at login, ``stash_touch``."""

from __future__ import annotations

import functools
import logging
import re
import threading
import typing as t
from dataclasses import dataclass

import sqlalchemy as sa
from flask import (
    Flask,
    Request,
    Response,
    current_app,
    g,
    has_request_context,
    request,
    session,
)
from flask.globals import request_ctx
from flask_login import user_logged_in
from markupsafe import Markup, escape
from marshmallow import ValidationError

from . import attribution, conversions, destinations, ingest, reconcile, rollup
from . import cookie as cookies
from .abuse import RateLimiter
from .config import ConfigError, Settings, load_settings
from .ingest import plain_touch
from .models import make_models, user_pk
from .params import TRACKED, from_query, normalize
from .schemas import TouchSchema
from .signals import lead_source_created, touch_recorded
from .touches import Context, fields, host_of, new_id, now_ms, stable_id

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

logger = logging.getLogger("flask_utm_tracker")

EXTENSION = "utm_tracker"
#: Session key of the touches stashed by :func:`stash_touch`.
SESSION_KEY = "_utm_tracker_touches"
#: The session keys django-utm-tracker's README tells applications to set by hand.
SEED_SESSION_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
_LOGIN = "_utm_tracker_login"
_STASH_KEYS = (SESSION_KEY, *SEED_SESSION_KEYS)
#: Endpoints of the extension's blueprint: the beacon handles its own touches.
_OWN_ENDPOINTS = EXTENSION + "."
_touch_schema = TouchSchema()


@dataclass(frozen=True)
class _AppState:
    tracker: UTMTracker
    settings: Settings
    limiter: RateLimiter


class UTMTracker:
    """Ties utm_* parameters, click IDs and referrers to the users they became.

    :param app: the Flask app, or ``None`` to call :meth:`init_app` later.
    :param db: the host app's :class:`flask_sqlalchemy.SQLAlchemy` instance; ``LeadSource`` and
        ``Touch`` are built on its ``Model`` and metadata.
    :param user_model: the Flask-Login user model, referenced by ``LeadSource.user_id``.
    :param table_prefix: prefix of the extension's table names.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        db: SQLAlchemy,
        user_model: type[t.Any],
        table_prefix: str = "utm_",
    ) -> None:
        self.db = db
        self.user_model = user_model
        self.LeadSource, self.Touch = make_models(db, user_model, table_prefix)
        conversion_models = conversions.make_models(
            db, user_model, user_pk(user_model), table_prefix
        )
        self.Conversion = conversion_models.Conversion
        self.Spend = conversion_models.Spend
        self.Delivery = destinations.make_models(db, self.Conversion, table_prefix)
        #: The host's ``@tracker.user_data`` callback (see :meth:`user_data`).
        self.user_data_callback: t.Callable[[t.Any], t.Mapping[str, t.Any]] | None = None
        mapper = sa.inspect(user_model)
        self._user_pk_attr = mapper.get_property_by_column(mapper.primary_key[0]).key
        self._dashboard_permission: t.Callable[[], bool] | None = None
        if app is not None:
            self.init_app(app)

    # -- registration -------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Apply the configuration defaults, register the blueprint, the request hook, the CLI
        and the ``utm_tracker_script()`` template helper on ``app``.
        """
        if EXTENSION in app.extensions:
            raise RuntimeError(
                "A 'UTMTracker' instance has already been registered on this Flask app."
                " Import and use that instance instead."
            )
        settings = load_settings(app.config)
        try:
            limiter = RateLimiter(
                settings.rate_limit,
                settings.rate_limit_storage,
                str(app.config.get("SECRET_KEY") or "flask-utm-tracker").encode(),
            )
        except ValueError as err:
            raise ConfigError(
                f"UTM_TRACKER_RATE_LIMIT or UTM_TRACKER_RATE_LIMIT_STORAGE is invalid: {err}"
            ) from None
        app.extensions[EXTENSION] = _AppState(self, settings, limiter)

        from .cli import make_cli
        from .views import make_blueprint

        app.register_blueprint(make_blueprint(self), url_prefix=settings.url_prefix or None)

        def after_request(response: Response) -> Response:
            return self._after_request(settings, response)

        app.after_request(after_request)  # a plain function: Flask inspects it per request
        if settings.beacon_lane:
            from . import lane

            if not lane.install(app, self, after_request):
                logger.info(
                    "The beacon lane is off: app.wsgi_app is wrapped by a middleware other than"
                    " ProxyFix, or the Flask class overrides request dispatch. Register"
                    " UTMTracker before wrapping app.wsgi_app to have it."
                )
        # A template global, not a context processor: nothing to run for each render.
        app.add_template_global(self.script_tag, "utm_tracker_script")
        app.cli.add_command(make_cli(self))
        user_logged_in.connect(_on_login)
        _exempt_from_csrf(app)

    def dashboard_permission(self, func: t.Callable[[], bool]) -> t.Callable[[], bool]:
        """Register the function that decides who may open the dashboard (denied by default)::

        @tracker.dashboard_permission
        def can_see_dashboard():
            return current_user.is_authenticated and current_user.is_admin
        """
        self._dashboard_permission = func
        return func

    def user_data(
        self, func: t.Callable[[t.Any], t.Mapping[str, t.Any]]
    ) -> t.Callable[[t.Any], t.Mapping[str, t.Any]]:
        """Register the function giving a user's contact data for ad-platform destinations
        (``{"email": ..., "phone": ...}``); it is hashed before it is sent, and only to
        destinations whose configuration allows it::

            @tracker.user_data
            def user_data(user):
                return {"email": user.email}
        """
        self.user_data_callback = func
        return func

    @staticmethod
    def state(app: Flask | None = None) -> _AppState:
        """The extension's state on ``app`` (default: the current app)."""
        state = (app or current_app).extensions.get(EXTENSION)
        if state is None:
            raise RuntimeError(
                "flask-utm-tracker is not registered on this app. Call tracker.init_app(app) first."
            )
        return t.cast(_AppState, state)

    @classmethod
    def settings(cls, app: Flask | None = None) -> Settings:
        """The settings of ``app`` (default: the current app)."""
        return cls.state(app).settings

    def script_tag(self, **attrs: t.Any) -> Markup:
        """The ``<script>`` tag of the snippet for a Jinja template: ``{{ utm_tracker_script() }}``.

        Keyword arguments become ``data-*`` attributes (``consent="required"``, ``spa="auto"``).
        """
        from flask import url_for

        settings = self.settings()
        data: dict[str, t.Any] = {}
        if settings.cookie_name != "utm_tracker":
            data["cookie-name"] = settings.cookie_name
        if settings.cookie_domain:
            data["cookie-domain"] = settings.cookie_domain
        if settings.custom_tags:
            data["custom-tags"] = ",".join(settings.custom_tags)
        if settings.cookie_max_age != 365 * 24 * 3600:
            data["max-age"] = settings.cookie_max_age
        if not settings.respect_gpc:
            data["gpc"] = "ignore"
        data.update({k.replace("_", "-"): v for k, v in attrs.items()})
        parts = "".join(f' data-{escape(k)}="{escape(v)}"' for k, v in data.items())
        src = url_for(f"{EXTENSION}.snippet")
        return Markup(f'<script src="{escape(src)}" async{parts}></script>')

    # -- conversions --------------------------------------------------------------------------

    def record_conversion(
        self,
        user: t.Any,
        name: str,
        *,
        value: t.Any = None,
        currency: str | None = None,
        order_id: str | None = None,
        occurred_at: t.Any = None,
    ) -> t.Any:
        """Record that ``user`` (an instance or its primary key) converted, and return the
        ``Conversion`` row (see :func:`flask_utm_tracker.conversions.record`)."""
        return conversions.record(
            self,
            user,
            name,
            value=value,
            currency=currency,
            order_id=order_id,
            occurred_at=occurred_at,
        )

    def attribute(
        self,
        name: str | None = None,
        model: str = "last",
        by: str = "channel",
        start: t.Any = None,
        end: t.Any = None,
    ) -> list[dict[str, t.Any]]:
        """Conversions, revenue, spend, ROAS and CPA per ``by`` value under ``model`` (see
        :func:`flask_utm_tracker.attribution.attribute`)."""
        return attribution.attribute(self, name=name, model=model, by=by, start=start, end=end)

    # -- helpers ----------------------------------------------------------------------------

    def context(self, settings: Settings, host: str | None = None) -> Context:
        """What :func:`~flask_utm_tracker.touches.fields` needs to know about this request.

        :param host: the request's host (default: ``request.host``).
        """
        excluded = settings.excluded_referrers
        if settings.cookie_domain:
            excluded = (*excluded, settings.cookie_domain.lstrip(".").lower())
        if host is None:
            host = request.host
        return Context(
            custom_tags=settings.custom_tags,
            site_hosts=(host.rsplit(":", 1)[0].lower(), *settings.site_hosts),
            excluded=excluded,
        )

    def current_user_id(self, cheap: bool = False) -> t.Any:
        """The primary key of the authenticated user, or ``None``.

        :param cheap: do not run Flask-Login's loaders for a visitor that shows no sign of a
            login (no user id in the session, no remember cookie, no request loader), so that
            capturing an anonymous landing costs no database query.
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        manager = getattr(app, "login_manager", None)
        if manager is None:
            return None
        if (
            cheap
            and getattr(manager, "_request_callback", True) is None
            and g.get("_login_user") is None
        ):
            remember = app.config.get("REMEMBER_COOKIE_NAME", "remember_token")
            if not _in_session("_user_id") and cookies.from_request(request, remember) is None:
                return None  # no request loader, no remember cookie, no user in the session
        from flask_login import current_user

        try:
            if not current_user.is_authenticated:
                return None
        except Exception:  # a broken user loader must not break tracking, nor the page
            logger.exception("Loading the current user failed.")
            return None
        return self.user_id_of(current_user)

    def user_id_of(self, user: t.Any) -> t.Any:
        return getattr(user, self._user_pk_attr, None) if user is not None else None

    def set_cookie(
        self, response: Response, state: cookies.CookieState, settings: Settings
    ) -> None:
        """Write the visitor cookie on ``response``."""
        scheme = request.environ.get("wsgi.url_scheme", "http")
        response.headers.add("Set-Cookie", self.cookie_header(state, settings, scheme))

    @staticmethod
    def cookie_header(state: cookies.CookieState, settings: Settings, scheme: str) -> str:
        """The ``Set-Cookie`` value of the visitor cookie, on a request made over ``scheme``."""
        secure = settings.cookie_secure
        if secure is None:
            secure = scheme == "https"
        # RFC 6265 section 4.1 by hand: the value is base64url and the name and domain were
        # checked by load_settings, so nothing needs quoting, and this is a fifth of the cost of
        # werkzeug's dump_cookie (whose Expires date Max-Age makes redundant). Not HttpOnly:
        # the snippet reads it.
        header = (
            f"{settings.cookie_name}={cookies.encode(state)}; Path=/;"
            f" Max-Age={settings.cookie_max_age}; SameSite=Lax"
        )
        if settings.cookie_domain:
            header += f"; Domain={settings.cookie_domain}"
        if secure:
            header += "; Secure"
        return header

    def rows_of(
        self, raws: t.Iterable[t.Any], context: Context, visitor_id: str | None
    ) -> list[dict[str, t.Any]]:
        """Validate raw touches and turn them into row fields; a bad one is logged and skipped."""
        rows = []
        for raw in raws:
            clean = plain_touch(raw)  # the common shape, checked in plain Python
            if clean is None:
                try:
                    clean = _touch_schema.load(raw) if isinstance(raw, dict) else None
                except ValidationError as err:
                    logger.warning("Skipping an invalid touch: %s", err.messages)
                    continue
            row = fields(clean, context, visitor_id) if clean else None
            if row is not None:
                rows.append(row)
        return rows

    def store_anonymous(
        self,
        engine: sa.Engine,
        settings: Settings,
        visitor_id: str,
        rows: list[dict[str, t.Any]],
        returning: bool,
    ) -> list[dict[str, t.Any]]:
        """Store an anonymous beacon's ``Touch`` rows, committed together with the beacons of
        concurrent requests (:func:`~flask_utm_tracker.ingest.group_commit`).

        :raises ingest.StoreError: the database did not store them.
        """
        return ingest.group_commit(engine).store(
            engine,
            self.Touch.__table__,
            settings.max_touches_per_visitor,
            visitor_id,
            rows,
            returning=returning,
        )

    def write(
        self,
        user_id: t.Any,
        visitor_id: str | None,
        rows: t.Sequence[dict[str, t.Any]],
        claim: bool = True,
        store_touches: bool = False,
    ) -> bool:
        """Write ``rows`` as the user's ``LeadSource`` rows, claiming the visitor's unclaimed
        ``Touch`` rows too, in one transaction. Never raises: a database error is logged and
        ``False`` returned, so the caller keeps the touches for a later request.
        """
        lead_table = self.LeadSource.__table__
        touch_table = self.Touch.__table__
        try:
            with self.db.engine.begin() as conn:
                if store_touches:
                    reconcile.store_touches(conn, touch_table, rows, claimed_by=user_id)
                claimed = (
                    reconcile.claim_touches(conn, touch_table, visitor_id, user_id)
                    if claim and visitor_id
                    else []
                )
                inserted = reconcile.write_lead_sources(
                    conn, lead_table, user_id, [*claimed, *rows]
                )
                rollup.written(conn, self.LeadSource, user_id, inserted)
        except sa.exc.SQLAlchemyError:
            logger.exception("Writing lead sources for user %r failed; will retry.", user_id)
            return False
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if inserted and lead_source_created.has_receivers_for(app):
            for row in inserted:
                lead_source_created.send(app, lead_source=self.LeadSource(**row))
        return True

    # -- the request hook ---------------------------------------------------------------------

    def _candidate(self, settings: Settings, req: Request) -> tuple[dict[str, str], str] | None:
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
            own = req.host
            if referrer.startswith((f"https://{own}/", f"http://{own}/")):
                referrer = ""  # the site's own pages: the common case, no parsing
            else:
                host = host_of(referrer)
                if not host or host == own.rsplit(":", 1)[0].lower():
                    referrer = ""
        if not params and not referrer:
            return None
        return params, referrer

    def _after_request(self, settings: Settings, response: Response) -> Response:
        req = t.cast(Request, request._get_current_object())  # type: ignore[attr-defined]
        environ = req.environ
        if (
            not (
                environ.get("QUERY_STRING")
                or environ.get("HTTP_REFERER")
                or settings.cookie_name in environ.get("HTTP_COOKIE", "")
                or _LOGIN in environ
            )
            and not _has_stash()
        ):
            return response  # a plain request: nothing to track (environ and session read)
        endpoint = req.endpoint
        if endpoint is not None and (endpoint == "static" or endpoint.startswith(_OWN_ENDPOINTS)):
            return response
        login = req.environ.pop(_LOGIN, None)
        value = cookies.from_request(req, settings.cookie_name)
        candidate = self._candidate(settings, req) if response.status_code < 500 else None
        stashed = _has_stash()
        if candidate is None and not value and not stashed and login is None:
            return response  # the common case: nothing to do, nothing read or written
        try:
            self._track(response, settings, value, candidate, stashed, login)
        except Exception:  # tracking must never break a page
            logger.exception("flask-utm-tracker failed on %s; the page is unaffected.", req.path)
        return response

    def _track(
        self,
        response: Response,
        settings: Settings,
        value: str | None,
        candidate: tuple[dict[str, str], str] | None,
        stashed: bool,
        login: tuple[t.Any] | None,
    ) -> None:
        state = cookies.decode(value)
        changed = False
        if candidate is not None:
            params, referrer = candidate
            now = now_ms()
            raw = {
                "id": new_id(),
                "ts": now,
                "url": _landing_url(request._get_current_object()),  # type: ignore[attr-defined]
                "referrer": referrer,
                "params": params,
            }
            latest = state.latest if state else None
            if is_new_touch(params, latest, now, settings.session_timeout):
                app = current_app._get_current_object()  # type: ignore[attr-defined]
                signal = touch_recorded.has_receivers_for(app)
                # Tracked parameters always make a touch; a bare referrer only when it is
                # neither internal nor spam, which takes the classifier to know (reconciliation
                # classifies every touch again anyway).
                row = fields(raw, self.context(settings), None) if signal or not params else None
                if row is not None or (params and not signal):
                    if state is None:
                        state = cookies.CookieState(new_id())
                    state.pending.append(raw)
                    state.latest = cookies.latest_of(raw)
                    changed = True
                    if row is not None and signal:
                        row["visitor_id"] = state.visitor_id
                        touch_recorded.send(app, touch=row, user_id=None)

        pending = state.pending if state else []
        if pending or stashed or login is not None:
            user_id = login[0] if login is not None else self.current_user_id(cheap=True)
            if user_id is not None:
                visitor_id = state.visitor_id if state else None
                context = self.context(settings)
                rows = self.rows_of(pending, context, visitor_id)
                stash = _stash()
                extra = tuple(
                    k
                    for raw in stash
                    for k in raw.get("params", {})
                    if k not in TRACKED and k not in context.custom_tags
                )
                stash_context = Context(
                    custom_tags=(*context.custom_tags, *dict.fromkeys(extra)),
                    site_hosts=context.site_hosts,
                    excluded=context.excluded,
                )
                rows += self.rows_of(stash, stash_context, visitor_id)
                if self.write(user_id, visitor_id, rows):
                    _clear_stash()
                    if state is not None and state.pending:
                        state.pending = []
                        changed = True
        if changed and state is not None:
            self.set_cookie(response, state, settings)


#: URL characters that need no quoting (RFC 3986 unreserved, sub-delims, ":@/?%").
_URL_SAFE = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")


def _landing_url(req: Request) -> str:
    """``req.url``, put together from the environ when nothing in it needs quoting (the common
    case; werkzeug's general path costs about 20 us)."""
    environ = req.environ
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING", "")
    if _URL_SAFE.fullmatch(path) and _URL_SAFE.fullmatch(query):
        url = f"{req.scheme}://{req.host}{path or '/'}"
        return f"{url}?{query}" if query else url
    return req.url


def is_new_touch(
    params: t.Mapping[str, str], latest: t.Mapping[str, t.Any] | None, now: int, timeout: int
) -> bool:
    """DESIGN's rule: campaign parameters or a click ID make a new touch unless identical to the
    latest; a referral only when the latest touch is older than the session timeout (seconds).
    """
    if latest is None:
        return True
    if params:
        return dict(params) != latest.get("params")
    ts = latest.get("ts")
    return not isinstance(ts, int) or now - ts > timeout * 1000


#: The beacon view as Flask-WTF's ``CSRFProtect.exempt`` names views (module and name).
BEACON_VIEW = "flask_utm_tracker.views.beacon"


def _exempt_from_csrf(app: Flask) -> None:
    """Exempt the beacon from Flask-WTF's ``CSRFProtect``, registered before or after us.

    A beacon carries no CSRF token (``sendBeacon`` cannot set headers, and landing pages are
    often cached), so ``CSRFProtect`` would answer every one with 400 and the snippet would
    drop them. Cross-site beacons are refused by the ``Origin`` check instead. When
    ``CSRFProtect`` is not registered yet, the app's first request does it, in a
    ``before_request`` hook that runs before ``CSRFProtect``'s own and then removes itself (by
    then every extension of the app is registered).
    """

    def exempt() -> bool:
        csrf = app.extensions.get("csrf")
        if csrf is None or not callable(getattr(csrf, "exempt", None)):
            return False
        csrf.exempt(BEACON_VIEW)
        return True

    if exempt():
        return
    lock = threading.Lock()

    def exempt_once() -> None:
        with lock:
            funcs = app.before_request_funcs.get(None, [])
            if exempt_once in funcs:
                exempt()
                # A new list, not a removal: Flask may be iterating the old one right now.
                app.before_request_funcs[None] = [f for f in funcs if f is not exempt_once]

    app.before_request_funcs.setdefault(None, []).insert(0, exempt_once)


def _on_login(sender: Flask, user: t.Any = None, **extra: t.Any) -> None:
    state = sender.extensions.get(EXTENSION)
    if isinstance(state, _AppState):
        if has_request_context():
            request.environ.setdefault(_LOGIN, (state.tracker.user_id_of(user),))


def _session_data() -> t.Any:
    """The request's session, looked at without marking it accessed.

    Flask adds ``Vary: Cookie`` to a response whose session was accessed, and since Flask 3.1.3
    any look through ``flask.session`` counts (the request context keeps the session in
    ``_session`` behind a property that marks it); the tracker's checks must not make the
    host's public pages uncacheable. Older Flask keeps it in ``session``, and marks only reads
    of keys, which the callers avoid (``dict.__contains__``).
    """
    ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
    data = getattr(ctx, "_session", None)
    return data if data is not None else session._get_current_object()  # type: ignore[attr-defined]


def _in_session(key: str) -> bool:
    # dict.__contains__ does not mark a cookie session as accessed either.
    data = _session_data()
    return dict.__contains__(data, key) if isinstance(data, dict) else key in data


def _has_stash() -> bool:
    data = _session_data()
    if isinstance(data, dict) and not dict.__len__(data):
        return False
    contains = (
        functools.partial(dict.__contains__, data) if isinstance(data, dict) else data.__contains__
    )
    return any(contains(key) for key in _STASH_KEYS)


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
        if _in_session(key):
            session.pop(key, None)


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
    params = normalize([*given.items(), *custom.items()], tuple(k.lower() for k in custom))
    if not params:
        raise ValueError("stash_touch() needs at least one non-empty value, such as source=...")
    touch_id = new_id()
    raw = {"id": touch_id, "ts": now_ms(), "params": params}
    stash = session.get(SESSION_KEY)
    session[SESSION_KEY] = [*(stash if isinstance(stash, list) else []), raw]
    touch_recorded.send(current_app._get_current_object(), touch=raw, user_id=None)  # type: ignore[attr-defined]
    return touch_id
