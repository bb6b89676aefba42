"""Every page of the demo and of the dashboard, as a person meets them in Chromium, on a 390 px
phone and a 1,280 px desktop: the page never scrolls sideways
(``document.documentElement.scrollWidth <= innerWidth``; a wide table scrolls inside its own
box), the charts' axis labels keep a readable size and do not overlap, and the pages say what
they should (who invited, which click IDs, a 403 with a way home, a bad filter kept as typed).

The dashboard's pages are served under a strict Content-Security-Policy (no script, no inline
style): a violation is a console error, and a console error fails the test.

Set ``UTM_TRACKER_SCREENSHOT_DIR`` to keep a full-page PNG of each page at each width
(``scripts/screenshots.py`` does, for the documentation).
"""

from __future__ import annotations

import importlib
import os
import random
import socket
import threading
import typing as t
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

PHONE, DESKTOP = 390, 1280
CSP = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'"
ADMIN = ("admin@acme.example", "rockets")
#: Where a visitor comes from before following an invite: a Google ad tagged as social.
TAGGED_AD = "/?utm_source=twitter&utm_medium=social&gclid=Cj0KCQiA-tagged"
#: Lead sources of the seeded users: (source, medium, campaign, click IDs), and how many users.
CAMPAIGNS: list[tuple[tuple[str, str, str, dict[str, str]], int]] = [
    (("google", "cpc", "spring-sale", {"gclid": "Cj0KCQiA-seed"}), 9),
    (("newsletter", "email", "november", {}), 7),
    (("facebook", "paid_social", "launch", {"fbclid": "IwAR-seed"}), 5),
    (("google", "organic", "", {}), 6),
    (("t.co", "social", "", {}), 4),
    (("partner-blog.example", "referral", "", {}), 3),
    (("chatgpt.com", "ai", "", {}), 2),
    (("twitter", "social", "", {"gclid": "Cj0KCQiA-tagged"}), 2),
]


class Demo(t.NamedTuple):
    module: t.Any
    app: t.Any
    base: str


def seed(demo: t.Any, app: t.Any, days: int = 30) -> None:
    """The admin (the first account), and users who signed up over the last ``days`` days from
    the campaigns above, some of whom bought; spend on the Google campaign for ROAS."""
    from werkzeug.security import generate_password_hash

    db, tracker = demo.db, demo.tracker
    rng = random.Random(13)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    with app.app_context():
        db.session.add(
            demo.User(email=ADMIN[0], password_hash=generate_password_hash(ADMIN[1]), is_admin=True)
        )
        number = 0
        buyers = []
        for (source, medium, campaign, click_ids), count in CAMPAIGNS:
            for _ in range(count):
                number += 1
                signed_up = now - timedelta(days=rng.randrange(days), hours=rng.randrange(12))
                user = demo.User(email=f"user{number}@example.com", password_hash="-")
                db.session.add(user)
                db.session.flush()
                db.session.add(
                    tracker.LeadSource(
                        user_id=user.id,
                        touch_id=f"seed-{number}",
                        source=source,
                        medium=medium,
                        campaign=campaign,
                        click_ids=click_ids,
                        gclid=click_ids.get("gclid"),
                        fbclid=click_ids.get("fbclid"),
                        channel=channel(source, medium, campaign, click_ids),
                        landing_url=f"https://acme.example/?utm_source={source}",
                        timestamp=signed_up - timedelta(minutes=5),
                        created_at=signed_up,
                    )
                )
                if rng.random() < 0.45:
                    buyers.append((user.id, signed_up))
        for day in range(days):
            db.session.add(
                tracker.Spend(
                    date=(now - timedelta(days=day)).date(),
                    source="google",
                    medium="cpc",
                    campaign="spring-sale",
                    cost=12,
                    currency="USD",
                )
            )
        db.session.commit()
        for user_id, signed_up in buyers:
            tracker.record_conversion(
                user_id, "purchase", value=49.90, currency="USD", occurred_at=signed_up
            )


def channel(source: str, medium: str, campaign: str, click_ids: dict[str, str]) -> str:
    from flask_utm_tracker.channels import channel_for

    return channel_for(source, medium, campaign, click_ids=click_ids)


