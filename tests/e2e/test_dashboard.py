"""The dashboard in real Chromium: the chart renders, the filters change the numbers, an XSS
payload in a utm value stays text, and the page raises no error, under a strict
Content-Security-Policy (no script, no inline style).

Self-contained: the fixtures below serve a host app of their own with werkzeug on 127.0.0.1 and
drive the Debian Chromium (``/usr/bin/chromium``) through Playwright for Python. Set
``UTM_TRACKER_SCREENSHOT_DIR`` to keep the screenshots (they go to pytest's tmp_path otherwise).
"""

from __future__ import annotations

import os
import socket
import threading
import typing as t
from pathlib import Path

import pytest

from tests.builders import add_user, at, build, touch
from tests.conftest import HostApp, make_app
from tests.e2e.conftest import ARGS, CHROMIUM

MARCH = "start=2024-03-01&end=2024-03-31"
XSS_SOURCE = '<img src=x onerror="window.__xss = 1">'
XSS_CAMPAIGN = "</title><script>window.__xss = 2</script>"
XSS_URL = "javascript:window.__xss = 3"
CSP = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'"


@pytest.fixture(scope="module")
def browser() -> t.Iterator[t.Any]:
    if not os.access(CHROMIUM, os.X_OK):
        message = f"Chromium tests need {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run them.")
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


class Served(t.NamedTuple):
    env: HostApp
    base: str


