"""The beacon lane answers a new visitor's beacon as the view does, and leaves the rest to Flask."""

from __future__ import annotations

import json
import typing as t

import flask
import pytest
import sqlalchemy as sa
from flask import Flask, Response, request_started
from flask_utm_tracker import cookie as cookies
from flask_utm_tracker import lane
from flask_utm_tracker.lane import BeaconLane
from werkzeug.middleware.proxy_fix import ProxyFix

from .conftest import HostApp, make_app
from .test_beacon import VISITOR, beacon, touch, touches

OTHER = "Other_visitor_0123456789"


class Dispatches:
    """Counts the beacons that reach Flask behind an app's lane."""

    def __init__(self, app: Flask) -> None:
        lane = app.wsgi_app
        while not isinstance(lane, BeaconLane):
            lane = lane.app  # type: ignore[attr-defined]
        inner = lane.wsgi_app
        self.paths: list[str] = []

        def counting(environ: t.Any, start_response: t.Any) -> t.Any:
            self.paths.append(environ["PATH_INFO"])
            return inner(environ, start_response)

        lane.wsgi_app = counting

    @property
    def beacons(self) -> int:
        return self.paths.count("/utm/beacon")


def ready(env: HostApp) -> Dispatches:
    """The app after its first request (the lane waits for the host's setup to finish)."""
    counter = Dispatches(env.app)
    assert env.app.test_client().get("/").status_code == 200
    return counter


def stored(env: HostApp) -> list[dict[str, t.Any]]:
    skip = {"id", "received_at"}
    return [
        {k: v for k, v in vars(row).items() if k not in skip and not k.startswith("_")}
        for row in touches(env)
    ]


def answer(response: t.Any) -> tuple[t.Any, ...]:
    """What a browser sees of a beacon's answer: status, headers, the cookie's content, body."""
    set_cookie = response.headers.getlist("Set-Cookie")
    value = [c.split(";", 1)[0].split("=", 1)[1] for c in set_cookie]
    attributes = [c.split(";", 1)[1] for c in set_cookie]
    headers = sorted(
        (k, v) for k, v in response.headers.items() if k not in ("Set-Cookie", "Content-Length")
    )
    return (
        response.status_code,
        headers,
        [cookies.decode(v) for v in value],
        attributes,
        response.get_data(),
    )


def test_the_lane_answers_and_stores_as_the_view_does(db_url: str) -> None:
    config = {"UTM_TRACKER_MAX_TOUCHES_PER_VISITOR": 3, "UTM_TRACKER_CUSTOM_TAGS": ["ref"]}
    lane_env = make_app(db_url, **config)
    view_env = make_app(db_url, UTM_TRACKER_BEACON_LANE=False, **config)  # the same tables
    assert not isinstance(view_env.app.wsgi_app, BeaconLane)
    dispatched = ready(lane_env)
    assert view_env.app.test_client().get("/").status_code == 200

    own_cookie = cookies.encode(cookies.CookieState(VISITOR))
    other_cookie = cookies.encode(cookies.CookieState(OTHER))
    unicode_url = "https://www.example.com/é?utm_source=Zeitung&utm_campaign=Grüße&ref=ünï"
    steps: list[tuple[str | None, dict[str, t.Any], dict[str, str]]] = [
        (None, {"v": VISITOR, "touches": [touch(1)]}, {"Origin": "http://localhost"}),
        (own_cookie, {"v": VISITOR, "touches": [touch(2, referrer="https://www.google.com/")]}, {}),
        (own_cookie, {"v": VISITOR, "touches": [touch(1)]}, {}),  # sent again
        (other_cookie, {"v": VISITOR, "touches": [touch(3, url=unicode_url)]}, {}),
        (own_cookie, {"v": VISITOR, "touches": [touch(4), touch(5)]}, {}),  # past the cap
        (
            None,
            {
                "v": OTHER,
                "touches": [
                    {"id": "gclid-1", "ts": 1_750_000_000_100, "params": {"GCLID": "Cj0-Abc"}}
                ],
            },
            {},
        ),
        (
            None,
            {
                "v": OTHER,
                "touches": [{"id": "inner", "ts": 1_750_000_000_200, "url": "http://localhost/a"}],
            },
            {},
        ),
        ("not-our-cookie", {"v": OTHER, "touches": [touch(6)]}, {}),
    ]
    answers: dict[str, list[t.Any]] = {"lane": [], "view": []}
    rows: dict[str, list[dict[str, t.Any]]] = {}
    for name, env in (("lane", lane_env), ("view", view_env)):
        for cookie, body, headers in steps:
            client = env.app.test_client()
            if cookie is not None:
                client.set_cookie("utm_tracker", cookie)
            answers[name].append(answer(beacon(client, body, headers=headers)))
        rows[name] = stored(env)
        with env.app.app_context(), env.db.engine.begin() as conn:
            conn.execute(sa.delete(env.tracker.Touch.__table__))
    assert answers["lane"] == answers["view"]
    assert {a[0] for a in answers["lane"]} == {204}
    assert dispatched.beacons == 0  # every one was answered by the lane
    lane_rows = rows["lane"]
    assert lane_rows == rows["view"]
    assert [r["touch_id"] for r in lane_rows] == [
        "touch-1",
        "touch-2",
        "touch-3",
        "gclid-1",
        "touch-6",
    ]
    assert lane_rows[2]["custom_tags"] == {"ref": "ünï"}


