"""``make bench``: flask-utm-tracker's speed in the setup users run, each figure beside a baseline
measured in the same run.

Serves the apps of ``bench/apps.py`` with gunicorn (gthread workers) on 127.0.0.1 behind
``ProxyFix``, with every default of the extension on (rate limit, bot filter, origin check), in a
host app with Flask-WTF's ``CSRFProtect`` and a receiver of Flask's request signals; drives them
with wrk (Lua scripts in ``bench/lua``) from pools of 100,000 random client addresses; measures a
worker after a million distinct clients; times the reports on a million ``LeadSource`` rows; and
runs the standalone scripts beside this one (``limiter.py``, ``snippet_cpu.py``,
``attribution.py``). Prints one table and writes ``bench/results.md``.

Each pair (subject, baseline) is measured in alternating rounds (baseline, subject, subject,
baseline, ...), so that a change in the machine's load during the run hits both sides alike.

Environment: ``BENCH_POSTGRES`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``),
``BENCH_REDIS`` (for ``limiter.py --redis``, default ``redis://127.0.0.1:6379/0``; skipped when
nothing listens), ``BENCH_SECONDS`` (seconds per round, default 2), ``BENCH_ROUNDS`` (default
10), ``BENCH_PAGE_ROUNDS`` (rounds of the plain-page and landing figures, default 3 x ROUNDS),
``BENCH_WORKERS`` (gunicorn processes of one worker each, default one per core),
``BENCH_THREADS`` (threads per worker, default 16), ``BENCH_CONNECTIONS`` (wrk connections in
all, default 32), ``BENCH_ADDRESSES`` (client addresses per wrk pool, default 100,000),
``BENCH_CLIENTS`` (distinct clients of the memory figure, default 1,000,000), ``BENCH_LEADS``
(rows for the report figures, default 1,000,000), ``BENCH_PIN=0`` (no CPU pinning).

    .venv/bin/python bench/run.py                        # the table, about 15 minutes on 2 cores
    .venv/bin/python bench/run.py --skip attribution     # without the slowest section
    .venv/bin/python bench/run.py --only ingest          # one section (repeatable)
    .venv/bin/python bench/run.py --ablations            # more ingest ablations
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import random
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import typing as t
import urllib.parse
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
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
SECONDS = float(os.environ.get("BENCH_SECONDS", "2"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))
#: Rounds of the plain-page and landing figures, whose margins to their floors (a few percent)
#: are smallest against the spread of single rounds.
PAGE_ROUNDS = int(os.environ.get("BENCH_PAGE_ROUNDS", str(3 * ROUNDS)))
LEADS = int(os.environ.get("BENCH_LEADS", "1000000"))
WORKERS = int(os.environ.get("BENCH_WORKERS", os.cpu_count() or 2))
THREADS = int(os.environ.get("BENCH_THREADS", "16"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
#: Client addresses in the pool of each wrk (random IPv4 and IPv6 addresses, half each).
ADDRESSES = int(os.environ.get("BENCH_ADDRESSES", "100000"))
#: Distinct clients sent through a worker's rate limiter for the memory figure.
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "1000000"))
WRK_THREADS = 2
#: Pin gunicorn n and its wrk to core n (BENCH_PIN=0: let the kernel place them).
CPUS = os.cpu_count() or 1
PIN = os.environ.get("BENCH_PIN", "1") == "1" and shutil.which("taskset") is not None
UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
SNIPPET = ROOT / "collector" / "flask_utm_tracker" / "static" / "snippet.js"
#: Users the login figure logs in, one after the other.
LOGIN_USERS = 1000
#: Page loads per script in the snippet's CPU figure: a single load's CPU moves by several ms on
#: this machine and the two trackers differ by less than 1 ms, so 21 loads left runs on either
#: side and 61 left the paired interval holding zero; 121 (about 8 minutes) narrow it to about
#: +-0.3 ms.
SNIPPET_RUNS = int(os.environ.get("BENCH_SNIPPET_RUNS", "121"))
#: Touches in the visitor cookie of each login (bench/lua/login.lua).
LOGIN_TOUCHES = 10
SECTIONS = ("ingest", "pages", "memory", "limiter", "snippet", "attribution", "reports")


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# -- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range, so that no outgoing connection
    (wrk's, PostgreSQL's) takes it between this check and gunicorn's bind."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    while True:
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def rss_mb(pid: int) -> float:
    """The resident set size of process ``pid`` in MB (VmRSS of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"No VmRSS for process {pid} (this benchmark needs Linux).")


