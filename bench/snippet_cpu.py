"""Main-thread CPU of a new visitor's landing page: the snippet beside Plausible's tracker.

Serves three pages locally (no script, the built snippet, Plausible's tracker from its npm
package ``@plausible-analytics/tracker`` bundled as a script tag) and opens each in a fresh
Chromium context (a new visitor) with campaign parameters and a webmail referrer, rounds
interleaved. Each load is traced (Chrome's trace events) until its beacon has been answered; the
figure is the renderer main thread's CPU time (the sum of ``tdur``, thread time, of its top-level
tasks), not wall time, which on a shared machine measures the scheduler. The script's cost is
its page's median minus the median of the page without a script.

    python bench/snippet_cpu.py [--runs 21]

Needs ``npm ci`` (esbuild and the Plausible package) and Chromium at /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import threading
import typing as t
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = ROOT / "collector" / "flask_utm_tracker" / "static" / "snippet.js"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
QUERY = "?utm_source=newsletter&utm_medium=email&utm_campaign=spring&gclid=Cj0KCQ_abc"
REFERRER = "https://mail.google.com/"
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
#: Plausible's npm package as its script tag would run it: tracking 127.0.0.1 under automation.
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


def serve(files: dict[str, bytes]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = files.get(self.path.split("?")[0])
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

        def log_message(self, *args: t.Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main_thread_cpu(trace: dict[str, t.Any]) -> float:
    """Milliseconds of CPU of the page renderers' main threads' top-level tasks in ``trace``.

    Only processes named ``Renderer`` count: Chromium starts a "WebUI Top Renderer" (its own
    chrome:// UI) during some loads, whose main thread, also ``CrRendererMain``, made single
    loads of any page 10 to 20 times their median.
    """
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    renderers = {
        e["pid"]
        for e in events
        if e.get("ph") == "M"
        and e.get("name") == "process_name"
        and e.get("args", {}).get("name") == "Renderer"
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


def measure(browser: t.Any, base: str, name: str) -> float:
    context = browser.new_context()
    page = context.new_page()
    categories = ["toplevel", "devtools.timeline", "disabled-by-default-devtools.timeline"]
    browser.start_tracing(page=page, categories=categories)
    url = f"{base}/{name}.html{QUERY}"
    if name in BEACONS:
        with page.expect_response(lambda r: r.url.endswith(BEACONS[name])):
            page.goto(url, referer=REFERRER)
    else:
        page.goto(url, referer=REFERRER)
    page.wait_for_timeout(300)  # the beacon's answer handled, the page idle
    trace = json.loads(browser.stop_tracing())
    context.close()
    return main_thread_cpu(trace)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21, help="page loads per script (median)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    files = {f"/{name}.html": PAGE.format(script=tag).encode() for name, tag in SCRIPTS.items()}
    files["/utm/snippet.js"] = SNIPPET.read_bytes()
    files["/plausible.js"] = build_plausible()
    server = serve(files)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    figures: dict[str, list[float]] = {name: [] for name in SCRIPTS}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for name in SCRIPTS:  # warm-up: the first load of each is not counted
            measure(browser, base, name)
        for run in range(args.runs):
            order = list(SCRIPTS)[run % 3 :] + list(SCRIPTS)[: run % 3]
            for name in order:
                figures[name].append(measure(browser, base, name))
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