def test_beacons_the_lane_leaves_to_the_view(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_ALLOWED_ORIGINS=["https://www.example.com"])
    dispatched = ready(env)
    client = env.app.test_client()
    body = {"v": VISITOR, "touches": [touch(1)]}

    crawler = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    assert beacon(client, body, headers={"Origin": "https://evil.example"}).status_code == 403
    allowed = beacon(client, body, headers={"Origin": "https://www.example.com"})
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://www.example.com"
    assert (
        beacon(client, {**body, "touches": [touch(2)]}, headers={"Sec-GPC": "1"}).status_code == 204
    )
    bot = beacon(client, {**body, "touches": [touch(3)]}, headers={"User-Agent": crawler})
    assert bot.status_code == 204
    invalid = beacon(client, {"v": VISITOR, "touches": [{"id": "x", "ts": "soon", "url": "u"}]})
    # The view read the body again to say what is wrong with it.
    assert invalid.status_code == 400
    assert invalid.json["details"] == {"touches": {"0": {"ts": ["Not a valid integer."]}}}
    assert beacon(client, "[1, 2]").status_code == 400
    assert beacon(client, body, content_type="application/xml").status_code == 415
    assert beacon(client, "x" * 20_000).status_code == 413
    assert dispatched.beacons == 8
    assert [t_.touch_id for t_ in touches(env)] == ["touch-1"]  # stored once, by the view


def test_a_session_cookie_goes_through_flask(db_url: str) -> None:
    env = make_app(db_url)
    dispatched = ready(env)
    client = env.app.test_client()
    client.post("/login/lane@example.com")  # sets the session cookie
    assert beacon(client, {"v": VISITOR, "touches": [touch(1)]}).status_code == 204
    assert dispatched.beacons == 1
    (row,) = touches(env)
    assert row.claimed_by is not None  # the view saw the user


def test_host_hooks_and_signals_still_see_beacons(db_url: str) -> None:
    env = make_app(db_url)
    app = env.app
    maintenance = {"on": False}
    seen: list[str] = []

    @app.before_request
    def closed() -> t.Any:
        if maintenance["on"]:
            return Response("maintenance", status=503)
        return None

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers["X-Frame-Options"] = "DENY"
        return response

    def started(sender: Flask, **extra: t.Any) -> None:
        from flask import request

        seen.append(request.path)

    dispatched = ready(env)
    client = app.test_client()
    first = beacon(client, {"v": VISITOR, "touches": [touch(1)]})
    assert first.status_code == 204 and first.headers["X-Frame-Options"] == "DENY"
    maintenance["on"] = True
    assert beacon(client, {"v": VISITOR, "touches": [touch(2)]}).status_code == 503
    maintenance["on"] = False
    request_started.connect(started, app)
    try:
        assert beacon(client, {"v": VISITOR, "touches": [touch(3)]}).status_code == 204
    finally:
        request_started.disconnect(started, app)
    assert seen == ["/utm/beacon"]
    assert dispatched.beacons == 3
    assert [t_.touch_id for t_ in touches(env)] == ["touch-1", "touch-3"]


def test_the_rate_limit_counts_a_lane_beacon_once(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_RATE_LIMIT="3/minute")
    dispatched = ready(env)
    client = env.app.test_client()
    statuses = [beacon(client, {"v": VISITOR, "touches": [touch(n)]}).status_code for n in range(5)]
    assert statuses == [204, 204, 204, 429, 429]
    assert dispatched.beacons == 2  # the two 429 answers, written by the view
    assert len(touches(env)) == 3