@dataclass
class Server:
    """``workers`` gunicorn processes with one gthread worker each, serving
    ``bench.apps:make()`` on their own loopback ports (see :func:`wrk` for why not one gunicorn
    with several workers).
    """

    name: str
    app: str
    db: str = ""
    env: dict[str, str] = field(default_factory=dict)
    workers: int = WORKERS
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    acknowledged: int = 0  # 2xx answers, warm-up included
    logdir: Path = Path()

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def start(self, logdir: Path) -> None:
        self.logdir = logdir
        for n in range(self.workers):
            self.ports.append(0)
            self.procs.append(self._spawn(n))

    def _spawn(self, n: int) -> subprocess.Popen[bytes]:
        """gunicorn ``n`` on a new free port."""
        env = {**os.environ, "BENCH_APP": self.app, "BENCH_DB": self.db, **self.env}
        self.ports[n] = port = free_port()
        logfile = open(self.logdir / f"{self.name}-{n}.log", "ab")  # noqa: SIM115
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
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=logfile, stderr=subprocess.STDOUT
        )

    def wait_ready(self, path: str = "/", timeout: float = 30) -> None:
        """Wait until every gunicorn answers ``path``; one that could not bind its port (taken
        meanwhile by another process) is started again on another."""
        deadline = time.monotonic() + timeout
        for n in range(self.workers):
            retries = 3
            while True:
                if self.procs[n].poll() is not None:
                    if retries == 0:
                        raise RuntimeError(f"gunicorn for {self.name} exited; see its log.")
                    retries -= 1
                    self.procs[n] = self._spawn(n)
                try:
                    with urllib.request.urlopen(self.urls[n] + path, timeout=2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"gunicorn for {self.name} did not answer within {timeout} s."
                        ) from None
                    time.sleep(0.2)

    def worker_pids(self) -> list[int]:
        """The gunicorn worker (the master's one child) of each port."""
        pids = []
        for proc in self.procs:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            pids.append(int(children[0]))
        return pids

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


@contextlib.contextmanager
def serving(logdir: Path, *servers: Server, ready: str = "/") -> t.Iterator[None]:
    try:
        for server in servers:
            server.start(logdir)
        for server in servers:
            server.wait_ready("/" if server.app in ("bare", "plain") else ready)
        yield
    finally:
        for server in servers:
            server.stop()


# -- wrk ---------------------------------------------------------------------------------------


@dataclass
class Load:
    """What wrk saw in one or more rounds."""

    ok: int = 0
    requests: int = 0
    seconds: float = 0.0
    socket_errors: int = 0
    #: The 2xx rate of each round, in order.
    rounds: list[float] = field(default_factory=list)
    #: Each round's p50 and p99 latency in ms (the highest of the round's wrk processes).
    round_p50: list[float] = field(default_factory=list)
    round_p99: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """2xx answers per second."""
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def p99(self) -> float:
        """The median of the rounds' p99 latencies."""
        return statistics.median(self.round_p99) if self.round_p99 else 0.0

    @property
    def p50(self) -> float:
        return statistics.median(self.round_p50) if self.round_p50 else 0.0

    @property
    def refused(self) -> int:
        """Answers that were not 2xx (a 429 of the rate limit, a 4xx, a 5xx)."""
        return self.requests - self.ok

    def add(self, other: Load) -> None:
        self.ok += other.ok
        self.requests += other.requests
        self.seconds += other.seconds
        self.socket_errors += other.socket_errors
        self.rounds.append(other.rate)
        self.round_p50 += other.round_p50
        self.round_p99 += other.round_p99


Args = t.Callable[[], list[str]]


