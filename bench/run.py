"""``make bench``: flask-utm-tracker's speed, each figure beside a baseline of the same run.

Serves the apps of ``bench/apps.py`` with gunicorn (gthread workers) on 127.0.0.1, drives them with
wrk (Lua scripts in ``bench/lua``; every beacon and login carries new ids, so every insert is
real), times the reports on a million ``LeadSource`` rows in a private PostgreSQL schema, and loads
the snippet in Chromium. Prints a table and writes ``bench/results.md``.

Each pair (subject, baseline) is measured in alternating rounds (baseline, subject, baseline,
subject, ...), so that a change in the machine's load during the run hits both sides alike.

Environment: ``BENCH_POSTGRES`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``),
``BENCH_SECONDS`` (seconds per round, default 2), ``BENCH_ROUNDS`` (default 10),
``BENCH_PAGE_ROUNDS`` (rounds of the plain-page and landing figures, default 3 x ROUNDS),
``BENCH_WORKERS`` (gunicorn processes of one worker each, default one per core),
``BENCH_THREADS`` (threads per worker, default 16), ``BENCH_CONNECTIONS`` (wrk connections in
all, default 32), ``BENCH_LEADS`` (rows for the report figures, default 1,000,000).

    .venv/bin/python bench/run.py               # the table, about 5 minutes on 2 cores
    .venv/bin/python bench/run.py --ablations   # plus the measurements behind bench/README.md
    .venv/bin/python bench/run.py --only ingest # one section: ingest, pages, reports, snippet
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t
import urllib.request
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.apps import make_host  # noqa: E402

BIN = Path(sys.executable).parent
LUA = ROOT / "bench" / "lua"
PG = os.environ.get("BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SECONDS = float(os.environ.get("BENCH_SECONDS", "2"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))
#: Rounds of the plain-page and landing figures, whose margins to their floors (a few percent)
#: are smallest against the spread of single rounds.
PAGE_ROUNDS = int(os.environ.get("BENCH_PAGE_ROUNDS", str(3 * ROUNDS)))
LEADS = int(os.environ.get("BENCH_LEADS", "1000000"))
WORKERS = int(os.environ.get("BENCH_WORKERS", os.cpu_count() or 2))
THREADS = int(os.environ.get("BENCH_THREADS", "16"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
WRK_THREADS = 2
#: Pin gunicorn n and its wrk to core n (BENCH_PIN=0: let the kernel place them).
CPUS = os.cpu_count() or 1
PIN = os.environ.get("BENCH_PIN", "1") == "1" and shutil.which("taskset") is not None
UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
SNIPPET = ROOT / "collector" / "flask_utm_tracker" / "static" / "snippet.js"
CHROMIUM = "/usr/bin/chromium"
#: Users the login figure logs in, one after the other.
LOGIN_USERS = 1000


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# -- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """:data:`WORKERS` gunicorn processes with one gthread worker each, serving
    ``bench.apps:make()`` on their own loopback ports (see :func:`wrk` for why not one gunicorn
    with several workers).
    """

    name: str
    app: str
    db: str = ""
    env: dict[str, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    acknowledged: int = 0  # 2xx answers to beacons, warm-up included

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    @property
    def url(self) -> str:
        return self.urls[0]

    def start(self, logdir: Path) -> None:
        env = {**os.environ, "BENCH_APP": self.app, "BENCH_DB": self.db, **self.env}
        for n in range(WORKERS):
            port = free_port()
            self.ports.append(port)
            logfile = open(logdir / f"{self.name}-{n}.log", "wb")  # noqa: SIM115
            pin = ["taskset", "-c", str(n % CPUS)] if PIN else []
            command = [
                *pin,
                str(BIN / "gunicorn"),
                "--worker-class",
                "gthread",
                "--workers",
                "1",
                "--threads",
                str(THREADS),
                "--bind",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                "bench.apps:make()",
            ]
            self.procs.append(
                subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=logfile, stderr=subprocess.STDOUT
                )
            )

    def wait_ready(self, path: str = "/", timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for url, proc in zip(self.urls, self.procs, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"gunicorn for {self.name} exited; see its log.")
                try:
                    with urllib.request.urlopen(url + path, timeout=2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"gunicorn for {self.name} did not answer within {timeout} s."
                        ) from None
                    time.sleep(0.2)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- wrk ---------------------------------------------------------------------------------------


@dataclass
class Load:
    """What wrk saw in one or more rounds."""

    ok: int = 0
    requests: int = 0
    seconds: float = 0.0
    socket_errors: int = 0
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    #: The 2xx rate of each round, in order.
    rounds: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """2xx answers per second."""
        return self.ok / self.seconds if self.seconds else 0.0

    def add(self, other: Load) -> None:
        self.ok += other.ok
        self.requests += other.requests
        self.seconds += other.seconds
        self.socket_errors += other.socket_errors
        self.p50_ms += other.p50_ms
        self.p99_ms += other.p99_ms
        self.rounds.append(other.rate)

    @property
    def p99(self) -> float:
        return max(self.p99_ms) if self.p99_ms else 0.0

    @property
    def p50(self) -> float:
        return statistics.median(self.p50_ms) if self.p50_ms else 0.0


def wrk(
    server: Server, path: str, script: str, seconds: float, args: t.Callable[[], list[str]]
) -> Load:
    """Load ``server`` for ``seconds`` with one wrk per gunicorn, all at once, each with an equal
    share of :data:`CONNECTIONS` and of :data:`WRK_THREADS`; only 2xx answers count as done.

    One gunicorn per worker, rather than one gunicorn with several workers, because the workers
    of one gunicorn share its listening socket and the kernel hands wrk's connections to
    whichever worker calls ``accept`` first: rounds measured 2+30, 9+23, 16+16 and 32+0
    connections per worker, and the rate of a round moved with that split by up to a factor of
    two, for bare Flask as for the tracked app. With one port per worker, each worker keeps
    exactly its share of the connections (as behind a load balancer); the workers still share
    the machine's cores with each other, with wrk and with PostgreSQL.
    """
    connections = max(1, CONNECTIONS // len(server.urls))
    runs = []
    for n, url in enumerate(server.urls):
        pin = ["taskset", "-c", str(n % CPUS)] if PIN else []
        command = [
            *pin,
            "wrk",
            "--threads",
            str(max(1, min(WRK_THREADS // len(server.urls), connections))),
            "--connections",
            str(connections),
            "--duration",
            f"{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "--header",
            f"User-Agent: {UA}",
            "--header",
            f"Origin: {url}",
            "--script",
            str(LUA / script),
            url + path,
        ]
        extra = args()
        if extra:
            command += ["--", *extra]
        runs.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    total = Load()
    for proc in runs:
        stdout, stderr = proc.communicate(timeout=seconds + 60)
        line = next((x for x in stdout.splitlines() if x.startswith("BENCH ")), None)
        if line is None:
            raise RuntimeError(f"wrk gave no summary:\n{stdout}\n{stderr}")
        data = json.loads(line[6:])
        total.ok += data["ok"]
        total.requests += data["requests"]
        total.socket_errors += data["socket_errors"]
        total.p50_ms.append(data["p50_us"] / 1000)
        total.p99_ms.append(data["p99_us"] / 1000)
        # The runs overlap: the rate is the sum of theirs, so count the mean duration once.
        total.seconds += data["duration_us"] / 1e6 / len(runs)
    return total


def run_id() -> str:
    return secrets.token_hex(4)


def compare(
    pairs: t.Sequence[tuple[Server, str, str, t.Callable[[], list[str]]]],
    rounds: int = ROUNDS,
    seconds: float = SECONDS,
    warmup: float = 2,
) -> list[Load]:
    """Measure each ``(server, path, script, args)`` in alternating rounds; one Load per entry.

    The order turns round every other round (A B, B A, A B, ...), so that a load on the machine
    rising or falling through a pair of rounds favours neither side.
    """
    loads = [Load() for _ in pairs]
    for server, path, script, args in pairs:
        warm = wrk(server, path, script, warmup, args)
        server.acknowledged += warm.ok
    for n in range(rounds):
        order = list(zip(loads, pairs, strict=True))
        for load, (server, path, script, args) in order if n % 2 == 0 else order[::-1]:
            got = wrk(server, path, script, seconds, args)
            server.acknowledged += got.ok
            load.add(got)
    return loads


def paired_ratio(subject: Load, base: Load) -> float:
    """The median of the rounds' ratios (each subject round over the baseline round measured
    beside it): the rates of single rounds on this shared machine move by several percent, and a
    ratio of two rounds measured seconds apart follows the machine's load less than a ratio of
    totals does; the median ignores a round that an outside burst of work spoiled.
    """
    ratios = round_ratios(subject, base)
    return statistics.median(ratios) if ratios else 0.0


def round_ratios(subject: Load, base: Load) -> list[float]:
    return [s / b for s, b in zip(subject.rounds, base.rounds, strict=True) if b]


# -- databases ---------------------------------------------------------------------------------


def pg_schema_url(schema: str, base: str = PG) -> str:
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def pg_schema(prefix: str, base: str = PG) -> t.Iterator[str]:
    """A private PostgreSQL schema, dropped afterwards; yields its URL."""
    schema = f"{prefix}_{secrets.token_hex(4)}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield pg_schema_url(schema, base)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def prepare(db_url: str) -> None:
    """Create the tables and the users who log in."""
    app, db, user = make_host(True, db_url)
    with app.app_context():
        db.create_all()
        db.session.add_all(user(email=f"bench-{n}@example.com") for n in range(LOGIN_USERS))
        db.session.commit()
        db.engine.dispose()


def count_touches(db_url: str) -> int:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        n = int(conn.execute(sa.text("SELECT count(*) FROM utm_touch")).scalar_one())
    engine.dispose()
    return n


# -- figures -----------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table."""

    what: str
    value: str
    baseline: str = ""
    ratio: float | None = None
    floor: str = ""
    aim: str = ""
    ok: bool | None = None
    note: str = ""