@pytest.fixture
def demo_site(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> t.Iterator[Demo]:
    """The demo site, seeded, served on 127.0.0.1; its dashboard pages under a strict CSP."""
    from werkzeug.serving import make_server

    # Importing the demo builds its default app: keep that one's database out of instance/.
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'imported.db'}")
    demo = importlib.import_module("demo")
    app = demo.create_app({"SQLALCHEMY_DATABASE_URI": db_url})

    @app.after_request
    def strict_csp(response: t.Any) -> t.Any:
        from flask import request

        if request.path.startswith("/utm/"):
            response.headers["Content-Security-Policy"] = CSP
        return response

    seed(demo, app)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Demo(demo, app, f"http://127.0.0.1:{port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        with app.app_context():
            demo.db.engine.dispose()


class Visitor:
    """A browser context at one width that checks each page it is shown."""

    def __init__(self, browser: t.Any, width: int, base: str, shots: Path | None) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 844})
        self.page = self.context.new_page()
        self.width, self.base, self.shots = width, base, shots
        self.errors: list[str] = []
        self.checked: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        self.page.on("console", self._console)
        #: Pages opened expecting an error status: Chromium logs their status, not a fault.
        self.expected: set[str] = set()

    def _console(self, msg: t.Any) -> None:
        if msg.type != "error":
            return
        if msg.text.startswith("Failed to load resource") and msg.location["url"] in self.expected:
            return
        self.errors.append(f"console: {msg.text} ({msg.location['url']})")

    def open(self, path: str, status: int = 200) -> t.Any:
        if status != 200:
            self.expected.add(self.base + path)
        response = self.page.goto(self.base + path)
        assert response is not None and response.status == status, (path, response)
        return self.page

    def check(self, name: str, shot: str | None = None) -> None:
        """The page at this width: no sideways scroll; a screenshot when asked, of the whole
        page, of the element ``shot`` names (a CSS selector), or of the screen (``"screen"``).
        """
        self.page.wait_for_load_state("load")
        scroll, inner, wide = self.page.evaluate(
            """() => {
                const inner = window.innerWidth;
                const wide = [...document.querySelectorAll('body *')]
                    .filter(e => e.getBoundingClientRect().right > inner + 0.5)
                    .filter(e => !e.closest('.table-scroll'))
                    .slice(0, 5)
                    .map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className);
                return [document.documentElement.scrollWidth, inner, wide];
            }"""
        )
        assert inner == self.width
        assert scroll <= inner, f"{name} at {inner} px is {scroll} px wide: {wide}"
        self.checked.append(name)
        if self.shots is not None:
            path = str(self.shots / f"{name}-{self.width}.png")
            if shot is None or shot == "screen":
                self.page.screenshot(path=path, full_page=shot is None)
            else:
                self.page.locator(shot).screenshot(path=path)

    def readable_axes(self, figure: str) -> None:
        """The chart's labels: at least 11 px tall as drawn, and no two x labels overlap."""
        boxes = self.page.evaluate(
            """(figure) => [...document.querySelectorAll(figure + ' .plot-area text')]
                .filter(e => getComputedStyle(e).display !== 'none')
                .map(e => {
                    const r = e.getBoundingClientRect();
                    return {x: !!e.closest('g.x'), left: r.left, right: r.right, h: r.height};
                })""",
            figure,
        )
        assert boxes, figure
        assert min(box["h"] for box in boxes) >= 11, boxes
        xs = sorted((box for box in boxes if box["x"]), key=lambda box: box["left"])
        assert len(xs) >= 2
        for before, after in zip(xs, xs[1:], strict=False):
            assert before["right"] <= after["left"], f"x labels overlap in {figure}: {xs}"


