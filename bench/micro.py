"""The per-beacon CPU costs behind bench/README.md, measured in one process (no server, no load
generator), so they hold still on a busy machine: each choice of the ingest path against what it
replaced.

    .venv/bin/python bench/micro.py                 # SQLite in a temporary file
    .venv/bin/python bench/micro.py postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import timeit
import typing as t
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask_utm_tracker import abuse, ingest, reconcile  # noqa: E402
from flask_utm_tracker.schemas import BeaconSchema, TouchSchema  # noqa: E402

from bench.apps import make_bare, make_host  # noqa: E402
from bench.run import UA, pg_schema  # noqa: E402

BODY = {
    "v": "visitor-1",
    "touches": [
        {
            "id": "touch-1",
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


def per_call(func: t.Callable[[], t.Any], number: int = 2000) -> float:
    """Microseconds per call (best of three)."""
    func()
    return min(timeit.repeat(func, number=number, repeat=3)) / number * 1e6


def main() -> None:
    if len(sys.argv) > 1:
        with pg_schema("bench_micro", sys.argv[1]) as url:
            measure(url)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            measure(f"sqlite:///{tmp}/micro.db")


def measure(url: str) -> None:
    app, db, _ = make_host(True, url)
    with app.app_context():
        db.drop_all()
        db.create_all()
    tracker = app.extensions["utm_tracker"].tracker
    table = tracker.Touch.__table__
    bare = make_bare()
    lines: list[tuple[str, float, str, float]] = []

    schema, touch_schema = BeaconSchema(), TouchSchema()
    loaded = schema.load(BODY)
    lines.append(
        (
            "validate: BeaconSchema.load",
            per_call(lambda: schema.load(BODY)),
            "ingest.plain_beacon",
            per_call(lambda: ingest.plain_beacon(BODY)),
        )
    )
    lines.append(
        (
            "validate the touches again (rows_of)",
            per_call(lambda: [touch_schema.load(x) for x in loaded["touches"]]),
            "not again (ingest.rows_of)",
            0.0,
        )
    )
    lines.append(
        (
            "abuse.is_bot (crawlerdetect)",
            per_call(lambda: abuse.is_bot(UA), 300),
            "ingest.is_bot (cached per agent)",
            per_call(lambda: ingest.is_bot(UA)),
        )
    )

    with app.test_request_context("/utm/beacon", method="POST"):
        context = tracker.context(tracker.settings())
        row = ingest.rows_of(loaded["touches"], context, "visitor-1")[0]
    counter = iter(range(10**9))

    def core() -> None:
        n = next(counter)
        with db.engine.begin() as conn:
            held = conn.execute(
                sa.select(sa.func.count()).where(table.c.visitor_id == f"c{n}")
            ).scalar_one()
            assert held == 0
            reconcile.store_touches(conn, table, [dict(row, visitor_id=f"c{n}", touch_id="t")])

    def batch(size: int) -> t.Callable[[], None]:
        def run() -> None:
            n = next(counter)
            items = [
                ingest._Beacon(f"b{n}-{k}", [dict(row, visitor_id=f"b{n}-{k}")], False)
                for k in range(size)
            ]
            ingest._write_batch(db.engine, table, 200, items)

        return run

    with app.app_context():
        core_us = per_call(core, 300)
        lines.append(
            (
                "store 1 beacon: Core count + INSERT, transaction",
                core_us,
                "one driver statement, autocommit",
                per_call(batch(1), 300),
            )
        )
        lines.append(
            (
                "store 16 beacons one by one (Core)",
                16 * core_us,
                "16 beacons in one batch",
                per_call(batch(16), 100),
            )
        )

    def wsgi(target: t.Any) -> t.Callable[[], None]:
        def call() -> None:
            n = next(counter)
            body = json.dumps({**BODY, "v": f"w{n}"}).encode()
            environ = {
                "REQUEST_METHOD": "POST",
                "PATH_INFO": "/utm/beacon",
                "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": "8000",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "HTTP_HOST": "127.0.0.1:8000",
                "HTTP_USER_AGENT": UA,
                "CONTENT_TYPE": "text/plain;charset=UTF-8",
                "CONTENT_LENGTH": str(len(body)),
                "wsgi.url_scheme": "http",
                "wsgi.input": io.BytesIO(body),
                "wsgi.errors": sys.stderr,
            }
            status: list[str] = []
            out = target(environ, lambda s, h, e=None: status.append(s))
            b"".join(out)
            assert status[0].startswith("204"), status

        return call

    lines.append(
        (
            "whole beacon, bare Flask (WSGI call)",
            per_call(wsgi(bare), 1000),
            "whole beacon, host app + extension",
            per_call(wsgi(app), 1000),
        )
    )
    print(f"{sa.make_url(url).get_backend_name()}: microseconds per call")
    print("| before | us | after | us |\n|---|---|---|---|")
    for before, b_us, after, a_us in lines:
        print(f"| {before} | {b_us:,.1f} | {after} | {a_us:,.1f} |")
    with app.app_context():
        db.drop_all()
        db.engine.dispose()


if __name__ == "__main__":
    main()