def ratio_row(
    what: str, subject: Load, base: Load, floor: float, aim: float | None = None, unit: str = "/s"
) -> Row:
    ratio = paired_ratio(subject, base)
    return Row(
        what,
        f"{subject.rate:,.0f} 2xx{unit}",
        f"{base.rate:,.0f} 2xx{unit}",
        ratio,
        f">= {floor}",
        f"{aim}" if aim else "",
        ratio >= floor,
        f"p99 {subject.p99:.1f} ms vs {base.p99:.1f} ms; {spread(subject, base)}",
    )


def spread(subject: Load, base: Load) -> str:
    ratios = round_ratios(subject, base)
    if not ratios:
        return ""
    return f"median of {len(ratios)} rounds' ratios, {min(ratios):.2f} to {max(ratios):.2f}"


def ingest_figures(logdir: Path, ablations: bool) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, pg_schema("bench_ingest") as pg_url:
        sqlite_url = f"sqlite:///{tmp}/bench.db"
        prepare(sqlite_url)
        prepare(pg_url)
        bare = Server("bare", "bare")
        lite = Server("tracked-sqlite", "tracked", sqlite_url)
        pg = Server("tracked-postgresql", "tracked", pg_url)
        extra: list[Server] = []
        if ablations:
            lite_nobatch_url = f"sqlite:///{tmp}/nobatch.db"
            lite_rollback_url = f"sqlite:///{tmp}/rollback.db"
            for url in (lite_nobatch_url, lite_rollback_url):
                prepare(url)
            extra = [
                Server(
                    "sqlite-no-group-commit", "tracked", lite_nobatch_url, {"BENCH_MAX_BATCH": "1"}
                ),
                Server(
                    "sqlite-rollback-journal",
                    "tracked",
                    lite_rollback_url,
                    {"BENCH_SQLITE_PRAGMAS": "0"},
                ),
                Server("postgresql-no-group-commit", "tracked", pg_url, {"BENCH_MAX_BATCH": "1"}),
                Server("sqlite-no-lane", "tracked", sqlite_url, {"BENCH_LANE": "0"}),
                Server("postgresql-no-lane", "tracked", pg_url, {"BENCH_LANE": "0"}),
            ]
        servers = [bare, lite, pg, *extra]
        try:
            for server in servers:
                server.start(logdir)
            for server in servers:
                server.wait_ready("/" if server.app == "bare" else "/utm/snippet.js")
            log("beacon ingest: bare Flask, SQLite, PostgreSQL")
            prefix = run_id()
            args = lambda: [f"{prefix}{run_id()}"]  # noqa: E731
            pairs = [(s, "/utm/beacon", "beacon.lua", args) for s in servers]
            loads = compare(pairs)
            by_name = {s.name: load for s, load in zip(servers, loads, strict=True)}
            base = by_name["bare"]
            rows.append(
                ratio_row("beacon ingest, SQLite (WAL)", by_name[lite.name], base, 0.5, 0.7)
            )
            rows.append(ratio_row("beacon ingest, PostgreSQL", by_name[pg.name], base, 0.3, 0.5))
            for server in extra:
                rows.append(ratio_row(f"ablation: {server.name}", by_name[server.name], base, 0))
        finally:
            for server in servers:
                server.stop()
        # "A 2xx means it is stored": every acknowledged beacon has its row.
        checks = [(lite, sqlite_url), (pg, pg_url)]
        for server, url in checks:
            stored = count_touches(url)
            # Every server writing to this database.
            acknowledged = sum(s.acknowledged for s in servers if s.db == url)
            rows.append(
                Row(
                    f"acknowledged beacons stored, {server.name}",
                    f"{stored:,} rows",
                    f"{acknowledged:,} 2xx",
                    None,
                    "rows >= 2xx",
                    "",
                    stored >= acknowledged,
                )
            )
    return rows