@pytest.fixture(params=[PHONE, DESKTOP], ids=["390px", "1280px"])
def width(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def test_every_page_fits_the_screen(
    demo_site: Demo, chromium: t.Any, width: int, db_url: str
) -> None:
    shots = None
    folder = os.environ.get("UTM_TRACKER_SCREENSHOT_DIR")
    if folder and db_url.startswith("sqlite"):
        shots = Path(folder)
        shots.mkdir(parents=True, exist_ok=True)
    visitors = []

    # A visitor: a Google ad tagged as social, then a friend's invite, then the sign-up.
    guest = Visitor(chromium, width, demo_site.base, shots)
    visitors.append(guest)
    page = guest.open(TAGGED_AD)
    assert page.locator("h1").inner_text() == "Acme Rockets"
    guest.check("landing")
    guest.open("/login")
    guest.check("login")
    guest.open("/signup")
    assert page.locator("#invited").count() == 0
    guest.check("signup")
    invite = guest.open("/").locator("text=An invite link from a friend").get_attribute("href")
    assert invite and invite.startswith("/invite/")
    guest.open(invite)
    assert page.locator("#inviter").inner_text() == ADMIN[0]  # the inviter's label
    assert f"{ADMIN[0]} invited you" in page.locator("#invite").inner_text()
    guest.check("invite")
    page.click("#accept")
    assert page.url.endswith("/signup")
    assert f"{ADMIN[0]} invited you" in page.locator("#invited").inner_text()
    guest.check("signup-invited")
    page.fill("input[name=email]", f"guest{width}@example.com")
    page.fill("input[name=password]", "secret")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url.endswith("/account")
    page.click("#buy")
    sources = page.locator("#lead-sources tbody tr").all_inner_texts()
    assert len(sources) == 2
    paid = next(row for row in sources if "twitter" in row)
    assert "Paid Search" in paid and "gclid: Cj0KCQiA-tagged" in paid  # name: value, not JSON
    referral = next(row for row in sources if "invite" in row)
    assert "friends" in referral and "none" in referral
    assert "{" not in page.locator("#lead-sources").inner_text()
    assert page.locator("#invite-link").inner_text().startswith(demo_site.base + "/invite/")
    guest.check("account")
    # Not the admin: the dashboard's own 403 page, with a way home.
    guest.open("/utm/", status=403)
    assert "Forbidden" not in page.content()
    assert page.locator("h1").inner_text() == "You may not see this dashboard"
    guest.check("forbidden")
    with page.expect_navigation():
        page.click("#home")
    assert page.url == demo_site.base + "/"

    # The admin: the dashboard with its conversions, its chart data, a long range, a bad filter.
    admin = Visitor(chromium, width, demo_site.base, shots)
    visitors.append(admin)
    page = admin.open("/login")
    page.fill("input[name=email]", ADMIN[0])
    page.fill("input[name=password]", ADMIN[1])
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url.endswith("/account")
    page = admin.open("/utm/")
    assert int(page.locator("#total-leads .value").inner_text()) == 39  # 38 seeded, the guest
    users = page.locator("#latest td.user").all_inner_texts()
    assert f"guest{width}@example.com" in users  # the demo's @tracker.user_label: the email
    assert all("@" in user for user in users)
    assert page.locator("#latest .why").count() >= 1  # a click ID that decided a channel
    assert "decides the channel over utm_medium" in page.locator("#channel-rule").inner_text()
    assert page.locator("#conversion-table tbody tr").count() >= 3
    admin.readable_axes("#leads-by-channel")
    admin.readable_axes("#revenue-over-time")
    admin.check("dashboard")
    page.click("#leads-by-channel summary")
    assert page.locator("#leads-by-channel table.series").is_visible()
    admin.check("dashboard-chart-data", "#leads-by-channel")
    today = datetime.now(timezone.utc).date()
    start = (today - timedelta(days=89)).isoformat()
    page = admin.open(f"/utm/?start={start}&end={today.isoformat()}&interval=day&model=linear")
    page.click("#leads-by-channel summary")
    assert page.locator("#leads-by-channel table.series thead th").count() == 91
    admin.readable_axes("#leads-by-channel")
    admin.check("dashboard-90-days-chart-data", "#leads-by-channel")
    page = admin.open(f"/utm/?start={today.isoformat()}&end={start}&model=last", status=400)
    assert page.locator("input[type=date][name=start]").input_value() == today.isoformat()
    assert page.locator("input[type=date][name=end]").input_value() == start
    assert page.locator("select[name=model]").input_value() == "last"
    assert "The start must not be after the end." in page.locator("#filter-errors").inner_text()
    admin.check("dashboard-bad-filter", "screen")

    for visitor in visitors:
        visitor.context.close()
        assert visitor.errors == [], visitor.errors
    assert guest.checked + admin.checked == [
        "landing", "login", "signup", "invite", "signup-invited", "account", "forbidden",
        "dashboard", "dashboard-chart-data", "dashboard-90-days-chart-data",
        "dashboard-bad-filter",
    ]  # fmt: skip