def wrk(server: Server, path: str, script: str, seconds: float, args: Args) -> Load:
    """Load ``server`` for ``seconds`` with one wrk per gunicorn, all at once, each with an equal
    share of :data:`CONNECTIONS` and of :data:`WRK_THREADS`; only 2xx answers count as done.

    One gunicorn per worker, rather than one gunicorn with several workers, because the workers
    of one gunicorn share its listening socket and the kernel hands wrk's connections to
    whichever worker calls ``accept`` first: rounds measured 2+30, 9+23, 16+16 and 32+0
    connections per worker, and the rate of a round moved with that split by up to a factor of
    two. With one port per worker, each worker keeps exactly its share of the connections (as
    behind a load balancer); the workers still share the machine's cores with each other, with
    wrk and with PostgreSQL.
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
    p50s, p99s = [], []
    for proc in runs:
        stdout, stderr = proc.communicate(timeout=seconds + 60)
        line = next((x for x in stdout.splitlines() if x.startswith("BENCH ")), None)
        if line is None:
            raise RuntimeError(f"wrk gave no summary:\n{stdout}\n{stderr}")
        data = json.loads(line[6:])
        total.ok += data["ok"]
        total.requests += data["requests"]
        total.socket_errors += data["socket_errors"]
        p50s.append(data["p50_us"] / 1000)
        p99s.append(data["p99_us"] / 1000)
        # The runs overlap: the rate is the sum of theirs, so count the mean duration once.
        total.seconds += data["duration_us"] / 1e6 / len(runs)
    total.round_p50.append(max(p50s))
    total.round_p99.append(max(p99s))
    return total


def run_id() -> str:
    return secrets.token_hex(4)


def seed() -> str:
    return str(secrets.randbelow(2**31))


def clients(pool: int = ADDRESSES) -> Args:
    """wrk arguments of ``get.lua``: a new random pool of ``pool`` client addresses each run."""
    return lambda: [seed(), str(pool)]


def beacons(pool: int = ADDRESSES) -> Args:
    """wrk arguments of ``beacon.lua``: new ids and a new pool of client addresses each run."""
    prefix = run_id()
    return lambda: [f"{prefix}{run_id()}", seed(), str(pool)]


Pair = tuple[Server, str, str, Args]


def compare(
    pairs: t.Sequence[Pair], rounds: int = ROUNDS, seconds: float = SECONDS, warmup: float = 2
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


def round_ratios(subject: Load, base: Load) -> list[float]:
    return [s / b for s, b in zip(subject.rounds, base.rounds, strict=True) if b]


def paired_ratio(subject: Load, base: Load) -> float:
    """The median of the rounds' ratios (each subject round over the baseline round measured
    beside it): the rates of single rounds on this shared machine move by several percent, and a
    ratio of two rounds measured seconds apart follows the machine's load less than a ratio of
    totals does; the median ignores a round that an outside burst of work spoiled.
    """
    ratios = round_ratios(subject, base)
    return statistics.median(ratios) if ratios else 0.0


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


def prepare(db_url: str) -> str:
    """Create the tables and the users who log in; returns ``db_url``."""
    app, db, user = make_host(True, db_url)
    with app.app_context():
        db.create_all()
        db.session.add_all(user(email=f"bench-{n}@example.com") for n in range(LOGIN_USERS))
        db.session.commit()
        db.engine.dispose()
    return db_url


def count_rows(db_url: str, table: str) -> int:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        n = int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    engine.dispose()
    return n


# -- rows --------------------------------------------------------------------------------------


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


def not_run(what: str, reason: str) -> Row:
    return Row(what, f"not run: {reason}")


def ratio_row(
    what: str,
    subject: Load,
    base: Load,
    floor: float | None,
    aim: float | None = None,
    unit: str = "2xx/s",
) -> Row:
    ratio = paired_ratio(subject, base)
    refused = f"; {subject.refused:,} answers not 2xx" if subject.refused else ""
    return Row(
        what,
        f"{subject.rate:,.0f} {unit}",
        f"{base.rate:,.0f} {unit}",
        ratio,
        "" if floor is None else f">= {floor}",
        "" if aim is None else f"{aim}",
        None if floor is None else ratio >= floor,
        f"p99 {subject.p99:.1f} ms vs {base.p99:.1f} ms; {spread(subject, base)}{refused}",
    )


def spread(subject: Load, base: Load) -> str:
    ratios = round_ratios(subject, base)
    if not ratios:
        return ""
    return f"median of {len(ratios)} rounds' ratios, {min(ratios):.2f} to {max(ratios):.2f}"


# -- 1, 2, 6: beacon ingest ------------------------------------------------------------------------


@dataclass
class Subject:
    """A server measured against bare Flask in the ingest rounds."""

    label: str
    server: Server
    one_client: bool = False  # all beacons from one address (no X-Forwarded-For)
    floor: float | None = None
    aim: float | None = None


COLLECTOR = "standalone collector (mount_collector: the explicit high-volume option)"


def ingest_figures(logdir: Path, ablations: bool) -> list[Row]:
    """Beacons from many clients to the host app and to the standalone collector, on SQLite and
    PostgreSQL, against bare Flask; the ablations; and whether every 2xx was stored."""
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())

        def server(name: str, app: str, db: str, env: dict[str, str] | None = None) -> Server:
            """A server with a database of its own (``db``: sqlite or postgresql)."""
            if db == "sqlite":
                url = prepare(f"sqlite:///{tmp}/{name}.db")
            else:
                url = prepare(stack.enter_context(pg_schema(f"bench_{name.replace('-', '_')}")))
            return Server(f"{name}-{db}", app, url, env or {})

        off = {"BENCH_RATE_LIMIT": ""}
        subjects = [
            Subject(
                "beacon ingest, SQLite (WAL), host app",
                server("host", "tracked", "sqlite"),
                floor=0.5,
                aim=0.7,
            ),
            Subject(
                "beacon ingest, PostgreSQL, host app",
                server("host", "tracked", "postgresql"),
                floor=0.4,
                aim=0.5,
            ),
            Subject(
                f"beacon ingest, SQLite, {COLLECTOR}", server("collector", "collector", "sqlite")
            ),
            Subject(
                f"beacon ingest, PostgreSQL, {COLLECTOR}",
                server("collector", "collector", "postgresql"),
            ),
            Subject(
                "ablation: SQLite host app, rate limit off",
                server("limit-off", "tracked", "sqlite", off),
            ),
            Subject(
                "ablation: PostgreSQL host app, rate limit off",
                server("limit-off", "tracked", "postgresql", off),
            ),
            Subject(
                "ablation: SQLite host app, rate limit off, one client address",
                server("limit-off-one", "tracked", "sqlite", off),
                one_client=True,
            ),
            Subject(
                "ablation: PostgreSQL host app, rate limit off, one client address",
                server("limit-off-one", "tracked", "postgresql", off),
                one_client=True,
            ),
        ]
        if ablations:
            batch1, rollback = {"BENCH_MAX_BATCH": "1"}, {"BENCH_SQLITE_PRAGMAS": "0"}
            subjects += [
                Subject(
                    "ablation: SQLite host app, group commit off (MAX_BATCH = 1)",
                    server("no-group-commit", "tracked", "sqlite", batch1),
                ),
                Subject(
                    "ablation: PostgreSQL host app, group commit off (MAX_BATCH = 1)",
                    server("no-group-commit", "tracked", "postgresql", batch1),
                ),
                Subject(
                    "ablation: SQLite host app, rollback journal, synchronous=FULL",
                    server("rollback-journal", "tracked", "sqlite", rollback),
                ),
            ]
        # The reference: what the host's own hooks cost a request that does nothing else.
        subjects.append(
            Subject(
                "reference: host app without the extension, bare Flask's beacon route",
                Server("host-route", "plain", prepare(f"sqlite:///{tmp}/host-route.db")),
            )
        )
        bare = Server("bare", "bare")
        servers = [bare, *(s.server for s in subjects)]
        log(f"beacon ingest: bare Flask and {len(subjects)} servers, {ROUNDS} rounds each")
        with serving(logdir, *servers, ready="/utm/snippet.js"):
            many, one = beacons(), beacons(0)
            pairs = [(bare, "/utm/beacon", "beacon.lua", many)]
            pairs += [
                (s.server, "/utm/beacon", "beacon.lua", one if s.one_client else many)
                for s in subjects
            ]
            base, *loads = compare(pairs)
        rows = [
            ratio_row(s.label, load, base, s.floor, s.aim)
            for s, load in zip(subjects, loads, strict=True)
        ]
        # "A 2xx means it is stored": every acknowledged beacon has its row.
        for s in subjects:
            if s.server.app == "plain":
                continue
            stored = count_rows(s.server.db, "utm_touch")
            rows.append(
                Row(
                    f"acknowledged beacons stored, {s.server.name}",
                    f"{stored:,} rows",
                    f"{s.server.acknowledged:,} 2xx",
                    None,
                    "rows >= 2xx",
                    "",
                    stored >= s.server.acknowledged,
                )
            )
    return rows


# -- 3, 4: pages and login ---------------------------------------------------------------------


def csrf_login(url: str) -> tuple[str, str]:
    """A session cookie and the CSRF token of the login form, from the host app's ``GET /csrf``
    (the host apps share their secret key, so both accept them)."""
    with urllib.request.urlopen(url + "/csrf", timeout=10) as response:
        token = response.read().decode()
        cookie = response.headers["Set-Cookie"].split(";", 1)[0]
    return cookie, token


def check_login(url: str, cookie: str, token: str) -> None:
    request = urllib.request.Request(
        url + "/login/bench-0@example.com",
        data=f"csrf_token={token}".encode(),
        headers={"Cookie": cookie, "User-Agent": UA},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(f"The login of {url} answered {response.status}.")


def page_figures(logdir: Path) -> list[Row]:
    rows: list[Row] = []
    with pg_schema("bench_pages") as pg_url:
        prepare(pg_url)
        plain = Server("plain", "plain", pg_url)
        tracked = Server("tracked", "tracked", pg_url)
        with serving(logdir, plain, tracked):
            log(f"plain page, with and without the extension, {PAGE_ROUNDS} rounds")
            base, subject = compare(
                [(plain, "/", "get.lua", clients()), (tracked, "/", "get.lua", clients())],
                rounds=PAGE_ROUNDS,
            )
            rows.append(ratio_row("plain page, host app with the extension", subject, base, 0.95))
            log(f"landing page with utm parameters, new visitor, {PAGE_ROUNDS} rounds")
            landing = "/landing?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
            base, subject = compare(
                [(plain, landing, "get.lua", clients()), (tracked, landing, "get.lua", clients())],
                rounds=PAGE_ROUNDS,
            )
            rows.append(
                ratio_row("tagged landing page (?utm_...), new visitor", subject, base, 0.85)
            )
            log("login with 10 pending touches")
            cookie, token = csrf_login(plain.urls[0])
            for server in (plain, tracked):
                check_login(server.urls[0], cookie, token)
            prefix = run_id()

            def args() -> list[str]:
                return [
                    f"{prefix}{run_id()}",
                    "utm_tracker",
                    str(LOGIN_USERS),
                    cookie,
                    token,
                    seed(),
                    str(ADDRESSES),
                ]

            tracked.acknowledged = 0
            base, subject = compare(
                [(plain, "/login/", "login.lua", args), (tracked, "/login/", "login.lua", args)]
            )
            logins = tracked.acknowledged  # warm-up included (check_login's has no touches)
        rows.append(
            ratio_row(
                f"login with {LOGIN_TOUCHES} pending touches (CSRF-checked form POST)",
                subject,
                base,
                0.5,
            )
        )
        p99 = subject.p99 / base.p99 if base.p99 else float("inf")
        rows.append(
            Row(
                "login with 10 pending touches: p99 latency",
                f"{subject.p99:.1f} ms",
                f"{base.p99:.1f} ms",
                p99,
                "<= 2.0",
                "",
                p99 <= 2.0,
                f"median of the rounds' p99; p50 {subject.p50:.1f} ms vs {base.p50:.1f} ms",
            )
        )
        leads = count_rows(pg_url, "utm_lead_source")
        rows.append(
            Row(
                "acknowledged logins stored their touches (LeadSource rows)",
                f"{leads:,} rows",
                f"{logins:,} 2xx x {LOGIN_TOUCHES}",
                None,
                f"rows >= 2xx x {LOGIN_TOUCHES}",
                "",
                leads >= logins * LOGIN_TOUCHES,
            )
        )
    return rows


# -- 5: a worker after a million clients -------------------------------------------------------


def feed_limiter(server: Server, clients: int) -> float:
    """Send ``clients`` distinct addresses through the limiter of ``server``'s worker, in
    requests of 50,000 (``apps.add_limiter_feed``); the seconds the worker spent on them."""
    fed, took, chunk = 0, 0.0, 50_000
    while fed < clients:
        count = min(chunk, clients - fed)
        request = urllib.request.Request(
            f"{server.urls[0]}/_bench/limiter-feed?start={fed}&count={count}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            took += json.loads(response.read())["seconds"]
        fed += count
    return took


def memory_figures(logdir: Path) -> list[Row]:
    """Single-worker servers of the host app (SQLite) on core 0, the same HTTP traffic for each;
    all but the fresh one then have :data:`CLIENTS` distinct client addresses sent through their
    own rate limiter (the bench-only route of ``apps.add_limiter_feed``: driving a million
    addresses through HTTP would take most of an hour here). Their RSS against the fresh one's,
    and the used and fresh workers' plain-page p99 in alternating rounds.

    The ablation runs the used worker with ``MALLOC_ARENA_MAX=2``: glibc gives each thread that
    allocates its own malloc arena (up to 8 per core), and memory freed in one arena is not
    reused by the threads of another. The limiter's storage used to depend on it (its table,
    rebuilt in whichever thread's arena, grew a 16-thread worker by ~95 MB, ~18 MB with the
    setting); it now allocates its memory once, so the two figures should agree.
    """
    with tempfile.TemporaryDirectory() as tmp:
        feed = {"BENCH_FEED": "1"}

        def server(name: str, env: dict[str, str] | None = None) -> Server:
            url = prepare(f"sqlite:///{tmp}/{name}.db")
            return Server(name, "tracked", url, {**feed, **(env or {})}, 1)

        fresh, used = server("fresh-worker"), server("used-worker")
        arenas = server("used-worker-arena-max-2", {"MALLOC_ARENA_MAX": "2"})
        servers = (fresh, used, arenas)
        with serving(logdir, *servers, ready="/utm/snippet.js"):
            log("memory: the same beacons and pages to a fresh and two used workers")
            for one in servers:
                wrk(one, "/utm/beacon", "beacon.lua", 2, beacons())
                wrk(one, "/", "get.lua", 2, clients())
            before = {s.name: rss_mb(s.worker_pids()[0]) for s in servers}
            log(f"memory: {CLIENTS:,} distinct clients through the used workers' limiters")
            took = feed_limiter(used, CLIENTS)
            feed_limiter(arenas, CLIENTS)
            fed = {s.name: rss_mb(s.worker_pids()[0]) for s in servers}
            log(f"memory: plain-page p99, fresh and used worker, {2 * ROUNDS} rounds")
            base, subject = compare(
                [(fresh, "/", "get.lua", clients()), (used, "/", "get.lua", clients())],
                rounds=2 * ROUNDS,
            )
            after = {s.name: rss_mb(s.worker_pids()[0]) for s in servers}
    growth = after[used.name] - after[fresh.name]
    p99 = subject.p99 / base.p99 if base.p99 else float("inf")
    return [
        Row(
            f"worker RSS after {CLIENTS:,} distinct client addresses (fed in-process through"
            " its own limiter: bench-only route)",
            f"{after[used.name]:.1f} MB",
            f"fresh worker {after[fresh.name]:.1f} MB",
            None,
            "<= +50 MB",
            "",
            growth <= 50,
            f"{growth:+.1f} MB; the used worker {before[used.name]:.1f} MB before the feed,"
            f" {fed[used.name]:.1f} MB after it; the feed took {took:.1f} s in the worker",
        ),
        Row(
            "plain-page p99 on that worker vs a fresh worker",
            f"{subject.p99:.1f} ms",
            f"{base.p99:.1f} ms",
            p99,
            "<= 1.10",
            "",
            p99 <= 1.10,
            f"median of {len(subject.round_p99)} rounds' p99 each; throughput"
            f" {subject.rate:,.0f} vs {base.rate:,.0f} 2xx/s ({spread(subject, base)})",
        ),
        Row(
            "ablation: the same used worker with MALLOC_ARENA_MAX=2 (glibc), RSS",
            f"{after[arenas.name]:.1f} MB",
            f"fresh worker {after[fresh.name]:.1f} MB",
            None,
            "",
            "",
            None,
            f"{after[arenas.name] - after[fresh.name]:+.1f} MB;"
            f" {before[arenas.name]:.1f} MB before the feed, {fed[arenas.name]:.1f} MB after it",
        ),
    ]


# -- 7: the standalone scripts -----------------------------------------------------------------


def script(
    name: str, args: list[str], timeout: float, env: dict[str, str] | None = None
) -> tuple[str | None, str]:
    """Run ``bench/<name>`` with this Python; its standard output, or ``None`` and why not."""
    path = ROOT / "bench" / name
    if not path.exists():
        return None, f"bench/{name} is missing"
    log(f"bench/{name}")
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, str(path), *args],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None, f"bench/{name} took over {timeout:.0f} s"
    log(f"bench/{name} took {time.monotonic() - started:.0f} s")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"bench/{name} exited with {proc.returncode}: {last[:200]}"
    return proc.stdout, ""


def first_number(text: str) -> float:
    match = re.search(r"[-+]?\d[\d,]*\.?\d*", text)
    if match is None:
        raise ValueError(f"no number in {text!r}")
    return float(match.group().replace(",", ""))


def meets(value: str, target: str) -> bool | None:
    """Whether ``value`` meets a target of ``limiter.py``'s ("<= +50 MB", "< 100 ms", "no")."""
    if not target or target.startswith("~"):
        return None
    for op, check in (("<=", float.__le__), ("<", float.__lt__)):
        if target.startswith(op):
            return bool(check(first_number(value), first_number(target[len(op) :])))
    return value.split(" ")[0] == target