@pytest.mark.parametrize("when", ["before", "after"])
def test_the_lane_sits_inside_proxy_fix(db_url: str, when: str) -> None:
    """The rate limit's key is the address ProxyFix finds, whichever was set up first."""

    def wrap(app: Flask) -> None:
        app.wsgi_app = ProxyFix(app.wsgi_app)  # type: ignore[method-assign]

    env = make_app(
        db_url, before_tracker=wrap if when == "before" else None, UTM_TRACKER_RATE_LIMIT="2/minute"
    )
    if when == "after":
        env.app.wsgi_app = ProxyFix(env.app.wsgi_app)  # type: ignore[method-assign]
    dispatched = ready(env)
    client = env.app.test_client()

    def from_(address: str, n: int) -> int:
        headers = {"X-Forwarded-For": address}
        return int(
            beacon(client, {"v": VISITOR, "touches": [touch(n)]}, headers=headers).status_code
        )

    assert [from_("203.0.113.1", n) for n in range(3)] == [204, 204, 429]
    assert [from_("203.0.113.2", n) for n in range(3, 6)] == [204, 204, 429]
    assert dispatched.beacons == 2  # only the 429 answers


def test_no_lane_outside_another_middleware(db_url: str) -> None:
    seen: list[str] = []

    def wrap(app: Flask) -> None:
        inner = app.wsgi_app

        def audit(environ: t.Any, start_response: t.Any) -> t.Any:
            seen.append(environ["PATH_INFO"])
            return inner(environ, start_response)

        app.wsgi_app = audit  # type: ignore[method-assign]

    env = make_app(db_url, before_tracker=wrap)
    assert not isinstance(env.app.wsgi_app, BeaconLane)
    client = env.app.test_client()
    for n in range(3):
        assert beacon(client, {"v": VISITOR, "touches": [touch(n)]}).status_code == 204
    assert seen == ["/utm/beacon"] * 3
    assert len(touches(env)) == 3


def test_a_failed_write_answers_503_and_keeps_nothing_half_written(db_url: str) -> None:
    env = make_app(db_url)
    ready(env)
    client = env.app.test_client()
    assert beacon(client, {"v": VISITOR, "touches": [touch(1)]}).status_code == 204
    with env.app.app_context():
        env.tracker.Touch.__table__.drop(env.db.engine)
    failed = beacon(client, {"v": VISITOR, "touches": [touch(2)]})
    assert failed.status_code == 503
    assert failed.headers["Retry-After"] == "30"
    assert failed.json["error"].startswith("The database is unavailable")
    with env.app.app_context():
        env.tracker.Touch.__table__.create(env.db.engine)
    assert beacon(client, {"v": VISITOR, "touches": [touch(2)]}).status_code == 204
    assert [t_.touch_id for t_ in touches(env)] == ["touch-2"]


def test_the_lane_can_be_turned_off(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_BEACON_LANE=False)
    assert not isinstance(env.app.wsgi_app, BeaconLane)
    assert env.app.test_client().get("/").status_code == 200
    response = beacon(env.app.test_client(), json.dumps({"v": VISITOR, "touches": [touch(1)]}))
    assert response.status_code == 204
    assert [t_.touch_id for t_ in touches(env)] == ["touch-1"]


def test_a_host_wrapper_around_the_view_still_runs(db_url: str) -> None:
    env = make_app(db_url)
    view = env.app.view_functions["utm_tracker.beacon"]

    def no_store(*args: t.Any, **kwargs: t.Any) -> t.Any:  # no functools.wraps, on purpose
        response = view(*args, **kwargs)
        response.headers["Cache-Control"] = "no-store"
        return response

    env.app.view_functions["utm_tracker.beacon"] = no_store
    dispatched = ready(env)
    response = beacon(env.app.test_client(), {"v": VISITOR, "touches": [touch(1)]})
    assert response.status_code == 204
    assert response.headers["Cache-Control"] == "no-store"
    assert dispatched.beacons == 1


