"""Main-thread CPU of a new visitor's landing page: the snippet beside Plausible's tracker.

Serves three pages locally (no script, the built snippet, Plausible's tracker from its npm
package ``@plausible-analytics/tracker`` bundled as a script tag) and opens each in a fresh
Chromium browser context (a new visitor) with campaign parameters and an external referrer,
rounds interleaved. Each load is traced (Chrome's trace events) until its beacon has been
answered and the visitor has then moved to another tab, which hides the page: what a script
puts off until then (the snippet stores its state in localStorage then; Plausible's tracker
reports engagement) is the visitor's CPU too, so it counts. The figure is the page renderer's
main-thread CPU time (the sum of ``tdur``, thread time, of its top-level tasks), not wall time,
which on a shared machine measures the scheduler. The script's cost is its page's median minus
the median of the page without a script. (The page's ``pagehide``, when it is left, is not in
it: closing the page ends its renderer before its events are written.)

Chromium runs as users run it: no DevTools session is attached to the page. Tracing and the
browser contexts go through the browser's own DevTools target over a pipe, and the page is
opened from a page on another host that sends the visitor on (the external referrer). A
DevTools session on a page (Playwright's, Puppeteer's) makes Chromium collect the script's
stack, with source positions, for each network request and cookie access, re-parsing the
functions on it: CPU no visitor spends, and more for a script that sends from within its own
evaluation (Plausible's tracker) than for one that does not.

    python bench/snippet_cpu.py [--runs 21]

Needs ``npm ci`` (esbuild and the Plausible package) and Chromium at /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import typing as t
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = ROOT / "collector" / "flask_utm_tracker" / "static" / "snippet.js"
CHROMIUM = "/usr/bin/chromium"
#: Without the spare renderer (an idle process Chromium keeps ready for the next page), whose
#: answer to the end of a trace otherwise waits out a 5 s timeout. Each page starts its own
#: renderer then, the page without a script too, so that start is in every figure alike.
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-features=SpareRendererForSitePerProcess",
]
QUERY = "?utm_source=newsletter&utm_medium=email&utm_campaign=spring&gclid=Cj0KCQ_abc"
#: The page on another host (``localhost``) that sends the visitor on to the landing page given
#: in its fragment: the landing page's referrer is then external, ``http://localhost:<port>/``.
REFERRER_PAGE = (
    b"<!doctype html><script>location.replace(decodeURIComponent(location.hash.slice(1)))</script>"
)
#: Trace categories: the top-level tasks (their thread time) and the page's parse (its URL).
CATEGORIES = ["toplevel", "devtools.timeline"]
PAGE = (
    "<!doctype html><html><head><meta charset=utf-8><title>Landing</title>{script}</head>"
    "<body><h1>Spring sale</h1><p>A landing page with a little text.</p>"
    '<a href="/signup">Sign up</a></body></html>'
)
SCRIPTS = {
    "none": "",
    "snippet": '<script src="/utm/snippet.js" async></script>',
    "plausible": '<script src="/plausible.js" async></script>',
}
#: Where each page's beacon goes (the snippet: "beacon" beside the script).
BEACONS = {"snippet": "/utm/beacon", "plausible": "/api/event"}
#: Plausible's npm package as its script tag would run it, tracking 127.0.0.1.
PLAUSIBLE_ENTRY = """
import { init } from "@plausible-analytics/tracker";
window.__plausible = true;
init({ domain: location.hostname, endpoint: "/api/event", captureOnLocalhost: true });
"""


def build_plausible() -> bytes:
    """Plausible's tracker bundled by esbuild into a minified IIFE."""
    esbuild = ROOT / "node_modules" / ".bin" / "esbuild"
    return subprocess.run(
        [str(esbuild), "--bundle", "--minify", "--format=iife", "--loader=js"],
        input=PLAUSIBLE_ENTRY.encode(),
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout


class Collector(ThreadingHTTPServer):
    """The pages and scripts, and both trackers' endpoints; counts the beacons it answered."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.answered = 0
        self.changed = threading.Condition()
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def wait_beyond(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until more than ``count`` beacons have been answered."""
        with self.changed:
            return self.changed.wait_for(lambda: self.answered > count, timeout)


class _Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_GET(self) -> None:  # noqa: N802
        body = self.server.files.get(self.path.split("?")[0])
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        kind = "text/javascript" if self.path.endswith(".js") else "text/html"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204 if self.path == "/utm/beacon" else 202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        with self.server.changed:
            self.server.answered += 1
            self.server.changed.notify_all()

    def log_message(self, *args: t.Any) -> None:
        pass


class Chromium:
    """Chromium driven through its browser target over ``--remote-debugging-pipe`` (messages are
    JSON separated by NUL bytes, on file descriptors 3 and 4): contexts, targets and tracing,
    with no session on any page."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="snippet-cpu-")
        theirs_read, ours_write = os.pipe()
        ours_read, theirs_write = os.pipe()

        def descriptors() -> None:
            os.dup2(theirs_read, 3)
            os.dup2(theirs_write, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, *ARGS, "--remote-debugging-pipe", f"--user-data-dir={self.profile}"],
            preexec_fn=descriptors,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(theirs_read)
        os.close(theirs_write)
        self.writer = os.fdopen(ours_write, "wb")
        self.reader = os.fdopen(ours_read, "rb")
        self.calls = 0
        self.answers: dict[int, queue.Queue[dict[str, t.Any]]] = {}
        self.events: queue.Queue[dict[str, t.Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        pending = b""
        while chunk := self.reader.read1(1 << 16):
            pending += chunk
            *messages, pending = pending.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    self.answers.pop(message["id"]).put(message)
                else:
                    self.events.put(message)

    def call(self, method: str, **params: t.Any) -> dict[str, t.Any]:
        self.calls += 1
        answer: queue.Queue[dict[str, t.Any]] = queue.Queue()
        self.answers[self.calls] = answer
        message = {"id": self.calls, "method": method, "params": params}
        self.writer.write(json.dumps(message).encode() + b"\0")
        self.writer.flush()
        result = answer.get(timeout=60)
        if "error" in result:
            raise RuntimeError(f"{method}: {result['error']}")
        return t.cast(dict[str, t.Any], result.get("result", {}))

    def event(self, method: str) -> dict[str, t.Any]:
        """The next event named ``method`` (others are dropped)."""
        while True:
            message = self.events.get(timeout=60)
            if message.get("method") == method:
                return t.cast(dict[str, t.Any], message["params"])

    def trace(self, load: t.Callable[[], None]) -> list[dict[str, t.Any]]:
        """The trace events recorded while ``load`` runs."""
        self.call(
            "Tracing.start",
            traceConfig={"includedCategories": CATEGORIES},
            transferMode="ReturnAsStream",
        )
        load()
        self.call("Tracing.end")
        stream = self.event("Tracing.tracingComplete")["stream"]
        chunks = []
        while True:
            read = self.call("IO.read", handle=stream, size=1 << 22)
            chunks.append(read["data"])
            if read.get("eof"):
                break
        self.call("IO.close", handle=stream)
        data = json.loads("".join(chunks))
        return t.cast(
            list[dict[str, t.Any]], data["traceEvents"] if isinstance(data, dict) else data
        )

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.process.wait(timeout=10)
        except (OSError, RuntimeError, queue.Empty, subprocess.TimeoutExpired):
            self.process.kill()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


def main_thread_cpu(events: list[dict[str, t.Any]], page: str) -> float:
    """Milliseconds of CPU of the top-level tasks on the main thread of the renderer that parsed
    a document whose URL starts with ``page``, in the trace ``events``.

    Other renderers (the page on another host that sent the visitor on; Chromium's own
    chrome:// UI, which some loads start) do not count.
    """
    renderers = {
        e["pid"]
        for e in events
        if e.get("name") == "ParseHTML"
        and str(e.get("args", {}).get("beginData", {}).get("url", "")).startswith(page)
    }
    mains = {
        (e["pid"], e["tid"])
        for e in events
        if e.get("pid") in renderers
        and e.get("ph") == "M"
        and e.get("name") == "thread_name"
        and e.get("args", {}).get("name") == "CrRendererMain"
    }
    total = 0.0
    for key in mains:
        tasks = sorted(
            (e["ts"], e["ts"] + e.get("dur", 0), e.get("tdur", 0))
            for e in events
            if (e.get("pid"), e.get("tid")) == key
            and e.get("ph") == "X"
            and e.get("name") in ("ThreadControllerImpl::RunTask", "RunTask")
        )
        end = -1.0
        for start, stop, cpu in tasks:
            if start >= end:  # nested tasks are inside their parent's time
                total += cpu
                end = stop
    return total / 1000


def median_interval(values: list[float]) -> tuple[float, float, float]:
    """The median of ``values`` and its distribution-free 95% confidence interval.

    The interval runs from the k-th smallest to the k-th largest value, k the largest rank with
    P(Binomial(n, 1/2) < k) <= 2.5% (the sign test's interval; no assumption about the shape of
    the distribution, which for page loads has a long tail).
    """
    ordered = sorted(values)
    n = len(ordered)
    k, tail = 0, 0.0
    while k < n // 2:
        tail += math.comb(n, k) / 2**n
        if tail > 0.025:
            break
        k += 1
    k = max(k, 1)
    return ordered[k - 1], statistics.median(ordered), ordered[n - k]


def measure(browser: Chromium, server: Collector, name: str) -> float:
    """One new visitor's landing on ``name``'s page, traced until its beacon has been answered
    and the page has been idle a moment; what the page does as it is closed does not count."""
    port = server.server_address[1]
    page = f"http://127.0.0.1:{port}/{name}.html"
    context = browser.call("Target.createBrowserContext")["browserContextId"]
    answered = server.answered
    until: list[float] = []

    def load() -> None:
        url = f"http://localhost:{port}/go.html#{quote(page + QUERY, safe='')}"
        target = browser.call("Target.createTarget", url=url, browserContextId=context)
        if name in BEACONS and not server.wait_beyond(answered):
            raise RuntimeError(f"{name}: no beacon within 10 s")
        time.sleep(0.3 if name in BEACONS else 0.8)  # the answer handled, the page idle
        # The visitor moves to another tab: the page is hidden, and what a script put off until
        # then (the snippet stores its state; Plausible's tracker reports engagement) counts too.
        other = browser.call("Target.createTarget", url="about:blank", browserContextId=context)
        time.sleep(0.3)
        # Trace timestamps are the monotonic clock's, in microseconds (Linux: CLOCK_MONOTONIC).
        until.append(time.monotonic() * 1e6)
        # Closed before the trace ends: a live page's renderer answers the end of a trace only
        # after a 5 s timeout.
        for opened in (target, other):
            browser.call("Target.closeTarget", targetId=opened["targetId"])

    events = browser.trace(load)
    browser.call("Target.disposeBrowserContext", browserContextId=context)
    landed = [e for e in events if e.get("ph") == "M" or e.get("ts", math.inf) < until[0]]
    if not any(
        e.get("name") == "ParseHTML"
        and str(e.get("args", {}).get("beginData", {}).get("url", "")).startswith(page)
        for e in landed
    ):
        raise RuntimeError(f"{page} not parsed before the cut (or the trace's clock is not ours)")
    return main_thread_cpu(landed, page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21, help="page loads per script (median)")
    args = parser.parse_args()

    files = {f"/{name}.html": PAGE.format(script=tag).encode() for name, tag in SCRIPTS.items()}
    files["/utm/snippet.js"] = SNIPPET.read_bytes()
    files["/plausible.js"] = build_plausible()
    files["/go.html"] = REFERRER_PAGE
    server = Collector(files)
    figures: dict[str, list[float]] = {name: [] for name in SCRIPTS}
    browser = Chromium()
    try:
        for name in SCRIPTS:  # warm-up: the first load of each is not counted
            measure(browser, server, name)
        for run in range(args.runs):
            order = list(SCRIPTS)[run % 3 :] + list(SCRIPTS)[: run % 3]
            for name in order:
                figures[name].append(measure(browser, server, name))
    finally:
        browser.close()
        server.shutdown()
    medians = {name: statistics.median(values) for name, values in figures.items()}
    print(
        "New-visitor landing page, renderer main-thread CPU (trace thread time),"
        f" median of {args.runs}:"
    )
    for name, values in figures.items():
        spread = f"{min(values):.2f}-{max(values):.2f}"
        size = (
            len(files["/utm/snippet.js" if name == "snippet" else "/plausible.js"])
            if name != "none"
            else 0
        )
        print(f"  {name:9} {medians[name]:6.2f} ms   (range {spread} ms; script {size} B raw)")
    for name in BEACONS:
        own = medians[name] - medians["none"]
        print(f"  {name} own: {own:.2f} ms above the page without a script")
    # Paired by round (the same minute of the machine): snippet minus Plausible.
    differences = [
        mine - theirs for mine, theirs in zip(figures["snippet"], figures["plausible"], strict=True)
    ]
    low, middle, high = median_interval(differences)
    below = sum(difference < 0 for difference in differences)
    print(
        f"  paired by round, snippet minus Plausible: median {middle:+.2f} ms"
        f" (95% interval {low:+.2f} to {high:+.2f} ms); lower in {below} of {args.runs} rounds"
    )
    verdict = "at most" if medians["snippet"] <= medians["plausible"] else "ABOVE"
    paired = "below" if high < 0 else "above" if low > 0 else "level with (the interval holds 0)"
    print(f"  the snippet is {verdict} Plausible's tracker by medians; paired, {paired}")


if __name__ == "__main__":
    main()