def limiter_rows() -> list[Row]:
    what = "limiter.py (in-process, 1,000,000 clients)"
    args = []
    redis = urllib.parse.urlsplit(REDIS)
    address = (redis.hostname or "127.0.0.1", redis.port or 6379)
    with contextlib.suppress(OSError), socket.create_connection(address, 1):
        args = ["--redis", REDIS]
    out, why = script("limiter.py", args, 600)
    if out is None:
        return [not_run(what, why)]
    rows = []
    for line in out.splitlines()[1:]:
        parts = re.split(r"\s{2,}", line.strip())
        if len(parts) < 2:
            continue
        name, value, target = parts[0], parts[1], parts[2] if len(parts) > 2 else ""
        if not target and "hit" not in name:
            continue
        rows.append(Row(f"limiter.py: {name}", value, "", None, target, "", meets(value, target)))
    return rows or [not_run(what, "no rows in its output")]


def snippet_rows() -> list[Row]:
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
    what = "snippet main-thread CPU, new visitor, Chromium (snippet_cpu.py)"
    out, why = script("snippet_cpu.py", ["--runs", str(SNIPPET_RUNS)], 1800)
    if out is None:
        return [*rows, not_run(what, why)]
    own = dict(re.findall(r"^\s*(\w+) own: ([\d.]+) ms", out, re.MULTILINE))
    medians = dict(re.findall(r"^\s*(\w+)\s+([\d.]+) ms\s+\(range", out, re.MULTILINE))
    if "snippet" not in own or "plausible" not in own:
        return [*rows, not_run(what, "its output has no 'own' lines")]
    mine, theirs = float(own["snippet"]), float(own["plausible"])
    paired = re.search(r"^\s*paired by round, (.*)$", out, re.MULTILINE)
    rows.append(
        Row(
            what,
            f"{mine:.2f} ms",
            f"Plausible's tracker {theirs:.2f} ms",
            mine / theirs if theirs > 0 else None,
            "<= Plausible",
            "",
            mine <= theirs,
            "each: its page's median minus a page without a script"
            f" ({medians.get('none', '?')} ms)" + (f"; {paired.group(1)}" if paired else ""),
        )
    )
    return rows


