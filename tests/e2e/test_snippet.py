"""The snippet in real Chromium against the collector: touches, delivery, privacy, hostile
browsers, SPAs and sub-domains, each ending as exactly one row where it should.
"""

from __future__ import annotations

import json
import typing as t

from .conftest import WEBMAIL, Site, Tab

LANDING_QUERY = "?utm_source=Newsletter&utm_medium=email&utm_campaign=Spring&gclid=Cj0KCQ_abc"


def test_webmail_landing_to_lead_source(site: t.Callable[..., Site], tab: Tab) -> None:
    """utm + click ID from a webmail referrer -> Touch row -> login -> LeadSource."""
    s = site()
    tab.goto(s.url(s.landing("landing") + LANDING_QUERY), referer=WEBMAIL)
    [touch] = s.wait_rows("Touch", 1)
    stored = tab.storage()
    cookie = tab.cookie()
    assert cookie is not None
    assert touch.touch_id == stored["first"]["id"] == cookie["l"]["id"]
    assert touch.visitor_id == stored["v"] == cookie["v"]
    assert (touch.source, touch.medium, touch.campaign) == ("newsletter", "email", "spring")
    assert touch.gclid == "Cj0KCQ_abc"
    assert touch.claimed_by is None
    assert stored["queue"] == []

    tab.page.goto(s.url("/"))
    tab.login()
    [lead] = s.wait_rows("LeadSource", 1)
    assert lead.touch_id == touch.touch_id
    assert lead.visitor_id == touch.visitor_id
    assert (lead.source, lead.medium, lead.campaign) == ("newsletter", "email", "spring")
    assert lead.gclid == "Cj0KCQ_abc"
    assert lead.click_ids.get("gclid") == "Cj0KCQ_abc"
    assert lead.referrer == WEBMAIL
    assert lead.landing_url == s.url(s.landing("landing") + LANDING_QUERY)
    assert lead.channel not in ("", "Direct", "Unassigned")
    assert s.rows("Touch")[0].claimed_by == lead.user_id
    assert tab.errors == []


def test_reload_makes_no_second_touch(site: t.Callable[..., Site], tab: Tab) -> None:
    s = site()
    tab.goto(s.url(s.landing("landing") + LANDING_QUERY), referer=WEBMAIL)
    s.wait_rows("Touch", 1)
    tab.page.reload()
    tab.settle()
    tab.page.goto(s.url(s.landing("landing") + LANDING_QUERY))  # the same campaign again
    tab.settle()
    assert len(tab.beacons) == 1
    s.wait_rows("Touch", 1)
    assert tab.errors == []


def test_app_page_touch_is_adopted_not_doubled(site: t.Callable[..., Site], tab: Tab) -> None:
    """On the app's own page the request hook writes the touch; the snippet adopts it."""
    s = site()
    tab.goto(s.url("/app" + LANDING_QUERY), referer=WEBMAIL)
    cookie = tab.cookie()
    assert cookie is not None and len(cookie["t"]) == 1
    assert tab.beacons == []
    stored = tab.storage()
    assert stored["v"] == cookie["v"]
    assert stored["latest"]["id"] == cookie["t"][0]["id"]
    tab.login()
    [lead] = s.wait_rows("LeadSource", 1)
    assert lead.touch_id == cookie["t"][0]["id"]
    assert (lead.source, lead.medium, lead.gclid) == ("newsletter", "email", "Cj0KCQ_abc")
    assert tab.cookie()["t"] == []  # type: ignore[index]
    assert tab.errors == []


