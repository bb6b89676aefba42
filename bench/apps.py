"""The apps the benchmark serves with gunicorn: ``bench.apps:make()``.

``BENCH_APP`` picks the variant, ``BENCH_DB`` the database URL. Every variant sits behind
Werkzeug's ``ProxyFix(x_for=1)``, as an app behind one reverse proxy does, so the client address
of a request is the last ``X-Forwarded-For`` entry the load generator sends.

``bare``
    Flask alone: ``POST /utm/beacon`` reads the body and answers 204. The ceiling of any Flask
    collector on this machine, and the baseline of the beacon figures.
``plain``
    a host app as users write it, without the extension: Flask-SQLAlchemy, Flask-Login with a
    user loader, Flask-WTF's ``CSRFProtect``, and a receiver of Flask's ``request_started`` and
    ``request_finished`` signals that times each request by endpoint (as APM tools add). The
    baseline of the page and login figures.
``tracked``
    the same host app with ``UTMTracker`` installed, every default on (rate limit with the
    memory storage, bot filter, origin check).
``collector``
    ``tracked`` with the standalone collector mounted in front of it
    (:func:`flask_utm_tracker.collector.mount_collector`): beacons skip the host's hooks.

The host's SQLite engine gets WAL and ``synchronous=NORMAL`` from a ``connect`` event, as the
deployment notes tell hosts to do: the extension does not change the host's durability settings.

Knobs, for ablations: ``BENCH_RATE_LIMIT`` sets ``UTM_TRACKER_RATE_LIMIT`` (``""``: off);
``BENCH_MAX_BATCH`` sets ``flask_utm_tracker.store.MAX_BATCH`` (1: no group commit);
``BENCH_SQLITE_PRAGMAS=0`` leaves SQLite in its default rollback journal with
``synchronous=FULL``. ``BENCH_FEED=1`` adds the bench-only route ``POST /_bench/limiter-feed``
(see :func:`add_limiter_feed`).
"""

from __future__ import annotations

import os
import threading
import time
import typing as t
from collections import defaultdict

import sqlalchemy as sa
from flask import Flask, Response, g, render_template, request, request_finished, request_started
from jinja2 import DictLoader
from werkzeug.middleware.proxy_fix import ProxyFix

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title></head>
<body><h1>{{ title }}</h1>
<p>{% for n in range(20) %}Paragraph {{ n }} of a page about {{ title }}. {% endfor %}</p>
</body></html>"""


def sqlite_wal(engine: sa.Engine) -> None:
    """WAL journal and ``synchronous=NORMAL`` on every new SQLite connection of ``engine``.

    WAL lets readers run beside the one writer; NORMAL skips the fsync at each commit (a
    checkpoint still syncs), so a committed row survives a crash of the process but the last
    commits may be lost on power failure.
    """

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: t.Any, record: t.Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def behind_proxy(app: Flask) -> Flask:
    """``app`` behind one reverse proxy: the client address from ``X-Forwarded-For``."""
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    return app


def make_bare() -> Flask:
    app = Flask(__name__)
    app.jinja_loader = DictLoader({"page.html": PAGE})

    @app.post("/utm/beacon")
    def beacon() -> Response:
        request.get_data()
        return Response(status=204)

    @app.get("/")
    def home() -> str:
        return render_template("page.html", title="Home")

    return behind_proxy(app)


class Apm:
    """What an APM agent's request instrumentation does, in small: a receiver of
    ``request_started`` notes the start, a receiver of ``request_finished`` adds the duration
    to its endpoint's totals."""

    def __init__(self, app: Flask) -> None:
        self.lock = threading.Lock()
        self.totals: dict[str | None, list[float]] = defaultdict(lambda: [0, 0.0])
        request_started.connect(self.started, app, weak=False)
        request_finished.connect(self.finished, app, weak=False)

    def started(self, sender: Flask, **extra: t.Any) -> None:
        g._apm_start = time.perf_counter()

    def finished(self, sender: Flask, response: Response, **extra: t.Any) -> None:
        elapsed = time.perf_counter() - g.get("_apm_start", time.perf_counter())
        with self.lock:
            entry = self.totals[request.endpoint]
            entry[0] += 1
            entry[1] += elapsed


