"""Per-request cost of each figure of ``bench/run.py``, in one process and one thread (no server,
no load generator), so it holds still on a busy machine: the same requests as the wrk scripts,
sent to the WSGI apps of ``bench/apps.py`` (behind ``ProxyFix``, with ``CSRFProtect`` and the
request-signal receivers), subject beside baseline. With ``--profile NAME`` it also prints where
the subject's time goes (cProfile, cumulative).

    .venv/bin/python bench/micro.py                  # SQLite in a temporary file
    .venv/bin/python bench/micro.py --db postgresql+psycopg://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/micro.py --profile login  # beacon, collector, page, landing, login

One thread means a batch of one beacon per commit (group commit gathers beacons only when several
threads wait), so the beacon figures here are the cost of a beacon on a quiet site.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import io
import json
import os
import pstats
import random
import sys
import tempfile
import timeit
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import UA, pg_schema, prepare  # noqa: E402

HOST = "127.0.0.1:8000"
WSGIApp = t.Callable[..., t.Iterable[bytes]]


def build(kind: str, db_url: str) -> WSGIApp:
    """``bench.apps.make()`` for ``BENCH_APP=kind``."""
    from bench import apps

    os.environ.update(BENCH_APP=kind, BENCH_DB=db_url)
    return apps.make()


def address() -> str:
    if random.random() < 0.5:
        return ".".join(str(random.randint(11, 222)) for _ in range(4))
    return ":".join(f"{random.randint(0, 0xFFFF):x}" for _ in range(8))


def call(
    app: WSGIApp,
    method: str,
    path: str,
    query: str = "",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> str:
    """One request through ``app``; its status line."""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": HOST,
        "HTTP_USER_AGENT": UA,
        "HTTP_ORIGIN": f"http://{HOST}",
        "HTTP_X_FORWARDED_FOR": address(),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key == "CONTENT_TYPE" else f"HTTP_{key}"] = value
    status: list[str] = []
    out = app(environ, lambda s, h, e=None: status.append(s))
    b"".join(out)
    if hasattr(out, "close"):
        out.close()
    return status[0]


def beacon_body(n: int) -> bytes:
    return json.dumps(
        {
            "v": f"v{n}",
            "touches": [
                {
                    "id": f"t{n}",
                    "ts": 1_750_000_000_000,
                    "url": "https://www.example.com/pricing?utm_source=newsletter&utm_medium=email"
                    "&utm_campaign=spring",
                    "referrer": "https://mail.google.com/",
                    "params": {
                        "utm_source": "newsletter",
                        "utm_medium": "email",
                        "utm_campaign": "spring",
                    },
                }
            ],
        }
    ).encode()


def login_cookie(n: int) -> str:
    """The visitor cookie of ``bench/lua/login.lua``: 10 pending touches with new ids."""
    sources = [("google", "cpc"), ("newsletter", "email"), ("facebook", "social")]
    touches = []
    for k in range(10):
        source, medium = sources[k % 3]
        touches.append(
            {
                "id": f"t{n}-{k}",
                "ts": 1_750_000_000_000 + k * 60_000,
                "url": f"https://www.example.com/p?utm_source={source}&utm_medium={medium}"
                f"&utm_campaign=c{k}",
                "params": {"utm_source": source, "utm_medium": medium, "utm_campaign": f"c{k}"},
            }
        )
    raw = json.dumps({"v": f"v{n}", "t": touches}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def csrf(app: WSGIApp) -> tuple[str, str]:
    """The session cookie and CSRF token of the login form (``GET /csrf``)."""
    environ_headers: list[tuple[str, str]] = []
    body: list[bytes] = []

    def start(status: str, headers: list[tuple[str, str]], exc: t.Any = None) -> None:
        environ_headers.extend(headers)

    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path="/csrf", base_url=f"http://{HOST}").get_environ()
    body.extend(app(environ, start))
    cookie = next(v for k, v in environ_headers if k == "Set-Cookie").split(";", 1)[0]
    return cookie, b"".join(body).decode()


def per_call(func: t.Callable[[], t.Any], number: int) -> float:
    """Microseconds per call (best of three, after a warm-up)."""
    for _ in range(min(number, 50)):
        func()
    return min(timeit.repeat(func, number=number, repeat=3)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="a PostgreSQL URL (default: SQLite in a temporary file)")
    parser.add_argument(
        "--profile", choices=["beacon", "collector", "page", "landing", "login"], action="append"
    )
    parser.add_argument("-n", type=int, default=500, help="calls per timing")
    options = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if options.db:
            url = stack.enter_context(pg_schema("bench_micro", options.db))
        else:
            url = f"sqlite:///{stack.enter_context(tempfile.TemporaryDirectory())}/micro.db"
        measure(prepare(url), options.n, options.profile or [])


def measure(url: str, number: int, profile: list[str]) -> None:
    apps = {kind: build(kind, url) for kind in ("bare", "plain", "tracked", "collector")}
    counter = iter(range(10**9))
    cookie, token = csrf(apps["plain"])
    beacon_headers = {"Content-Type": "text/plain;charset=UTF-8"}
    landing = "utm_source=newsletter&utm_medium=email&utm_campaign=spring"

    def beacon(app: WSGIApp) -> t.Callable[[], None]:
        def run() -> None:
            status = call(
                app, "POST", "/utm/beacon", "", beacon_body(next(counter)), beacon_headers
            )
            assert status.startswith("204"), status

        return run

    def get(app: WSGIApp, query: str = "") -> t.Callable[[], None]:
        return lambda: call(app, "GET", "/" if not query else "/landing", query)

    def login(app: WSGIApp) -> t.Callable[[], None]:
        def run() -> None:
            n = next(counter)
            status = call(
                app,
                "POST",
                f"/login/bench-{n % 1000}@example.com",
                "",
                f"csrf_token={token}".encode(),
                {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Cookie": f"{cookie}; utm_tracker={login_cookie(n)}",
                },
            )
            assert status.startswith("200"), status

        return run

    figures = {
        "beacon": ("bare Flask beacon", beacon(apps["bare"]), beacon(apps["tracked"])),
        "collector": ("bare Flask beacon", beacon(apps["bare"]), beacon(apps["collector"])),
        "page": ("GET / without the extension", get(apps["plain"]), get(apps["tracked"])),
        "landing": (
            "GET /landing?utm_... without",
            get(apps["plain"], landing),
            get(apps["tracked"], landing),
        ),
        "login": ("login without the extension", login(apps["plain"]), login(apps["tracked"])),
    }
    names = {
        "beacon": "beacon, host app with the extension",
        "collector": "beacon, standalone collector",
        "page": "GET /, with the extension",
        "landing": "GET /landing?utm_..., with",
        "login": "login with 10 pending touches, with",
    }
    backend = url.split(":", 1)[0].split("+")[0]
    print(f"{backend}: microseconds per request, one thread")
    print("| baseline | us | subject | us | ratio |\n|---|---|---|---|---|")
    for key, (base_name, base, subject) in figures.items():
        n = number // 5 if key == "login" else number
        b_us, s_us = per_call(base, n), per_call(subject, n)
        print(f"| {base_name} | {b_us:,.0f} | {names[key]} | {s_us:,.0f} | {b_us / s_us:.2f} |")
    for key in profile:
        profiler = cProfile.Profile()
        subject = figures[key][2]
        profiler.enable()
        for _ in range(number // 5 if key == "login" else number):
            subject()
        profiler.disable()
        print(f"\n## {names[key]}: cProfile, cumulative")
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("cumulative").print_stats(35)


if __name__ == "__main__":
    main()