def page_figures(logdir: Path) -> list[Row]:
    rows: list[Row] = []
    with pg_schema("bench_pages") as pg_url:
        prepare(pg_url)
        plain = Server("plain", "plain", pg_url)
        tracked = Server("tracked", "tracked", pg_url)
        try:
            for server in (plain, tracked):
                server.start(logdir)
            for server in (plain, tracked):
                server.wait_ready()
            none = lambda: []  # noqa: E731
            log("plain page, with and without the extension")
            base, subject = compare(
                [(plain, "/", "get.lua", none), (tracked, "/", "get.lua", none)],
                rounds=PAGE_ROUNDS,
            )
            rows.append(ratio_row("plain page, with the extension", subject, base, 0.95))
            log("landing page with utm parameters, new visitor")
            landing = "/landing?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
            base, subject = compare(
                [(plain, landing, "get.lua", none), (tracked, landing, "get.lua", none)],
                rounds=PAGE_ROUNDS,
            )
            rows.append(ratio_row("landing page with utm, new visitor", subject, base, 0.8))
            log("login with 10 pending touches")
            prefix = run_id()
            args = lambda: [f"{prefix}{run_id()}", "utm_tracker", str(LOGIN_USERS)]  # noqa: E731
            path = "/login/"
            base, subject = compare(
                [(plain, path, "login.lua", args), (tracked, path, "login.lua", args)]
            )
            row = ratio_row("login with 10 pending touches", subject, base, 0.0)
            row.floor, row.ok = "report", None
            row.note = (
                f"p99 {subject.p99:.1f} ms vs {base.p99:.1f} ms;"
                f" p50 {subject.p50:.1f} ms vs {base.p50:.1f} ms"
            )
            rows.append(row)
        finally:
            for server in (plain, tracked):
                server.stop()
        engine = sa.create_engine(pg_url)
        with engine.connect() as conn:
            leads = int(conn.execute(sa.text("SELECT count(*) FROM utm_lead_source")).scalar_one())
        engine.dispose()
        log(f"logins wrote {leads:,} LeadSource rows")
    return rows


