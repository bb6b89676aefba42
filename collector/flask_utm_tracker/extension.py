"""``UTMTracker``: the models, ``init_app``, the settings and the accessors of the extension.

Where each part lives: the request hook and ``stash_touch`` in :mod:`~flask_utm_tracker.capture`,
a touch's validation and row fields in :mod:`~flask_utm_tracker.touches`, every write in
:mod:`~flask_utm_tracker.store`, the visitor cookie in :mod:`~flask_utm_tracker.cookie`, the
routes in :mod:`~flask_utm_tracker.views`.
"""

from __future__ import annotations

import logging
import threading
import typing as t
from dataclasses import dataclass

import sqlalchemy as sa
from flask import Flask, current_app, request
from flask_login import user_logged_in
from flask_login.config import COOKIE_NAME
from markupsafe import Markup, escape
from werkzeug.wrappers import Response as BaseResponse

from . import (
    capture,
    classify,
    conversion_reports,
    conversions,
    dashboard,
    destinations,
    openapi,
    rollup,
    store,
)
from . import cookie as cookies
from .abuse import RateLimiter, is_bot
from .capture import stash_touch as stash_touch
from .cli import make_cli
from .config import EXTENSION, ConfigError, Settings, load_settings
from .models import make_models, user_pk
from .signals import lead_source_created
from .touches import Context, new_id, now_ms
from .views import make_blueprint

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

logger = logging.getLogger("flask_utm_tracker")
#: The signed visitor cookie is named after the visitor cookie with this suffix.
SIGNED_SUFFIX = "_id"


