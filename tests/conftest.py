"""Fixtures: a small Flask app with Flask-Login and the extension, on SQLite and PostgreSQL.

PostgreSQL runs when ``UTM_TRACKER_TEST_POSTGRES`` names a database (each test gets a schema of
its own); Redis when ``UTM_TRACKER_TEST_REDIS`` does. Unset, those tests are skipped loudly; with
``CI`` set, a missing variable is an error.
"""

from __future__ import annotations

import os
import secrets
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask, request
from flask_login import LoginManager, UserMixin, login_user, logout_user
from flask_sqlalchemy import SQLAlchemy
from flask_utm_tracker import UTMTracker
from hypothesis import settings as hypothesis_settings

# No wall-clock deadline: a loaded machine (CI, the benchmark beside) must not fail a property.
hypothesis_settings.register_profile("utm", deadline=None)
hypothesis_settings.load_profile("utm")

POSTGRES_VAR = "UTM_TRACKER_TEST_POSTGRES"
REDIS_VAR = "UTM_TRACKER_TEST_REDIS"
_skipped: set[str] = set()


def service_url(var: str, what: str) -> str:
    """The URL in ``var``, or skip (fail under CI) saying how to enable the test."""
    url = os.environ.get(var)
    if url:
        return url
    message = f"{what} tests need {var} (e.g. {EXAMPLES[var]})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run them.")
    _skipped.add(message)
    pytest.skip(message)


EXAMPLES = {
    POSTGRES_VAR: "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    REDIS_VAR: "redis://127.0.0.1:6379/0",
}


def pytest_terminal_summary(terminalreporter: t.Any) -> None:
    for message in sorted(_skipped):
        terminalreporter.write_line(f"SKIPPED LOUDLY: {message}", yellow=True, bold=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: t.Any) -> t.Iterator[str]:
    """A fresh, empty database: a SQLite file, or a PostgreSQL schema of this test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        _dispose_apps()
        return
    base = service_url(POSTGRES_VAR, "PostgreSQL")
    schema = f"t_{secrets.token_hex(6)}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    _dispose_apps()
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


_made: list[HostApp] = []


def _dispose_apps() -> None:
    """Close every pooled connection of the apps made in this test."""
    while _made:
        made = _made.pop()
        with made.app.app_context():
            for engine in made.db.engines.values():
                engine.dispose()


class HostApp(t.NamedTuple):
    app: Flask
    db: SQLAlchemy
    User: t.Any
    tracker: UTMTracker


def make_app(
    db_url: str,
    *,
    request_loader: bool = False,
    csrf: str | None = None,
    before_tracker: t.Callable[[Flask], None] | None = None,
    **config: t.Any,
) -> HostApp:
    """A host app as a user writes it: Flask-SQLAlchemy, Flask-Login with a user loader.

    :param request_loader: also a Flask-Login request loader (a bearer token).
    :param csrf: ``"before"`` or ``"after"``: Flask-WTF's ``CSRFProtect`` registered before or
        after the tracker.
    :param before_tracker: called with the app just before the tracker is registered (to wrap
        ``app.wsgi_app`` in a middleware first, say).
    """
    app = Flask(__name__)
    app.config.update(
        {
            "SECRET_KEY": "test-secret",
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": db_url,
            "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
            **config,
        }
    )
    db = SQLAlchemy()

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "users"
        id = sa.Column(sa.Integer, primary_key=True)
        email = sa.Column(sa.String(200), unique=True, nullable=False)
        token = sa.Column(sa.String(64), unique=True)

    login_manager = LoginManager(app)

    @login_manager.user_loader
    def load_user(user_id: str) -> t.Any:
        return db.session.get(User, int(user_id))

    def load_user_from_request(req: t.Any) -> t.Any:
        auth = req.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return db.session.scalar(sa.select(User).where(User.token == auth[7:]))
        return None

    if request_loader:
        login_manager.request_loader(load_user_from_request)

    db.init_app(app)
    if csrf == "before":
        from flask_wtf.csrf import CSRFProtect

        CSRFProtect(app)
    if before_tracker is not None:
        before_tracker(app)
    tracker = UTMTracker(app, db=db, user_model=User)
    if csrf == "after":
        from flask_wtf.csrf import CSRFProtect

        CSRFProtect(app)

    @app.route("/")
    def home() -> str:
        return "home"

    @app.route("/landing")
    def landing() -> str:
        return "landing"

    @app.route("/go")
    def go() -> t.Any:
        from flask import redirect

        return redirect("/landing")

    @app.route("/login/<email>", methods=["POST"])
    def login(email: str) -> str:
        user = db.session.scalar(sa.select(User).where(User.email == email))
        if user is None:
            user = User(email=email, token=secrets.token_hex(8))
            db.session.add(user)
            db.session.commit()
        login_user(user, remember=request.args.get("remember") == "1")
        return str(user.id)

    @app.route("/logout", methods=["POST"])
    def logout() -> str:
        logout_user()
        return "bye"

    with app.app_context():
        db.create_all()
    made = HostApp(app, db, User, tracker)
    _made.append(made)
    return made


@pytest.fixture
def env(db_url: str) -> HostApp:
    return make_app(db_url)


@pytest.fixture
def app(env: HostApp) -> Flask:
    return env.app


@pytest.fixture
def client(app: Flask) -> t.Any:
    return app.test_client()