# -- reports on a million rows -----------------------------------------------------------------

CHANNELS = [
    ("google", "cpc", "Paid Search"),
    ("google", "organic", "Organic Search"),
    ("bing", "organic", "Organic Search"),
    ("facebook", "social", "Organic Social"),
    ("facebook", "paid_social", "Paid Social"),
    ("newsletter", "email", "Email"),
    ("partner.example", "referral", "Referral"),
    ("chatgpt", "ai", "AI Assistants"),
    ("display-network", "display", "Display"),
    ("(not set)", "(not set)", "Unassigned"),
]


def generate_leads(db_url: str, n: int) -> None:
    """``n`` LeadSource rows, 5 per user, over the last year, with one set-based INSERT."""
    users = max(1, n // 5)
    first = LOGIN_USERS + 1  # after the users of prepare()
    arr = lambda i: "ARRAY[" + ", ".join(f"'{c[i]}'" for c in CHANNELS) + "]"  # noqa: E731
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO users (id, email) SELECT g, 'user' || g || '@example.com'"
                " FROM generate_series(:first, :first + :users - 1) AS g"
            ),
            {"users": users, "first": first},
        )
        conn.execute(
            sa.text(
                f"""
                WITH g AS (
                    SELECT s, :first + (s - 1) / 5 AS uid, (s - 1) % 5 AS k,
                           ((s::bigint * 7919) % {len(CHANNELS)}) + 1 AS c,
                           now() - make_interval(days => ((s - 1) / 5) % 365)
                               - make_interval(hours => ((s - 1) % 5) * 24) AS signup
                    FROM generate_series(1, :n) AS s
                )
                INSERT INTO utm_lead_source (
                    user_id, touch_id, visitor_id, medium, source, campaign, term, content,
                    click_ids, custom_tags, referrer, landing_url, channel, timestamp, created_at)
                SELECT uid, 'touch-' || s, 'visitor-' || uid, ({arr(1)})[c], ({arr(0)})[c],
                       'campaign-' || (s % 200), '', '', '{{}}', '{{}}', NULL,
                       'https://www.example.com/?utm_campaign=campaign-' || (s % 200),
                       ({arr(2)})[c], signup - make_interval(hours => k * 24),
                       now() - make_interval(days => ((s - 1) / 5) % 365)
                FROM g
                """
            ),
            {"n": n, "first": first},
        )
        conn.execute(
            sa.text("SELECT setval(pg_get_serial_sequence('users', 'id'), :m)"),
            {"m": first + users},
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))
    engine.dispose()