def test_collector_outage_then_recovery_gives_one_row(
    site: t.Callable[..., Site], tab: Tab
) -> None:
    s = site()
    s.outage.down = True
    tab.goto(s.url(s.landing("landing") + LANDING_QUERY), referer=WEBMAIL)
    tab.goto(s.url(s.landing("other")))  # the next page load (and pagehide) retry: still down
    tab.page.evaluate("utmTracker.flush()")
    tried = len(s.outage.beacons)
    assert tried >= 3 and {status for _, status in s.outage.beacons} == {503}
    assert len(tab.storage()["queue"]) == 1
    assert s.rows("Touch") == []

    s.outage.down = False
    tab.goto(s.url(s.landing("third")))
    [touch] = s.wait_rows("Touch", 1)
    assert tab.storage()["queue"] == []
    assert 204 in {status for _, status in s.outage.beacons[tried:]}
    sent = len(tab.beacons)
    tab.page.evaluate("utmTracker.flush()")
    tab.goto(s.url(s.landing("fourth")))
    assert len(tab.beacons) == sent, "acknowledged: nothing left to send"
    s.wait_rows("Touch", 1)

    tab.login()
    [lead] = s.wait_rows("LeadSource", 1)
    assert lead.touch_id == touch.touch_id
    assert tab.errors == []


def test_gpc_nothing_stored_or_sent(site: t.Callable[..., Site], tab: Tab) -> None:
    s = site()
    tab.page.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})"
    )
    tab.goto(s.url(s.landing("landing") + LANDING_QUERY), referer=WEBMAIL)
    tab.page.evaluate("utmTracker.capture(); utmTracker.consent(true); utmTracker.flush()")
    tab.page.goto(s.url(s.landing("other")))  # pagehide
    assert tab.page.evaluate("localStorage.length") == 0
    assert tab.context.cookies() == []
    assert tab.beacons == [] and s.outage.beacons == []
    assert s.rows("Touch") == []
    assert tab.errors == []


def test_gpc_ignored_when_the_collector_says_so(site: t.Callable[..., Site], tab: Tab) -> None:
    s = site(UTM_TRACKER_RESPECT_GPC=False)
    tab.page.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})"
    )
    tab.goto(s.url("/app"))
    assert 'data-gpc="ignore"' in tab.page.content()
    tab.goto(s.url(s.landing("landing", gpc="ignore") + LANDING_QUERY))
    s.wait_rows("Touch", 1)
    assert tab.errors == []


def test_consent_granted(site: t.Callable[..., Site], tab: Tab) -> None:
    s = site()
    tab.goto(s.url(s.landing("landing", consent="required") + LANDING_QUERY), referer=WEBMAIL)
    assert tab.page.evaluate("localStorage.length") == 0
    assert tab.context.cookies() == []
    assert tab.beacons == []
    assert tab.page.evaluate("utmTracker.touches()") == {"first": None, "latest": None}

    tab.page.evaluate("utmTracker.consent(true)")
    [touch] = s.wait_rows("Touch", 1)
    assert tab.storage()["first"]["id"] == touch.touch_id
    assert tab.cookie()["l"]["id"] == touch.touch_id  # type: ignore[index]
    assert touch.referrer == WEBMAIL
    assert tab.errors == []


def test_consent_denied(site: t.Callable[..., Site], tab: Tab) -> None:
    s = site()
    tab.goto(s.url(s.landing("landing", consent="required") + LANDING_QUERY), referer=WEBMAIL)
    tab.page.evaluate("utmTracker.consent(false)")
    tab.page.evaluate("history.pushState({}, '', '?utm_source=later'); utmTracker.capture()")
    tab.page.evaluate("utmTracker.flush()")
    tab.page.goto(s.url(s.landing("other", consent="required")))  # pagehide; consent pending
    assert tab.page.evaluate("localStorage.length") == 0
    assert tab.context.cookies() == []
    assert tab.beacons == []
    assert s.rows("Touch") == []
    assert tab.errors == []


BLOCKED_STORAGE = """
const denied = () => { throw new DOMException("The operation is insecure.", "SecurityError"); };
Object.defineProperty(window, "localStorage", { get: denied });
Object.defineProperty(window, "sessionStorage", { get: denied });
Object.defineProperty(Document.prototype, "cookie", { get: denied, set: denied });
"""


def test_storage_and_cookies_throwing_leave_the_page_unharmed(
    site: t.Callable[..., Site], tab: Tab
) -> None:
    s = site()
    tab.page.add_init_script(BLOCKED_STORAGE)
    tab.goto(s.url(s.landing("landing") + LANDING_QUERY), referer=WEBMAIL)
    # Kept in memory, the touch still reached the collector.
    [touch] = s.wait_rows("Touch", 1)
    assert tab.page.evaluate("utmTracker.touches().first.id") == touch.touch_id
    assert tab.page.evaluate("document.querySelector('h1').textContent") == "landing"
    tab.page.goto(s.url(s.landing("other")))
    assert tab.errors == []