def attribution_rows() -> list[Row]:
    """The rows of ``attribution.py``: its rebuild time and each model's p50 and slowest run."""
    what = "attribution.py (1M LeadSource rows, 200k conversions, PostgreSQL)"
    out, why = script("attribution.py", [], 1500, {"BENCH_DB": PG})
    if out is None:
        return [not_run(what, why)]
    rows = []
    loaded = next((line for line in out.splitlines() if line.startswith("loaded ")), "")
    for line in out.splitlines():
        if line.startswith("rebuild"):
            took = re.search(r"in ([\d.]+) s", line)
            rows.append(
                Row(
                    "attribution: " + line.split(":", 1)[0],
                    f"{took.group(1)} s" if took else "?",
                    "",
                    None,
                    "",
                    "",
                    None,
                    line.split(":", 1)[-1].strip() + (f"; {loaded}" if loaded else ""),
                )
            )
        figure = re.match(r"(\w+)\s+(.+?)\s+([\d.]+)\s+([\d.]+)\s+< (\d+) (\w+)$", line)
        if figure:
            model, by, p50, worst, target, _ = figure.groups()
            rows.append(
                Row(
                    f"attribution: tracker.attribute(model={model}, by={by})",
                    f"p50 {float(p50):,.0f} ms",
                    "1M rows, 200k conversions",
                    None,
                    f"< {int(target):,} ms",
                    "",
                    float(p50) < int(target),
                    f"max {float(worst):,.0f} ms",
                )
            )
    return rows or [not_run(what, "no figures in its output")]


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
        log(f"reports: generating {LEADS:,} LeadSource rows")
        started = time.perf_counter()
        generate_leads(url, LEADS)
        generated = time.perf_counter() - started
        app, db, _ = make_host(True, url)
        # Rows written around the extension reach the reports through `flask utm rebuild`.
        log(f"reports: rows in {generated:.1f} s; flask utm rebuild")
        started = time.perf_counter()
        result = app.test_cli_runner().invoke(args=["utm", "rebuild"])
        took = time.perf_counter() - started
        failed = ""
        if result.exit_code != 0:
            error = result.exception or result.output
            failed = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
        rows.append(
            Row(
                "flask utm rebuild (after a bulk INSERT)",
                f"{took:,.1f} s",
                f"{LEADS:,} rows",
                None,
                "succeeds",
                "",
                not failed,
                failed or "; ".join(result.output.strip().splitlines()),
            )
        )
        log(f"reports: rebuild in {took:.1f} s{'; ' + failed if failed else ''}; timing")
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
                "reports.leads(campaign, limit=10), 30 days",
                lambda: reports.leads(tracker, "campaign", limit=10, **month),
            ),
            (
                "reports.series(channel, day), 30 days",
                lambda: reports.series(tracker, "channel", interval="day", **month),
            ),
            ("reports.totals(), all time", lambda: reports.totals(tracker, **whole)),
        ]
        client = app.test_client()

        def dashboard() -> None:
            response = client.get("/utm/")
            assert response.status_code == 200, response.status_code

        calls.append(("GET /utm/ (dashboard, default 30 days)", dashboard))
        with app.app_context():
            for what, func in calls:
                try:
                    p50, worst, first = timed(func, runs)
                except Exception as err:  # noqa: BLE001 (a broken report costs only its row)
                    db.session.remove()
                    rows.append(
                        Row(what, "failed", "", None, "< 300 ms", "", False, f"{err!r}"[:200])
                    )
                    continue
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

    return [
        f"{platform.platform()}; {platform.processor() or platform.machine()};"
        f" nproc {os.cpu_count()}",
        f"Python {platform.python_version()}, Flask {dist_version('flask')}, SQLAlchemy "
        f"{dist_version('sqlalchemy')}, Flask-WTF {dist_version('flask-wtf')}, limits"
        f" {dist_version('limits')}, gunicorn {dist_version('gunicorn')}, psycopg "
        f"{dist_version('psycopg')}",
        f"PostgreSQL {pg_version}; SQLite {sqlite3.sqlite_version}; {version(['wrk', '-v'])}",
        f"gunicorn: {WORKERS} x (1 gthread worker x {THREADS} threads), one port each; wrk: one per"
        f" port, {CONNECTIONS} connections in all, {ADDRESSES:,} random client addresses per"
        " wrk (X-Forwarded-For, ProxyFix(x_for=1));"
        + (" gunicorn n and its wrk pinned to core n;" if PIN else " not pinned;")
        + f" {ROUNDS} alternating rounds of {SECONDS:g} s per figure ({PAGE_ROUNDS} for the"
        " plain page and the landing page)",
    ]


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


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
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in table]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=SECTIONS, action="append", help="only this section")
    parser.add_argument("--skip", choices=SECTIONS, action="append", help="skip this section")
    parser.add_argument(
        "--skip-attribution", action="store_true", help="the same as --skip attribution"
    )
    parser.add_argument("--ablations", action="store_true", help="more ingest ablations")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    skip = set(options.skip or []) | ({"attribution"} if options.skip_attribution else set())
    sections = [s for s in (options.only or SECTIONS) if s not in skip]
    about = machine()
    load_start = loadavg()
    started = time.monotonic()
    rows: list[Row] = []
    loads: list[str] = []  # the 1-minute load average as each section starts
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
        logdir = Path(logs)
        measures: dict[str, t.Callable[[], list[Row]]] = {
            "ingest": lambda: ingest_figures(logdir, options.ablations),
            "pages": lambda: page_figures(logdir),
            "memory": lambda: memory_figures(logdir),
            "limiter": limiter_rows,
            "snippet": snippet_rows,
            "attribution": attribution_rows,
            "reports": report_figures,
        }
        for section in sections:
            loads.append(f"{section} {os.getloadavg()[0]:.1f}")
            try:
                rows += measures[section]()
            except Exception as err:  # one broken section must not cost the others
                traceback.print_exc()
                for path in sorted(logdir.glob("*.log")):
                    text = path.read_text(errors="replace")[-3000:]
                    if text:
                        sys.stderr.write(f"--- {path.name}\n{text}")
                    path.unlink()
                reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:160]}"
                rows.append(Row(f"section {section}", "not run", ok=False, note=reason))
    elapsed = time.monotonic() - started
    load_end = loadavg()
    table = render(rows)
    print("\n".join(table))
    print(f"\n{elapsed:.0f} s; load average {load_start} at the start, {load_end} at the end")
    print("1-minute load average as each section started: " + ", ".join(loads))
    print("; ".join(about))
    failed = [r.what for r in rows if r.ok is False]
    if failed:
        print("BELOW THE FLOOR: " + "; ".join(failed))
    if set(sections) == set(SECTIONS) and not options.ablations:
        text = [
            "# Benchmark results",
            "",
            f"`make bench` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {elapsed:.0f} s"
            f" ({elapsed / 60:.1f} min).",
            "",
            f"- load average (1, 5, 15 min): {load_start} at the start, {load_end} at the end;"
            f" 1-minute load as each section started: {', '.join(loads)} (the run's own"
            " gunicorn workers, wrk and PostgreSQL count in it too)",
            *(f"- {line}" for line in about),
            "",
            *table,
            "",
            *(["Below the floor: " + "; ".join(failed) + ".", ""] if failed else []),
            "See bench/README.md for what each figure measures.",
            "",
        ]
        Path(options.out).write_text("\n".join(text))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