def make_host(tracked: bool, db_url: str) -> tuple[Flask, t.Any, t.Any]:
    """The host app: pages, a CSRF-protected login by email (no password hashing, so the
    tracker's share shows). Not yet behind the proxy (:func:`make` puts it there)."""
    from flask_login import LoginManager, UserMixin, login_user
    from flask_sqlalchemy import SQLAlchemy
    from flask_wtf.csrf import CSRFProtect, generate_csrf

    app = Flask(__name__)
    app.jinja_loader = DictLoader({"page.html": PAGE})  # compiled once, as files are
    options: dict[str, t.Any] = {}
    if db_url.startswith("postgresql"):
        options = {"pool_size": 20, "max_overflow": 20}
    app.config.update(
        SECRET_KEY="bench-only-not-secret",
        SQLALCHEMY_DATABASE_URI=db_url,
        SQLALCHEMY_ENGINE_OPTIONS=options,
    )
    if tracked and "BENCH_RATE_LIMIT" in os.environ:
        app.config.update(UTM_TRACKER_RATE_LIMIT=os.environ["BENCH_RATE_LIMIT"])
    db = SQLAlchemy()

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "users"
        id = sa.Column(sa.Integer, primary_key=True)
        email = sa.Column(sa.String(200), unique=True, nullable=False)

    login_manager = LoginManager(app)

    @login_manager.user_loader
    def load_user(user_id: str) -> t.Any:
        return db.session.get(User, int(user_id))

    db.init_app(app)
    csrf = CSRFProtect(app)
    Apm(app)
    if not tracked:

        @app.post("/utm/beacon")
        @csrf.exempt
        def beacon() -> Response:
            """The ingest figures' reference: bare Flask's beacon route in the host app (its
            hooks, Flask-Login and the session interface, no extension)."""
            request.get_data()
            return Response(status=204)

    if tracked:
        from flask_utm_tracker import UTMTracker

        tracker = UTMTracker(app, db=db, user_model=User)

        @tracker.dashboard_permission
        def everyone() -> bool:
            return True

    if "BENCH_MAX_BATCH" in os.environ:
        from flask_utm_tracker import store

        store.MAX_BATCH = int(os.environ["BENCH_MAX_BATCH"])
    if db_url.startswith("sqlite") and os.environ.get("BENCH_SQLITE_PRAGMAS", "1") == "1":
        with app.app_context():
            sqlite_wal(db.engine)

    @app.get("/")
    def home() -> str:
        return render_template("page.html", title="Home")

    @app.get("/landing")
    def landing() -> str:
        return render_template("page.html", title="Landing")

    @app.get("/csrf")
    def csrf_token() -> str:
        """A CSRF token for the login form (and the session cookie holding its secret)."""
        return generate_csrf()

    @app.post("/login/<email>")
    def login(email: str) -> Response | str:
        user = db.session.scalar(sa.select(User).where(User.email == email))
        if user is None:
            return Response("no such user", status=404)
        login_user(user)
        return str(user.id)

    return app, db, User


def add_limiter_feed(app: Flask) -> None:
    """Bench only: ``POST /_bench/limiter-feed?start=N&count=M`` sends the ``M`` distinct client
    addresses from the ``N``-th on (see :func:`client_address`) through this worker's own beacon
    rate limiter, as ``M`` beacons from them would, in a fraction of the time. The memory figure
    measures the gunicorn worker afterwards."""
    from flask_utm_tracker import UTMTracker

    limiter = UTMTracker.state(app).limiter

    def feed() -> dict[str, t.Any]:
        start = int(request.args["start"])
        count = int(request.args["count"])
        began = time.perf_counter()
        hit = limiter.hit
        for n in range(start, start + count):
            hit(client_address(n))
        return {"fed": count, "seconds": time.perf_counter() - began, "pid": os.getpid()}

    app.add_url_rule("/_bench/limiter-feed", "bench_limiter_feed", feed, methods=["POST"])
    csrf = app.extensions["csrf"]
    csrf.exempt(app.view_functions["bench_limiter_feed"])


def client_address(n: int) -> str:
    """The ``n``-th of distinct client addresses: IPv4 for even ``n``, an IPv6 address in a /64
    of its own for odd ``n`` (the rate limiter's client is the address or the /64)."""
    half = n // 2
    if n % 2 == 0:
        return f"{11 + (half >> 24) % 200}.{half >> 16 & 255}.{half >> 8 & 255}.{half & 255}"
    return f"2001:db8:{half >> 16 & 0xFFFF:x}:{half & 0xFFFF:x}:1234:5678:9abc:def0"


def make() -> Flask:
    kind = os.environ.get("BENCH_APP", "tracked")
    if kind == "bare":
        return make_bare()
    app, _, _ = make_host(kind in ("tracked", "collector"), os.environ["BENCH_DB"])
    if os.environ.get("BENCH_FEED") == "1":
        add_limiter_feed(app)
    if kind == "collector":
        from flask_utm_tracker.collector import mount_collector

        mount_collector(app)
    return behind_proxy(app)