def timed(func: t.Callable[[], t.Any], runs: int) -> tuple[float, float, float]:
    """p50 and max of ``runs`` calls after a first one, and that first one, in milliseconds."""
    start = time.perf_counter()
    func()
    first = (time.perf_counter() - start) * 1000
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times), first


def report_figures(runs: int = 5) -> list[Row]:
    from flask_utm_tracker import reports

    rows: list[Row] = []
    with pg_schema("bench_reports") as url:
        prepare(url)
        log(f"generating {LEADS:,} LeadSource rows")
        started = time.perf_counter()
        generate_leads(url, LEADS)
        log(f"generated in {time.perf_counter() - started:.1f} s; timing the reports")
        app, db, _ = make_host(True, url)
        tracker = app.extensions["utm_tracker"].tracker
        today = datetime.now(timezone.utc).date()
        month = {"start": today - timedelta(days=29), "end": today}
        whole: dict[str, date | None] = {"start": None, "end": None}
        calls: list[tuple[str, t.Callable[[], t.Any]]] = [
            *(
                (
                    f"reports.leads(channel, model={m}), 30 days",
                    lambda m=m: reports.leads(tracker, "channel", model=m, **month),
                )
                for m in reports.MODELS
            ),
            (
                "reports.leads(channel, first), all time",
                lambda: reports.leads(tracker, "channel", **whole),
            ),
            (
                "reports.leads(source, limit=10), 30 days",
                lambda: reports.leads(tracker, "source", limit=10, **month),
            ),
            (
                "reports.leads(campaign, limit=10), 30 days",
                lambda: reports.leads(tracker, "campaign", limit=10, **month),
            ),
            (
                "reports.series(channel, day), 30 days",
                lambda: reports.series(tracker, "channel", interval="day", **month),
            ),
            ("reports.compare(channel), 30 days", lambda: reports.compare(tracker, **month)),
            ("reports.totals(), 30 days", lambda: reports.totals(tracker, **month)),
            ("reports.totals(), all time", lambda: reports.totals(tracker, **whole)),
        ]
        client = app.test_client()

        def dashboard() -> None:
            response = client.get("/utm/")
            assert response.status_code == 200, response.status_code

        calls.append(("GET /utm/ (dashboard, default 30 days)", dashboard))
        with app.app_context():
            for what, func in calls:
                p50, worst, first = timed(func, runs)
                rows.append(
                    Row(
                        what,
                        f"p50 {p50:,.0f} ms",
                        f"{LEADS:,} rows",
                        None,
                        "< 300 ms",
                        "",
                        p50 < 300,
                        f"max {worst:,.0f} ms of {runs}; first call {first:,.0f} ms",
                    )
                )
                db.session.remove()
            db.engine.dispose()
    return rows