@pytest.fixture
def served(db_url: str) -> t.Iterator[Served]:
    """A host app with the hand-built leads of test_reports and an attacker's touch, on a port."""
    from werkzeug.serving import make_server

    env = make_app(db_url)
    env.tracker.dashboard_permission(lambda: True)

    @env.app.after_request
    def strict_csp(response: t.Any) -> t.Any:
        # The dashboard needs no script and no inline style: a violation is a console error.
        response.headers["Content-Security-Policy"] = CSP
        return response

    with env.app.app_context():
        build(env)
        fields = touch("Referral", XSS_SOURCE, "referral", at(20), at(21), XSS_CAMPAIGN)
        fields |= {"landing_url": XSS_URL, "referrer": "https://evil.example/<b>"}
        add_user(env, "mallory@example.com", fields)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = make_server("127.0.0.1", port, env.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Served(env, f"http://127.0.0.1:{port}")
    server.shutdown()
    server.server_close()
    thread.join(5)


class Page:
    """A fresh context and page that records page errors and failed requests."""

    def __init__(self, browser: t.Any) -> None:
        self.context = browser.new_context(viewport={"width": 1100, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        self.page.on(
            "console",
            lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
        )
        self.page.on("requestfailed", lambda req: self.errors.append(f"failed: {req.url}"))

    def open(self, url: str) -> t.Any:
        response = self.page.goto(url)
        assert response is not None and response.status == 200, url
        return self.page

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).inner_text()).strip()


@pytest.fixture
def tab(browser: t.Any) -> t.Iterator[Page]:
    opened = Page(browser)
    yield opened
    opened.context.close()
    assert opened.errors == []


def screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("UTM_TRACKER_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_chart_renders(served: Served, tab: Page, tmp_path: Path, db_url: str) -> None:
    page = tab.open(f"{served.base}/utm/?{MARCH}&interval=week")
    chart = page.locator("#leads-by-channel svg.plot")
    chart.wait_for(state="visible")
    box = chart.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 100
    # Bars with a real size and a colour, drawn inside the chart.
    bars = page.evaluate(
        """() => [...document.querySelectorAll('#leads-by-channel .bars rect')].map(r => {
            const b = r.getBBox();
            return {w: b.width, h: b.height, fill: getComputedStyle(r).fill};
        })"""
    )
    assert len(bars) == 4  # week of the 4th: Paid Search, Email; the 11th and 18th: Referral
    assert all(bar["w"] > 5 and bar["h"] > 5 and bar["fill"].startswith("rgb(") for bar in bars)
    assert page.locator("#leads-by-channel .legend li").count() == 3
    # The stylesheet loaded (the totals are a grid only with it).
    assert page.evaluate("getComputedStyle(document.querySelector('.totals')).display") == "grid"
    name = f"dashboard-{db_url.split(':', 1)[0].split('+', 1)[0]}.png"
    page.screenshot(path=str(screenshot_dir(tmp_path) / name), full_page=True)
    assert chart.screenshot()  # the chart element itself paints


def test_filters_change_the_numbers(served: Served, tab: Page) -> None:
    page = tab.open(f"{served.base}/utm/?{MARCH}")
    assert tab.text("#total-leads .value") == "4"
    sources = page.locator("#top-sources tbody td:first-child").all_inner_texts()
    assert "google" in sources and "facebook" not in sources

    page.select_option("select[name=model]", "last")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "model=last" in page.url
    assert page.locator("select[name=model]").input_value() == "last"
    assert tab.text("#total-leads .value") == "4"  # the model moves credit, not leads
    sources = page.locator("#top-sources tbody td:first-child").all_inner_texts()
    assert "facebook" in sources and "google" not in sources  # ann's last touch, not her first
    assert tab.text("#leads-by-channel figcaption").endswith("(last touch)")

    page.fill("input[name=start]", "2024-03-06")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "start=2024-03-06" in page.url
    assert tab.text("#total-leads .value") == "3"  # ann signed up on 5 March
    sources = page.locator("#top-sources tbody td:first-child").all_inner_texts()
    assert "facebook" not in sources and "newsletter" in sources
    assert page.locator("#leads-by-channel .bars rect").count() == 3

    page.click("text=7 days")  # a quick range: far from March 2024
    assert tab.text("#total-leads .value") == "0"
    assert "No leads in this period." in tab.text("#leads-by-channel")


def test_an_xss_payload_stays_text(served: Served, tab: Page) -> None:
    page = tab.open(f"{served.base}/utm/?{MARCH}")
    assert page.evaluate("window.__xss") is None
    assert page.title() == "Lead sources"
    assert XSS_SOURCE in page.locator("#top-sources").inner_text()
    latest = page.locator("#latest").inner_text()
    assert XSS_CAMPAIGN in latest and XSS_URL in latest
    assert page.locator("main img, main script").count() == 0
    hrefs = page.eval_on_selector_all("a", "links => links.map(a => a.protocol)")
    assert set(hrefs) <= {"http:", "https:"}
    assert page.locator('a[href="https://evil.example/<b>"]').count() == 1
    # Hovering a bar shows its tooltip text, escaped too.
    page.goto(f"{served.base}/utm/?start=2024-03-20&end=2024-03-22")
    assert page.locator("#leads-by-channel .bars rect title").first.text_content() == (
        "Mar 21: Referral, 1"
    )
    assert page.evaluate("window.__xss") is None


def test_conversions_model_switch(served: Served, tab: Page) -> None:
    from datetime import datetime, timedelta, timezone

    from tests.builders import add_lead as add_buyer

    when = datetime(2024, 3, 15, 12, tzinfo=timezone.utc)
    day = timedelta(days=1)
    with served.env.app.app_context():
        buyer = add_buyer(
            served.env,
            [("google", "cpc", "spring", when - 5 * day), ("newsletter", "email", "", when - day)],
        )
        served.env.tracker.record_conversion(
            buyer, "purchase", value=80, currency="EUR", occurred_at=when
        )
    page = tab.open(f"{served.base}/utm/?{MARCH}&cmodel=first")
    assert tab.text("#total-conversions .value") == "1"
    assert tab.text("#total-revenue .value") == "80.00 EUR"
    rows = page.locator("#conversion-table tbody td:first-child").all_inner_texts()
    assert rows == ["Paid Search"]
    options = page.locator("#conversion-model option").all_inner_texts()
    assert len(options) == 6 and "Data-driven (Markov)" in options
    # The revenue chart paints one bar in the Paid Search colour.
    bars = page.locator("#revenue-over-time .bars rect")
    assert bars.count() == 1 and (bars.first.bounding_box() or {}).get("height", 0) > 5

    page.select_option("#conversion-model", "linear")
    with page.expect_navigation():
        page.click("#conversions button[type=submit]")
    assert "cmodel=linear" in page.url and "start=2024-03-01" in page.url
    cells = page.locator("#conversion-table tbody tr").all_inner_texts()
    assert [c.split("\t")[:3] for c in cells] == [
        ["Email", "0.5", "40.00 EUR"],
        ["Paid Search", "0.5", "40.00 EUR"],
    ]
    assert page.locator("#revenue-over-time .bars rect").count() == 2