#: A browser's User-Agent, classified at start-up so that the crawler patterns are compiled.
_WARM_UP_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/120.0.0.0 Safari/537.36"
)


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
        self.LeadSource, self.Touch, self.Lead, self.LeadDay = make_models(
            db, user_model, table_prefix
        )
        rollup.register(self.LeadSource, self.Lead, self.LeadDay, user_model)
        rollup.listen(self.LeadSource)
        conversion_models = conversions.make_models(
            db, user_model, user_pk(user_model), table_prefix
        )
        self.Conversion = conversion_models.Conversion
        self.Spend = conversion_models.Spend
        #: Derived tables of the conversion reports (kept by the writers; ``flask utm rebuild``).
        self.ConversionPath = conversion_models.ConversionPath
        self.ConversionDay = conversion_models.ConversionDay
        self.UserPath = conversion_models.UserPath
        self.Delivery = destinations.make_models(db, self.Conversion, table_prefix)
        #: The host's ``@tracker.user_label`` callback (see :meth:`user_label`).
        self.user_label_callback: t.Callable[[t.Any], str] | None = None
        #: The host's ``@tracker.user_data`` callback (see :meth:`user_data`).
        self.user_data_callback: t.Callable[[t.Any], t.Mapping[str, t.Any]] | None = None
        mapper = sa.inspect(user_model)
        self._user_pk_attr = mapper.get_property_by_column(mapper.primary_key[0]).key
        #: The host's ``@tracker.dashboard_permission`` function (denied without one).
        self.dashboard_permission_callback: t.Callable[[], bool] | None = None
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
        settings = self.register_state(app)
        blueprint = make_blueprint(self)
        dashboard.register(blueprint, self)
        openapi.register(blueprint, self)
        app.register_blueprint(blueprint, url_prefix=settings.url_prefix or None)
        capture.install(app, self, settings)
        app.add_template_global(self.script_tag, "utm_tracker_script")
        app.cli.add_command(make_cli(self))
        user_logged_in.connect(capture.on_login)
        _exempt_from_csrf(app)

    def register_state(self, app: Flask) -> Settings:
        """Read ``app``'s configuration and keep the extension's state on it (settings, rate
        limiter), without routes or hooks: :meth:`init_app` and the standalone collector
        (:func:`flask_utm_tracker.collector.make_collector`) start with it.
        """
        settings = load_settings(app.config)
        try:
            limiter = RateLimiter(
                settings.rate_limit,
                settings.rate_limit_storage,
                str(app.config.get("SECRET_KEY") or "flask-utm-tracker").encode(),
                ipv6_prefix=settings.rate_limit_ipv6_prefix,
                max_clients=settings.rate_limit_max_clients,
                timeout=settings.rate_limit_timeout,
            )
        except ValueError as err:
            raise ConfigError(
                f"UTM_TRACKER_RATE_LIMIT or UTM_TRACKER_RATE_LIMIT_STORAGE is invalid: {err}"
            ) from None
        app.extensions[EXTENSION] = _AppState(self, settings, limiter)
        # The referrer lists and the crawler patterns are read and compiled now, once per
        # process, rather than by the first requests of a worker, each thread on its own.
        classify.load()
        if settings.drop_bots:
            is_bot(_WARM_UP_AGENT)
        return settings

    def dashboard_permission(self, func: t.Callable[[], bool]) -> t.Callable[[], bool]:
        """Register the function that decides who may open the dashboard (denied by default)::

        @tracker.dashboard_permission
        def can_see_dashboard():
            return current_user.is_authenticated and current_user.is_admin
        """
        self.dashboard_permission_callback = func
        return func

    def user_label(self, func: t.Callable[[t.Any], str]) -> t.Callable[[t.Any], str]:
        """Register the function that names a user on the dashboard (default: the user's
        primary key)::

            @tracker.user_label
            def label(user):
                return user.email
        """
        self.user_label_callback = func
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

        The mapping may also hold ``ad_consent`` (``False``: nothing is sent for this user) and
        ``user_agent`` (sent to platforms that want one).
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
        if settings.site_hosts:
            data["site-hosts"] = ",".join(settings.site_hosts)
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
        :func:`flask_utm_tracker.conversion_reports.attribute`)."""
        return conversion_reports.attribute(
            self, name=name, model=model, by=by, start=start, end=end
        )

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
            keep_params=settings.keep_query_params,
            custom_tags=settings.custom_tags,
            site_hosts=(host.rsplit(":", 1)[0].lower(), *settings.site_hosts),
            excluded=excluded,
        )

    def current_user_id(self) -> t.Any:
        """The primary key of the authenticated user, or ``None``.

        Flask-Login's loaders run only when the request can be authenticated (it carries the
        session or remember cookie, or the login manager has a request loader), so that
        capturing an anonymous landing costs no database query.
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        manager = getattr(app, "login_manager", None)
        if manager is None:
            return None
        if manager.request_callback is None:
            session_cookie = str(app.config.get("SESSION_COOKIE_NAME") or "session")
            remember = str(app.config.get("REMEMBER_COOKIE_NAME") or COOKIE_NAME)
            if (
                cookies.from_request(request, session_cookie) is None
                and cookies.from_request(request, remember) is None
            ):
                return None
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

    def browser(self, settings: Settings, create: bool = False) -> cookies.Browser | None:
        """The server's visitor id of this browser, from its signed cookie; a new one when
        ``create`` (its cookie then written by :meth:`set_cookie`). ``None`` without one, or
        when the app has no ``SECRET_KEY`` to sign with.
        """
        secret = _secrets()
        if not secret:
            return None
        value = cookies.from_request(request, settings.cookie_name + SIGNED_SUFFIX)
        browser = cookies.unsign(secret, value)
        if browser is None and create:
            browser = cookies.Browser(new_id(), now_ms(), new=True)
        return browser

    def set_cookie(
        self,
        response: BaseResponse,
        state: cookies.CookieState,
        settings: Settings,
        browser: cookies.Browser | None = None,
    ) -> None:
        """Write the visitor cookie on ``response``, and the signed one of a new ``browser``."""
        scheme = request.environ.get("wsgi.url_scheme", "http")
        response.headers.add(
            "Set-Cookie",
            self.cookie_header(settings.cookie_name, cookies.encode(state), settings, scheme),
        )
        secret = _secrets()
        if browser is not None and browser.new and secret:
            value = cookies.sign(secret, browser)
            name = settings.cookie_name + SIGNED_SUFFIX
            header = self.cookie_header(name, value, settings, scheme) + "; HttpOnly"
            response.headers.add("Set-Cookie", header)

    @staticmethod
    def cookie_header(name: str, value: str, settings: Settings, scheme: str) -> str:
        """A ``Set-Cookie`` value with the visitor cookie's attributes, on a request made over
        ``scheme``. The value is base64url or a signature and the name and domain were checked
        by ``load_settings``, so nothing needs quoting."""
        secure = settings.cookie_secure
        if secure is None:
            secure = scheme == "https"
        header = f"{name}={value}; Path=/; Max-Age={settings.cookie_max_age}; SameSite=Lax"
        if settings.cookie_domain:
            header += f"; Domain={settings.cookie_domain}"
        if secure:
            header += "; Secure"
        return header

    def store_anonymous(
        self, settings: Settings, visitor_id: str, rows: list[dict[str, t.Any]]
    ) -> list[dict[str, t.Any]]:
        """Store an anonymous beacon's ``Touch`` rows, committed together with the beacons of
        concurrent requests (:func:`~flask_utm_tracker.store.group_commit`).

        :return: the rows inserted now.
        :raises store.StoreError: the database did not store them.
        """
        engine = self.db.engine
        return store.group_commit(engine).store(
            engine, self.Touch.__table__, settings.max_touches_per_visitor, visitor_id, rows
        )

    def write(
        self,
        user_id: t.Any,
        rows: t.Sequence[dict[str, t.Any]],
        *,
        claim: str | None = None,
        store_touches: bool = False,
    ) -> bool:
        """Write ``rows`` as the user's ``LeadSource`` rows in one transaction, at most
        ``UTM_TRACKER_MAX_LEAD_SOURCES_PER_USER`` rows per user.

        :param claim: the server's visitor id of this browser (its signed cookie): its
            unclaimed ``Touch`` rows become the user's too. Never a visitor id a client named.
        :param store_touches: also store the ``rows`` written as ``Touch`` rows, claimed at once
            (an authenticated beacon's).
        :return: whether it was written. Never raises: a database error is logged and ``False``
            returned, so the caller keeps the touches for a later request.
        """
        lead_table = self.LeadSource.__table__
        touch_table = self.Touch.__table__
        cap = self.settings().max_lead_sources_per_user
        try:
            with self.db.engine.begin() as conn:
                claimed = store.claim_touches(conn, touch_table, claim, user_id) if claim else []
                inserted = store.write_lead_sources(
                    conn, lead_table, user_id, [*claimed, *rows], cap=cap
                )
                if store_touches:  # kept as claimed Touch rows: those the user's cap took
                    written = {row["touch_id"] for row in inserted}
                    kept = [row for row in rows if row["touch_id"] in written]
                    store.store_touches(conn, touch_table, kept, claimed_by=user_id)
                rollup.written(conn, self.LeadSource, user_id, inserted)
                conversions.lead_sources_written(conn, self, user_id, inserted)
        except sa.exc.SQLAlchemyError as err:
            # Not logger.exception: the error's text carries the bound parameters.
            logger.error(
                "Writing lead sources for user %r failed; will retry: %s",
                user_id,
                store.describe(err),
            )
            return False
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if inserted and lead_source_created.has_receivers_for(app):
            for row in inserted:
                lead_source_created.send(app, lead_source=self.LeadSource(**row))
        return True