# -- the snippet -------------------------------------------------------------------------------


def snippet_figures(loads: int = 20) -> list[Row]:
    code = SNIPPET.read_bytes()
    size = len(gzip.compress(code, compresslevel=9))
    rows = [
        Row(
            "snippet.js, gzip -9",
            f"{size:,} B",
            f"{len(code):,} B raw",
            None,
            "<= 2,048 B",
            "1,280 B",
            size <= 2048,
        )
    ]
    if not Path(CHROMIUM).exists():
        rows.append(Row("snippet execution in Chromium", "skipped", note=f"no {CHROMIUM}"))
        return rows
    from playwright.sync_api import sync_playwright

    # The IIFE inline between two performance marks: the time between them is its parse,
    # compile and run on the main thread, during page load, with a new visitor each time (a
    # fresh browser context: empty localStorage and cookies). The baseline is the same page with
    # an empty script between the marks, loaded alternately.
    def page(script: str) -> str:
        return (
            "<!doctype html><html><head><meta charset=utf-8><title>Landing</title>"
            "<script>performance.mark('snippet-start')</script>"
            f"<script>{script}</script>"
            "<script>performance.mark('snippet-end');"
            "performance.measure('snippet', 'snippet-start', 'snippet-end')</script>"
            "</head><body><h1>Landing</h1></body></html>"
        )

    # A third page only touches localStorage and the cookie jar, as the snippet must: on a new
    # visitor's first page that access alone opens the origin's storage.
    storage = "try{localStorage.getItem('utm_tracker');document.cookie}catch(e){}"
    pages = {"snippet": page(code.decode()), "empty": page(""), "storage": page(storage)}
    beacons: list[str] = []

    def serve(html: str) -> t.Callable[[t.Any], None]:
        def route(r: t.Any) -> None:
            if r.request.url.endswith("/utm/beacon"):
                beacons.append(r.request.post_data or "")
                r.fulfill(status=204)
            else:
                r.fulfill(status=200, content_type="text/html", body=html)

        return route

    times: dict[str, list[float]] = {name: [] for name in pages}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for _ in range(loads):
                for which, html in pages.items():
                    context = browser.new_context()
                    tab = context.new_page()

                    tab.route("**/*", serve(html))
                    tab.goto(
                        "http://bench.test/utm/landing?utm_source=newsletter&utm_medium=email"
                        "&utm_campaign=spring",
                        wait_until="load",
                    )
                    times[which].append(
                        tab.evaluate("performance.getEntriesByName('snippet')[0].duration")
                    )
                    tab.wait_for_timeout(50)
                    context.close()
        finally:
            browser.close()
    version = ""
    with contextlib.suppress(Exception):
        version = subprocess.run(
            [CHROMIUM, "--version"], capture_output=True, text=True, timeout=20
        ).stdout.strip()
    rows.append(
        Row(
            "snippet execution on page load, Chromium",
            f"median {statistics.median(times['snippet']):.2f} ms",
            f"empty script {statistics.median(times['empty']):.2f} ms",
            None,
            "",
            "",
            None,
            f"{loads} loads each, new visitor each; a script that only reads localStorage and"
            f" the cookie: median {statistics.median(times['storage']):.2f} ms;"
            f" snippet min {min(times['snippet']):.2f},"
            f" max {max(times['snippet']):.2f} ms; {len(beacons)} beacons sent; {version}",
        )
    )
    return rows


