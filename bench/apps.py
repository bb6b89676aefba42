"""The apps the benchmark serves with gunicorn: ``bench.apps:make()``.

``BENCH_APP`` picks the variant, ``BENCH_DB`` the database URL:

``bare``
    Flask alone: ``POST /utm/beacon`` reads the body and answers 204. The ceiling of any Flask
    collector on this machine.
``plain``
    a host app as a user writes it (Flask-SQLAlchemy, Flask-Login with a user loader), without
    the extension: the baseline of the page and login figures.
``tracked``
    the same host app with ``UTMTracker`` installed.

The host's SQLite engine gets WAL and ``synchronous=NORMAL`` from a ``connect`` event, as
bench/README.md tells hosts to do: the extension does not change the host's durability settings.

Knobs for the ablations of ``bench/run.py --ablations``: ``BENCH_SQLITE_PRAGMAS=0`` leaves SQLite
in its default rollback journal with ``synchronous=FULL``; ``BENCH_MAX_BATCH=1`` turns group
commit off (one commit per beacon); ``BENCH_GATHER_TURNS`` sets how many turns a leader gives
the other threads before writing; ``BENCH_LANE=0`` turns the beacon lane off.
"""

from __future__ import annotations

import os
import typing as t

import sqlalchemy as sa
from flask import Flask, Response, render_template, request
from jinja2 import DictLoader

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

    return app


def make_host(tracked: bool, db_url: str) -> tuple[Flask, t.Any, t.Any]:
    """The host app: pages, login by email (no password hashing, so the tracker's share shows)."""
    from flask_login import LoginManager, UserMixin, login_user
    from flask_sqlalchemy import SQLAlchemy

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
    if tracked:
        app.config.update(UTM_TRACKER_RATE_LIMIT="")  # the limiter is not what is measured
        if os.environ.get("BENCH_LANE") == "0":
            app.config.update(UTM_TRACKER_BEACON_LANE=False)
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
    tracker = None
    if tracked:
        from flask_utm_tracker import UTMTracker

        tracker = UTMTracker(app, db=db, user_model=User)

        @tracker.dashboard_permission
        def everyone() -> bool:
            return True

    if "BENCH_MAX_BATCH" in os.environ:
        from flask_utm_tracker import ingest

        ingest.MAX_BATCH = int(os.environ["BENCH_MAX_BATCH"])
    if "BENCH_GATHER_TURNS" in os.environ:
        from flask_utm_tracker import ingest

        ingest.GATHER_TURNS = int(os.environ["BENCH_GATHER_TURNS"])
    if db_url.startswith("sqlite") and os.environ.get("BENCH_SQLITE_PRAGMAS", "1") == "1":
        with app.app_context():
            sqlite_wal(db.engine)

    @app.get("/")
    def home() -> str:
        return render_template("page.html", title="Home")

    @app.get("/landing")
    def landing() -> str:
        return render_template("page.html", title="Landing")

    @app.post("/login/<email>")
    def login(email: str) -> str:
        user = db.session.scalar(sa.select(User).where(User.email == email))
        if user is None:
            return Response("no such user", status=404)  # type: ignore[return-value]
        login_user(user)
        return str(user.id)

    return app, db, User


def make() -> Flask:
    kind = os.environ.get("BENCH_APP", "tracked")
    if kind == "bare":
        return make_bare()
    app, _, _ = make_host(kind == "tracked", os.environ["BENCH_DB"])
    return app