def _secrets() -> list[str | bytes]:
    """The app's signing keys, oldest first: ``SECRET_KEY_FALLBACKS`` (Flask's key rotation),
    then ``SECRET_KEY``; empty without a secret key."""
    app = current_app
    if not app.secret_key:
        return []
    fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or []
    return [*fallbacks, app.secret_key]


def _exempt_from_csrf(app: Flask) -> None:
    """Exempt the extension's blueprint from Flask-WTF's ``CSRFProtect``, registered before or
    after the tracker, through its public ``exempt``.

    A beacon carries no CSRF token (``sendBeacon`` cannot set headers, and landing pages are
    often cached), so ``CSRFProtect`` would answer every one with 400. Cross-site beacons are
    refused by the ``Origin`` check instead. ``CSRFProtect`` registered later is found by a
    ``before_request`` hook of ours, which Flask runs before ``CSRFProtect``'s own (registered
    after it).
    """
    done = threading.Event()

    def exempt() -> None:
        if done.is_set():
            return
        csrf = app.extensions.get("csrf")
        if csrf is not None and callable(getattr(csrf, "exempt", None)):
            csrf.exempt(app.blueprints[EXTENSION])
        done.set()

    if app.extensions.get("csrf") is not None:
        exempt()
    else:
        app.before_request(exempt)