def test_sandboxed_frame_without_storage_or_cookies(site: t.Callable[..., Site], tab: Tab) -> None:
    """In an opaque origin (a sandboxed iframe) localStorage and document.cookie really throw."""
    s = site()
    frame_url = s.landing("framed") + LANDING_QUERY
    (s.static / "host.html").write_text(
        f'<!doctype html><h1>host</h1><iframe sandbox="allow-scripts" src="{frame_url}"></iframe>'
    )
    tab.page.goto(s.url("/static/host.html"))
    frame = tab.page.frame_locator("iframe")
    frame.locator("h1").wait_for()
    inner = tab.page.frames[1]
    inner.wait_for_function("window.utmTracker")
    assert inner.evaluate("utmTracker.flush().then(() => utmTracker.touches().first.id)")
    probe = "(() => { try { return typeof localStorage } catch (e) { return e.name } })()"
    assert inner.evaluate(probe) == "SecurityError"
    # From origin "null" the collector refuses (403): dropped, no row, and no page error.
    assert s.rows("Touch") == []
    assert tab.errors == []


def test_spa_capture(site: t.Callable[..., Site], tab: Tab) -> None:
    s = site()
    tab.goto(s.url(s.landing("spa")))
    assert tab.beacons == []
    touch = tab.page.evaluate(
        "history.pushState({}, '', '/static/spa.html?utm_source=ads&utm_medium=cpc');"
        " utmTracker.capture()"
    )
    assert touch["params"] == {"utm_source": "ads", "utm_medium": "cpc"}
    tab.page.evaluate("utmTracker.flush()")
    [row] = s.wait_rows("Touch", 1)
    assert (row.touch_id, row.source, row.medium) == (touch["id"], "ads", "cpc")
    assert tab.page.evaluate("history.pushState({}, '', '#b'); utmTracker.capture()") is None
    assert tab.errors == []


def test_spa_auto(site: t.Callable[..., Site], tab: Tab) -> None:
    s = site()
    tab.goto(s.url(s.landing("spa", spa="auto")))
    for method, source in [("pushState", "one"), ("replaceState", "two"), ("pushState", "three")]:
        tab.page.evaluate(f"history.{method}({{}}, '', '?utm_source={source}&utm_medium=cpc')")
    tab.page.go_back()  # popstate back to "two": the latest is "three", so a new touch
    tab.page.wait_for_function("location.search.includes('two')")
    tab.page.evaluate("utmTracker.flush()")
    rows = s.wait_rows("Touch", 4)
    assert sorted(r.source for r in rows) == ["one", "three", "two", "two"]
    assert tab.errors == []


def test_subdomains_share_the_cookie(site: t.Callable[..., Site], tab: Tab) -> None:
    """A landing page on www.example.test; snippet and app on app.example.test; one cookie for
    both through Domain=.example.test."""
    s = site(UTM_TRACKER_COOKIE_DOMAIN=".example.test")
    page = s.landing("landing", snippet_host="app.example.test", cookie_domain=".example.test")
    tab.goto(s.url(page + LANDING_QUERY, host="www.example.test"), referer=WEBMAIL)
    [touch] = s.wait_rows("Touch", 1)
    assert s.outage.beacons == [(f"app.example.test:{s.port}", 204)]
    cookie = tab.cookie()
    assert cookie is not None and cookie["domain"] == ".example.test"
    assert cookie["v"] == touch.visitor_id
    assert tab.storage()["queue"] == []  # the cross-origin answer was readable (CORS)

    tab.page.goto(s.url("/", host="app.example.test"))
    tab.login()
    [lead] = s.wait_rows("LeadSource", 1)
    assert lead.touch_id == touch.touch_id
    assert lead.landing_url == s.url(page + LANDING_QUERY, host="www.example.test")
    assert json.loads(json.dumps(lead.click_ids)) == {"gclid": "Cj0KCQ_abc"}
    assert tab.errors == []
