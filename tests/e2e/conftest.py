"""Fixtures for the end-to-end tests: real Chromium (Playwright for Python) against a host app with
the extension, served on loopback by werkzeug in a thread, on SQLite and PostgreSQL.

Chromium is the Debian package at ``/usr/bin/chromium`` (``apt-get install -y chromium``), never a
``playwright install`` download. Without it these tests skip, loudly; with ``CI`` set they fail.
Two host names, ``www.example.test`` and ``app.example.test``, resolve to 127.0.0.1 inside the
browser (``--host-resolver-rules``), for the landing page on one sub-domain and the app on another.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import typing as t
from html import escape
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import render_template_string

from tests.conftest import HostApp, make_app

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP www.example.test 127.0.0.1, MAP app.example.test 127.0.0.1",
]
WEBMAIL = "https://mail.google.com/"


def _unavailable(message: str) -> t.NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run the Chromium tests.")
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium() -> t.Iterator[t.Any]:
    """One Chromium for the whole run."""
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"Chromium tests need {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Chromium tests need Playwright for Python (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


class Outage:
    """WSGI middleware in front of the app: counts beacons and, while ``down``, answers them 503."""

    def __init__(self, wsgi_app: t.Any) -> None:
        self.wsgi_app = wsgi_app
        self.down = False
        self.beacons: list[tuple[str, int]] = []

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        if environ["PATH_INFO"].endswith("/utm/beacon") and environ["REQUEST_METHOD"] == "POST":
            status = 503 if self.down else 0
            if status:
                self.beacons.append((environ.get("HTTP_HOST", ""), status))
                start_response("503 Service Unavailable", [("Content-Type", "application/json")])
                return [b'{"error": "down for the test"}']

            def recording(status_line: str, headers: t.Any, *args: t.Any) -> t.Any:
                self.beacons.append((environ.get("HTTP_HOST", ""), int(status_line[:3])))
                return start_response(status_line, headers, *args)

            return self.wsgi_app(environ, recording)
        return self.wsgi_app(environ, start_response)


class Site:
    """The host app served on 127.0.0.1, reached as 127.0.0.1, www.example.test or app.example.test.

    ``/app?...`` is a page of the app itself, with ``{{ utm_tracker_script() }}``: the request hook
    sees it. ``/static/<name>.html`` pages stand for a marketing site the app never sees (the hook
    skips static files): they embed the snippet with a plain script tag.
    """

    def __init__(self, env: HostApp, port: int, static: Path) -> None:
        self.env = env
        self.app = env.app
        self.port = port
        self.static = static
        self.outage = Outage(self.app.wsgi_app)
        self.app.wsgi_app = self.outage  # type: ignore[method-assign]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def landing(self, name: str, snippet_host: str = "127.0.0.1", **data: str) -> str:
        """Write ``/static/<name>.html``, a landing page with the snippet's script tag."""
        attrs = "".join(f' data-{k.replace("_", "-")}="{escape(v)}"' for k, v in data.items())
        src = self.url("/utm/snippet.js", snippet_host)
        (self.static / f"{name}.html").write_text(
            f'<!doctype html><title>{name}</title><h1>{name}</h1><a id="next" href="/app">app</a>'
            f'<script src="{src}" async{attrs}></script>'
        )
        return f"/static/{name}.html"

    def rows(self, model: str) -> list[t.Any]:
        """Every ``Touch`` or ``LeadSource`` row, read fresh."""
        with self.app.app_context():
            table = getattr(self.env.tracker, model)
            rows = list(self.env.db.session.scalars(sa.select(table).order_by(table.id)))
            self.env.db.session.expunge_all()
            return rows

    def wait_rows(
        self, model: str, count: int, timeout: float = 10.0, at_least: bool = False
    ) -> list[t.Any]:
        """Wait until there are ``count`` rows of ``model`` (and no more, unless ``at_least``),
        then return them."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows(model)
            if len(rows) >= count or time.monotonic() > deadline:
                if at_least:
                    assert len(rows) >= count, f"{len(rows)} {model} rows, expected {count}+"
                else:
                    assert len(rows) == count, f"{len(rows)} {model} rows, expected {count}: {rows}"
                return rows
            time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def site(db_url: str, tmp_path: Path) -> t.Iterator[t.Callable[..., Site]]:
    """Make and serve a host app: ``site(UTM_TRACKER_COOKIE_DOMAIN=..., ...)``."""
    from werkzeug.serving import make_server

    servers: list[t.Any] = []

    def start(**config: t.Any) -> Site:
        port = _free_port()
        config = {
            "UTM_TRACKER_ALLOWED_ORIGINS": [f"http://www.example.test:{port}"],
            **config,
        }
        env = make_app(db_url, **config)
        static = tmp_path / "static"
        static.mkdir(exist_ok=True)
        env.app.static_folder = str(static)
        if "static" not in env.app.view_functions:
            env.app.add_url_rule(
                "/static/<path:filename>", endpoint="static", view_func=env.app.send_static_file
            )

        @env.app.route("/app")
        def app_page() -> str:
            attrs = json.loads(env.app.config.get("E2E_SCRIPT_ATTRS", "{}"))
            return render_template_string(
                "<!doctype html><title>app</title><h1>app</h1>{{ utm_tracker_script(**attrs) }}",
                attrs=attrs,
            )

        made = Site(env, port, static)
        server = make_server("127.0.0.1", port, made.app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return made

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Tab:
    """A page in a fresh browser context that records page errors and the beacons it sends."""

    def __init__(self, context: t.Any) -> None:
        self.context = context
        self.page = context.new_page()
        self.errors: list[str] = []
        self.beacons: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", self._request)

    def _request(self, request: t.Any) -> None:
        if request.url.endswith("/utm/beacon") and request.method == "POST":
            self.beacons.append(request.post_data or "")

    def goto(self, url: str, referer: str | None = None) -> None:
        """Open ``url`` and wait until the snippet has run and its first beacons have settled."""
        self.page.goto(url, referer=referer)
        self.settle()

    def settle(self) -> None:
        self.page.wait_for_function("window.utmTracker")
        self.page.evaluate("utmTracker.flush()")

    def leave(self) -> None:
        """Go to a page of the same origin without the snippet, as a visitor moving on: the page
        before gets its ``pagehide`` (a page that began without the snippet's cookie keeps its
        state in memory until then)."""
        self.page.goto(self.page.evaluate("location.origin") + "/utm/openapi.json")

    def storage(self, key: str = "utm_tracker") -> t.Any:
        return self.page.evaluate(f"JSON.parse(localStorage.getItem({key!r}))")

    def cookie(self, name: str = "utm_tracker") -> dict[str, t.Any] | None:
        from flask_utm_tracker import cookie as cookies

        for item in self.context.cookies():
            if item["name"] == name:
                state = cookies.decode(item["value"])
                assert state is not None, item
                return {"v": state.visitor_id, "t": state.pending, "l": state.latest, **item}
        return None

    def login(self, email: str = "lead@example.com") -> None:
        """Log in from the page (same origin), as a login form would."""
        status = self.page.evaluate(
            "(email) => fetch('/login/' + email, {method: 'POST'}).then(r => r.status)", email
        )
        assert status == 200


@pytest.fixture
def tab(chromium: t.Any) -> t.Iterator[Tab]:
    """A fresh browser context (no cookies, no storage) and page; no page error may occur."""
    context = chromium.new_context()
    made = Tab(context)
    yield made
    context.close()
    assert made.errors == [], f"page errors: {made.errors}"
