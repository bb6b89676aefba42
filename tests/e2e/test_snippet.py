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
    # A new visitor's page leaves localStorage alone (its first use costs CPU) until it goes.
    assert tab.page.evaluate("utmTracker.touches().first.id") == touch.touch_id
    tab.leave()
    stored = tab.storage()
    cookie = tab.cookie()
    assert cookie is not None
    assert touch.touch_id == stored["first"]["id"] == cookie["l"]["id"]
    # The server's visitor id of this browser names the row, and the cookie carries it.
    assert touch.visitor_id == cookie["v"]
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
    # Two first beacons in flight together (pagehide's and the new page's) may each get a
    # visitor id of their own: the touch is stored once per id, and the browser keeps one.
    [touch, *again] = s.wait_rows("Touch", 1, at_least=True)
    assert {row.touch_id for row in again} <= {touch.touch_id}
    assert tab.storage()["queue"] == []
    assert 204 in {status for _, status in s.outage.beacons[tried:]}
    sent = len(tab.beacons)
    tab.page.evaluate("utmTracker.flush()")
    tab.goto(s.url(s.landing("fourth")))
    assert len(tab.beacons) == sent, "acknowledged: nothing left to send"
    assert {row.touch_id for row in s.wait_rows("Touch", 1, at_least=True)} == {touch.touch_id}

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
    assert [(c["name"], c["value"]) for c in tab.context.cookies() if "consent" in c["name"]] == [
        ("utm_tracker_consent", "1")
    ]
    tab.leave()
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
    tab.page.goto(s.url(s.landing("other", consent="required")))  # pagehide; refusal remembered
    assert tab.page.evaluate("Object.keys(localStorage)") == []
    assert tab.page.evaluate("document.cookie") == "utm_tracker_consent=-1"
    assert tab.beacons == []
    assert s.rows("Touch") == []
    assert tab.errors == []


def test_refusal_relayed_by_the_tags_onload_sends_nothing(
    site: t.Callable[..., Site], tab: Tab
) -> None:
    """A consent manager that already knows the visitor refused relays it from the script tag's
    onload: the first beacon waits for a task of its own, which runs after that load event, so
    nothing is sent, stored or claimed (nor does an answer bring the cookie back)."""
    s = site()
    src = s.url("/utm/snippet.js")
    (s.static / "refused.html").write_text(
        "<!doctype html><title>refused</title>"
        f'<script src="{src}" async onload="utmTracker.consent(false)"></script>'
    )
    tab.page.goto(s.url("/static/refused.html" + LANDING_QUERY), referer=WEBMAIL)
    tab.page.wait_for_function("document.cookie.includes('utm_tracker_consent=-1')")
    tab.page.wait_for_timeout(500)  # a beacon, had one left, would have been answered by now
    assert tab.beacons == []
    assert s.rows("Touch") == []
    assert tab.cookie() is None
    assert tab.storage() is None
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
    tab.page.evaluate("utmTracker.capture()")  # a page with the cookie stores as it captures
    assert tab.storage()["queue"] == []  # the cross-origin answer was readable (CORS)

    tab.page.goto(s.url("/", host="app.example.test"))
    tab.login()
    [lead] = s.wait_rows("LeadSource", 1)
    assert lead.touch_id == touch.touch_id
    assert lead.landing_url == s.url(page + LANDING_QUERY, host="www.example.test")
    assert json.loads(json.dumps(lead.click_ids)) == {"gclid": "Cj0KCQ_abc"}
    assert tab.errors == []


def _token(url: str) -> dict[str, t.Any]:
    """The decoded ``_utm`` token of ``url``."""
    import base64
    from urllib.parse import parse_qs, urlsplit

    [value] = parse_qs(urlsplit(url).query)["_utm"]
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    decoded: dict[str, t.Any] = json.loads(raw)
    return decoded