def test_no_lane_when_flask_dispatch_is_overridden_or_patched(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools

    original = Flask.full_dispatch_request

    @functools.wraps(original)
    def traced(self: Flask) -> t.Any:  # what an APM agent does to the class
        return original(self)

    monkeypatch.setattr(Flask, "full_dispatch_request", traced)
    env = make_app(db_url)
    assert not isinstance(env.app.wsgi_app, BeaconLane)
    monkeypatch.undo()

    class Timed(Flask):
        def ensure_sync(self, func: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
            return super().ensure_sync(func)

    app = Timed(__name__)
    assert not lane.install(app, env.tracker, lambda response: response)


@pytest.mark.parametrize(
    ("attribute", "value", "status"),
    [("trusted_hosts", ["www.example.com"], 400), ("max_content_length", 100, 413)],
)
def test_settings_on_flask_request_class_hold_for_beacons(
    db_url: str, monkeypatch: pytest.MonkeyPatch, attribute: str, value: t.Any, status: int
) -> None:
    env = make_app(db_url)
    dispatched = ready(env)
    monkeypatch.setattr(flask.Request, attribute, value)
    response = beacon(env.app.test_client(), {"v": VISITOR, "touches": [touch(1)]})
    assert response.status_code == status
    assert dispatched.beacons == 1
    assert touches(env) == []


def test_bodies_read_as_werkzeug_reads_them(db_url: str) -> None:
    env = make_app(db_url)
    dispatched = ready(env)
    client = env.app.test_client()
    body = json.dumps({"v": VISITOR, "touches": [touch(1)]})
    signed = beacon(client, body, environ_overrides={"CONTENT_LENGTH": f"+{len(body)}"})
    assert signed.status_code == 400  # werkzeug reads no body for a signed length
    chunked = beacon(
        client,
        body,
        environ_overrides={"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True},
    )
    assert chunked.status_code == 204  # the length is ignored, the whole body read
    assert dispatched.beacons == 2
    assert [t_.touch_id for t_ in touches(env)] == ["touch-1"]


def test_flask_login_refreshing_the_remember_cookie_goes_through_flask(db_url: str) -> None:
    env = make_app(db_url, REMEMBER_COOKIE_REFRESH_EACH_REQUEST=True)
    dispatched = ready(env)
    client = env.app.test_client()
    client.set_cookie("session", "stale")
    response = beacon(client, {"v": VISITOR, "touches": [touch(1)]})
    assert response.status_code == 204
    assert any(c.startswith("session=;") for c in response.headers.getlist("Set-Cookie"))
    assert dispatched.beacons == 1


def test_a_test_client_keeping_the_context_sees_the_beacon_request(db_url: str) -> None:
    env = make_app(db_url)
    ready(env)
    with env.app.test_client() as client:
        assert beacon(client, {"v": VISITOR, "touches": [touch(1)]}).status_code == 204
        assert flask.request.path == "/utm/beacon"


def test_odd_cookies_are_read_as_the_view_reads_them(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = make_app(db_url)
    dispatched = ready(env)
    client = env.app.test_client()
    own = cookies.encode(cookies.CookieState(VISITOR))
    # The environ holds the header as latin-1: a UTF-8 byte of another cookie is not UTF-8 here.
    header = f"legacy=caf\xe9; utm_tracker={own}"
    response = beacon(
        client, {"v": VISITOR, "touches": [touch(1)]}, environ_overrides={"HTTP_COOKIE": header}
    )
    assert response.status_code == 204
    assert dispatched.beacons == 0
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_deeply_nested_cookie_comes_back_flat(db_url: str) -> None:
    import base64

    # Deep lists in a cookie the client controls (written by hand: nearer to the recursion limit).
    nested = "[" * 700 + '"x"' + "]" * 700
    raw = (
        f'{{"v":"{VISITOR}","l":{{"id":"a","ts":1,"x":{nested}}},"t":[{{"id":"b","y":{nested}}}]}}'
    )
    assert len(json.loads(raw)) == 3
    value = base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()
    assert len(value) < cookies.READ_LIMIT
    answers = []
    for lane_on in (True, False):
        env = make_app(db_url, UTM_TRACKER_BEACON_LANE=lane_on)
        ready(env) if lane_on else env.app.test_client().get("/")
        client = env.app.test_client()
        client.set_cookie("utm_tracker", value)
        response = beacon(client, {"v": VISITOR, "touches": [touch(1)]})
        answers.append(answer(response))
    assert answers[0] == answers[1]
    assert answers[0][0] == 204
    (state,) = answers[0][2]
    assert state.latest == {"id": "a", "ts": 1}
    assert state.pending == [{"id": "b"}]


def test_without_flask_login_the_answers_match_too(tmp_path: t.Any) -> None:
    from flask_sqlalchemy import SQLAlchemy
    from flask_utm_tracker import UTMTracker

    answers = []
    for lane_on in (True, False):
        app = Flask(__name__)
        app.config.update(
            SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/{lane_on}.db",
            UTM_TRACKER_BEACON_LANE=lane_on,
        )
        db = SQLAlchemy(app)

        class Account(db.Model):  # type: ignore[name-defined,misc]
            id = sa.Column(sa.Integer, primary_key=True)

        UTMTracker(app, db=db, user_model=Account)
        with app.app_context():
            db.create_all()
        app.test_client().get("/utm/snippet.js")
        counter = Dispatches(app) if lane_on else None
        answers.append(answer(beacon(app.test_client(), {"v": VISITOR, "touches": [touch(1)]})))
        if counter is not None:
            assert counter.beacons == 0
        with app.app_context():
            db.engine.dispose()
    assert answers[0] == answers[1]
    assert "Vary" not in dict(answers[0][1])


@pytest.mark.parametrize("order", ["before", "after"])
def test_the_lane_takes_beacons_with_csrf_protect(db_url: str, order: str) -> None:
    env = make_app(db_url, csrf=order)
    dispatched = ready(env)
    client = env.app.test_client()
    for n in range(4):
        assert beacon(client, {"v": VISITOR, "touches": [touch(n)]}).status_code == 204
    assert dispatched.beacons == 0
    assert client.post("/login/x@example.com").status_code == 400  # the host stays protected


def test_the_lane_answers_as_the_view_without_a_secret_key(db_url: str) -> None:
    answers = []
    for lane_on in (True, False):
        env = make_app(db_url, SECRET_KEY=None, UTM_TRACKER_BEACON_LANE=lane_on)
        dispatched = ready(env) if lane_on else None
        assert env.app.test_client().get("/").status_code == 200
        response = beacon(env.app.test_client(), {"v": VISITOR, "touches": [touch(int(lane_on))]})
        answers.append(answer(response))
        assert dispatched is None or dispatched.beacons == 0
    assert answers[0] == answers[1]
    assert "Vary" not in dict(answers[0][1])


def test_a_client_over_its_limit_has_no_body_read(db_url: str) -> None:
    import io

    env = make_app(db_url, UTM_TRACKER_RATE_LIMIT="1/minute")
    ready(env)
    client = env.app.test_client()
    assert beacon(client, {"v": VISITOR, "touches": [touch(1)]}).status_code == 204

    reads: list[int] = []

    class Unreadable(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            reads.append(size)
            return b""

    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(
        path="/utm/beacon", method="POST", data=b"x" * 100, content_type="text/plain"
    ).get_environ()
    environ["wsgi.input"] = Unreadable()
    environ["REMOTE_ADDR"] = "127.0.0.1"  # the test client's address, already over its limit
    statuses: list[str] = []
    body = b"".join(env.app(environ, lambda status, headers, exc=None: statuses.append(status)))
    assert statuses == ["429 TOO MANY REQUESTS"]
    assert reads == []  # a client over its limit costs no read
    assert json.loads(body)["error"].startswith("Too many beacons")


def test_a_patch_of_flask_after_init_app_sees_beacons(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools

    env = make_app(db_url)
    assert isinstance(env.app.wsgi_app, BeaconLane)
    seen: list[str] = []
    original = Flask.full_dispatch_request

    @functools.wraps(original)
    def traced(self: Flask) -> t.Any:
        seen.append(flask.request.path)
        return original(self)

    monkeypatch.setattr(Flask, "full_dispatch_request", traced)
    ready(env)
    assert beacon(env.app.test_client(), {"v": VISITOR, "touches": [touch(1)]}).status_code == 204
    assert seen == ["/", "/utm/beacon"]


def test_the_tracker_adds_no_vary_to_pages_it_leaves_alone(db_url: str) -> None:
    """Without Flask-Login (whose own hook reads the session), no page, snippet or beacon of
    the tracker's gets ``Vary: Cookie``: a CDN may cache the host's public pages."""
    from flask_sqlalchemy import SQLAlchemy
    from flask_utm_tracker import UTMTracker

    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=db_url, SECRET_KEY="s")
    db = SQLAlchemy(app)

    class Member(db.Model):  # type: ignore[name-defined,misc]
        id = sa.Column(sa.Integer, primary_key=True)

    UTMTracker(app, db=db, user_model=Member)

    @app.get("/")
    def home() -> str:
        return "home"

    with app.app_context():
        db.create_all()
    client = app.test_client()
    for path in ("/", "/utm/snippet.js", "/utm/openapi.json", "/?utm_source=news"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "Vary" not in response.headers, path
    assert "Vary" not in beacon(client, {"v": VISITOR, "touches": [touch(1)]}).headers
    with app.app_context():
        db.drop_all()
        db.engine.dispose()
