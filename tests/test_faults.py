"""Faults on a private PostgreSQL cluster (initdb in a temporary directory, its own port; never
the machine's shared server): the database stopping while beacons arrive, a login while it is
down, a gunicorn worker killed under load. Nothing acknowledged is ever lost.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_utm_tracker import cookie as cookies

from .conftest import POSTGRES_VAR, make_app, service_url
from .helpers import beacon
from .servers import free_port, gunicorn, post_beacon

ROOT = Path(__file__).resolve().parent.parent


class Cluster:
    """A throw-away PostgreSQL cluster owned by the ``postgres`` user when run as root."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [
            shutil.which("initdb") or ""
        ]
        if not found[-1] or not os.path.exists(found[-1]):
            pytest.fail("initdb is missing: install PostgreSQL's server package.")
        self.bin = Path(found[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="utm-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin / tool), *args],
            check=True,
            capture_output=True,
            cwd=self.dir,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster() -> t.Iterator[Cluster]:
    service_url(POSTGRES_VAR, "PostgreSQL")  # the same switch as every PostgreSQL test
    made = Cluster()
    yield made
    made.destroy()


def _body(n: int) -> dict[str, t.Any]:
    return {
        "v": f"visitor-{n // 100}",  # under the per-visitor cap
        "touches": [
            {"id": f"t{n:04d}", "params": {"utm_source": "fault", "utm_campaign": f"c{n}"}}
        ],
    }


def _stored(env: t.Any) -> list[str]:
    with env.app.app_context():
        return list(env.db.session.scalars(sa.select(env.tracker.Touch.touch_id)))


def test_database_stopping_while_beacons_arrive(cluster: Cluster) -> None:
    env = make_app(cluster.url, UTM_TRACKER_RATE_LIMIT="")
    client = env.app.test_client()
    queue = list(range(60))  # what a browser holds until a 2xx arrives
    acknowledged: set[int] = set()
    refused = 0
    for step in range(3):
        if step == 1:
            cluster.stop()
        if step == 2:
            cluster.start()
        for n in list(queue):
            response = beacon(client, _body(n))
            if response.status_code == 204:
                acknowledged.add(n)
                queue.remove(n)
            else:
                assert response.status_code == 503, response.get_data(as_text=True)
                assert int(response.headers["Retry-After"]) > 0
                assert response.json["error"].startswith("The database is unavailable")
                refused += 1
        if step == 0:
            queue.extend(range(60, 100))  # more touches arrive while the database is down
    assert refused >= 40
    assert queue == []
    stored = _stored(env)
    assert sorted(stored) == sorted(f"t{n:04d}" for n in acknowledged)
    assert len(stored) == len(set(stored)) == 100


def test_login_while_the_database_is_down(cluster: Cluster) -> None:
    env = make_app(cluster.url)
    app = env.app

    @app.after_request
    def database_dies_after_the_view(response: t.Any) -> t.Any:
        # Registered after the extension, so it runs before the extension's hook.
        from flask import request

        if request.path.startswith("/login/") and not app.config.get("DIED"):
            app.config["DIED"] = True
            env.db.session.remove()  # the host's own work is done and returned to the pool
            cluster.stop()
        return response

    client = app.test_client()
    client.get("/landing?utm_source=waiting&utm_medium=email")
    response = client.post("/login/ann@example.com")
    assert response.status_code == 200  # logged in although the write failed
    state = cookies.decode(client.get_cookie("utm_tracker").value)
    assert state is not None and len(state.pending) == 1  # the touch waits in the cookie
    cluster.start()
    with app.app_context():
        env.db.engine.dispose()
    assert client.get("/").status_code == 200  # the next authenticated request writes it
    with app.app_context():
        rows = env.db.session.scalars(sa.select(env.tracker.LeadSource.source)).all()
    assert rows == ["waiting"]


def test_killed_worker_loses_no_acknowledged_beacon(cluster: Cluster, tmp_path: Path) -> None:
    env = make_app(cluster.url)  # creates the tables
    acknowledged: list[int] = []
    lock = threading.Lock()
    with gunicorn(tmp_path, cluster.url, workers=2, threads=2, UTM_TRACKER_RATE_LIMIT="") as server:

        def send(start: int) -> None:
            for n in range(start, start + 150):
                # A failed connection (the killed worker's) is what the snippet retries later.
                if post_beacon(server.url, _body(n)) == 204:
                    with lock:
                        acknowledged.append(n)

        threads = [threading.Thread(target=send, args=(k * 1000,)) for k in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        workers = server.workers()
        assert workers, "gunicorn has no workers"
        os.kill(workers[0], signal.SIGKILL)
        for thread in threads:
            thread.join(timeout=120)
    stored = set(_stored(env))
    assert len(acknowledged) > 100
    missing = [n for n in acknowledged if f"t{n:04d}" not in stored]
    assert missing == []