def test_linker_decorates_links_and_forms_to_the_other_domain(
    site: t.Callable[..., Site], tab: Tab
) -> None:
    """A marketing site on 127.0.0.1 links to the app on localhost (another registrable domain):
    the link and a GET form carry ``_utm`` with the browser's touch when followed, not before,
    and a sign-up on the app ends in one LeadSource row with the marketing site's campaign."""
    s = site()
    app = s.url("/app?plan=pro", host="localhost")
    src = s.url("/utm/snippet.js")
    (s.static / "marketing.html").write_text(
        f'<!doctype html><h1>marketing</h1><a id="signup" href="{app}">sign up</a>'
        f'<a id="self" href="/static/other.html">more</a>'
        f'<form id="search" method="get" action="{s.url("/app", host="localhost")}">'
        '<input name="q" value="shoes"><button id="go">go</button></form>'
        f'<script src="{src}" async data-link-domains="localhost,127.0.0.1"></script>'
    )
    tab.goto(s.url("/static/marketing.html" + LANDING_QUERY), referer=WEBMAIL)
    first = tab.page.evaluate("utmTracker.touches().first")
    assert tab.page.get_attribute("#signup", "href") == app, "not rewritten on load"

    requests: list[str] = []
    tab.page.on("request", lambda r: r.is_navigation_request() and requests.append(r.url))
    tab.page.click("#signup")
    tab.page.wait_for_url("**/app**")
    # The destination's hook answers a redirect without _utm: the first request carried it.
    followed = next(url for url in requests if "localhost" in url)
    assert followed.startswith(s.url("/app?plan=pro&_utm=", host="localhost"))
    token = _token(followed)
    assert [touch["id"] for touch in token["t"]] == [first["id"]]
    assert token["t"][0]["params"] == first["params"]
    assert token["t"][0]["referrer"] == WEBMAIL
    # Signing up on the app's domain makes the marketing site's campaign the lead source.
    assert tab.page.url.startswith(s.url("/app?plan=pro", host="localhost"))
    assert "_utm" not in tab.page.url
    tab.login()
    [lead] = s.wait_rows("LeadSource", 1)
    assert lead.touch_id == first["id"]
    assert (lead.source, lead.medium, lead.campaign) == ("newsletter", "email", "spring")

    tab.page.go_back()
    tab.page.wait_for_function("window.utmTracker")
    requests.clear()
    tab.page.click("#go")
    tab.page.wait_for_url("**/app**")
    searched = next(url for url in requests if "localhost" in url)
    assert "q=shoes" in searched
    assert [touch["id"] for touch in _token(searched)["t"]] == [first["id"]]

    tab.page.go_back()
    tab.page.wait_for_function("window.utmTracker")
    assert tab.page.get_attribute("#self", "href") == "/static/other.html"
    tab.page.click("#self")
    tab.page.wait_for_url("**/other.html")
    assert "_utm" not in tab.page.url, "a link within the page's own link domain is left alone"
    assert tab.errors == []


def test_consent_remembered_across_pages_until_revoked(
    site: t.Callable[..., Site], tab: Tab
) -> None:
    s = site()
    page = s.landing("landing", consent="required")
    tab.goto(s.url(page + LANDING_QUERY), referer=WEBMAIL)
    assert tab.beacons == []
    tab.page.evaluate("utmTracker.consent(true)")
    s.wait_rows("Touch", 1)

    # The next page load needs no consent() call.
    tab.goto(s.url(page + "?utm_source=twitter&utm_medium=social"))
    rows = s.wait_rows("Touch", 2)
    assert rows[1].source == "twitter"

    # Revoked: the snippet's storage and cookie go, only the refusal stays, and later
    # pages capture nothing, with or without data-consent.
    tab.page.evaluate("utmTracker.consent(false)")
    assert tab.page.evaluate("Object.keys(localStorage)") == []
    # The snippet's cookies: the refusal (the server's signed, HttpOnly one is the server's).
    assert tab.page.evaluate("document.cookie") == "utm_tracker_consent=-1"
    assert tab.cookie() is None
    tab.goto(s.url(page + "?utm_source=again"))
    tab.goto(s.url(s.landing("plain") + "?utm_source=plain"))
    assert tab.cookie() is None
    s.wait_rows("Touch", 2)
    assert len(tab.beacons) == 2
    assert tab.errors == []


def test_misconfigured_origin_keeps_the_touch_and_warns_once(
    site: t.Callable[..., Site], tab: Tab
) -> None:
    """A landing page on www.example.test whose origin the collector does not allow: the touch
    stays queued and, if the refusal is readable, the console says what to fix."""
    s = site(UTM_TRACKER_ALLOWED_ORIGINS=[])
    warnings: list[str] = []
    tab.page.on("console", lambda m: m.type == "warning" and warnings.append(m.text))
    page = s.landing("landing", snippet_host="app.example.test")
    tab.goto(s.url(page + LANDING_QUERY, host="www.example.test"), referer=WEBMAIL)
    assert {status for _, status in s.outage.beacons} == {403}
    tab.leave()
    assert len(tab.storage()["queue"]) == 1, "kept until the configuration is fixed"
    assert s.rows("Touch") == []
    # Without CORS headers on the 403 the browser hides its status (a network error):
    # the warning needs the collector to answer its refusal readably.
    assert len([w for w in warnings if "flask-utm-tracker" in w]) <= 1
    assert tab.errors == []