# -- output ------------------------------------------------------------------------------------


def machine() -> list[str]:
    def version(command: list[str]) -> str:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=20)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "unknown"

    from importlib.metadata import version as dist_version

    engine = sa.create_engine(PG)
    try:
        with engine.connect() as conn:
            pg_version = str(conn.execute(sa.text("SHOW server_version")).scalar_one())
    except sa.exc.SQLAlchemyError:
        pg_version = "unreachable"
    engine.dispose()
    import sqlite3

    load = os.getloadavg()
    return [
        f"nproc {os.cpu_count()}; load average at the start {load[0]:.2f}, {load[1]:.2f}, "
        f"{load[2]:.2f}",
        f"{platform.platform()}; {platform.processor() or platform.machine()}",
        f"Python {platform.python_version()}, Flask {dist_version('flask')}, SQLAlchemy "
        f"{dist_version('sqlalchemy')}, gunicorn {dist_version('gunicorn')}, psycopg "
        f"{dist_version('psycopg')}",
        f"PostgreSQL {pg_version}; SQLite {sqlite3.sqlite_version}; {version(['wrk', '-v'])}",
        f"gunicorn: {WORKERS} x (1 gthread worker x {THREADS} threads), one port each; wrk: one per"
        f" port, {CONNECTIONS} connections in all;"
        + (" gunicorn n and its wrk pinned to core n;" if PIN else " not pinned;")
        + f" {ROUNDS} alternating rounds of {SECONDS:g} s per figure ({PAGE_ROUNDS} for the"
        " plain page and the landing page)",
    ]


def render(rows: list[Row]) -> list[str]:
    header = ["measure", "value", "baseline", "ratio", "floor", "aim", "ok", "notes"]
    table = [
        [
            r.what,
            r.value,
            r.baseline,
            "" if r.ratio is None else f"{r.ratio:.2f}",
            r.floor,
            r.aim,
            "" if r.ok is None else ("yes" if r.ok else "NO"),
            r.note,
        ]
        for r in rows
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ablations", action="store_true", help="also measure the ablations")
    parser.add_argument(
        "--only", choices=["ingest", "pages", "reports", "snippet"], action="append"
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    sections = options.only or ["ingest", "pages", "reports", "snippet"]
    about = machine()
    started = time.monotonic()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
        logdir = Path(logs)
        try:
            if "ingest" in sections:
                rows += ingest_figures(logdir, options.ablations)
            if "pages" in sections:
                rows += page_figures(logdir)
        except Exception:
            for path in sorted(logdir.glob("*.log")):
                sys.stderr.write(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
            raise
    if "reports" in sections:
        rows += report_figures()
    if "snippet" in sections:
        log("snippet: gzip size and execution in Chromium")
        rows += snippet_figures()
    elapsed = time.monotonic() - started
    table = render(rows)
    print("\n".join(table))
    print(f"\n{elapsed:.0f} s; " + "; ".join(about))
    failed = [r.what for r in rows if r.ok is False]
    if failed:
        print("BELOW THE FLOOR: " + ", ".join(failed))
    if not options.only:
        text = [
            "# Benchmark results",
            "",
            f"`make bench` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {elapsed:.0f} s.",
            "",
            *(f"- {line}" for line in about),
            "",
            *table,
            "",
            "See bench/README.md for what each figure measures and why the ingest path is built",
            "the way it is.",
            "",
        ]
        Path(options.out).write_text("\n".join(text))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
