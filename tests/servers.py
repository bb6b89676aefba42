"""Real servers for tests: a test app under gunicorn on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import typing as t
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: A gunicorn app module: the test app of conftest.py, configured from the environment.
APP_MODULE = """
import json, os
from tests.conftest import make_app
app = make_app(os.environ["DB_URL"], **json.loads(os.environ["APP_CONFIG"])).app
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server(t.NamedTuple):
    url: str
    pid: int

    def workers(self) -> list[int]:
        """The pids of gunicorn's workers."""
        found = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True)
        return [int(pid) for pid in found.stdout.split()]


@contextlib.contextmanager
def gunicorn(
    directory: Path, db_url: str, *, workers: int = 2, threads: int = 1, **config: t.Any
) -> t.Iterator[Server]:
    """Serve ``make_app(db_url, **config)`` with gunicorn on a free loopback port."""
    (directory / "served_app.py").write_text(APP_MODULE)
    port = free_port()
    env = {
        **os.environ,
        "DB_URL": db_url,
        "APP_CONFIG": json.dumps(config),
        "PYTHONPATH": f"{directory}{os.pathsep}{ROOT}",
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--bind",
        f"127.0.0.1:{port}",
        "served_app:app",
    ]
    server = subprocess.Popen(
        command, cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 90  # a loaded machine boots workers slowly
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.1)
        yield Server(f"http://127.0.0.1:{port}", server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def post_beacon(base: str, body: dict[str, t.Any]) -> int | None:
    """POST a beacon over HTTP; its status, or ``None`` when the connection failed."""
    request = urllib.request.Request(
        f"{base}/utm/beacon", data=json.dumps(body).encode(), headers={"Content-Type": "text/plain"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (urllib.error.URLError, OSError):
        return None
