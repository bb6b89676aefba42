"""The dashboard (``GET /utm/``) and its data (``GET /utm/report.json``) with the test client."""

from __future__ import annotations

import re
import typing as t
from datetime import date, timedelta

import pytest
from flask_login import current_user
from flask_utm_tracker import dashboard, reports
from marshmallow import ValidationError

from .builders import add_user, at, build, touch
from .conftest import HostApp

MARCH = "start=2024-03-01&end=2024-03-31"
XSS_SOURCE = "<script>alert('source')</script>"
XSS_CAMPAIGN = '"><img src=x onerror=alert(1)>'


def allow_admin(env: HostApp) -> None:
    @env.tracker.dashboard_permission
    def is_admin() -> bool:
        return bool(current_user.is_authenticated and current_user.email == "admin@example.com")


@pytest.fixture
def admin(env: HostApp) -> t.Any:
    """A test client logged in as the admin, on an app with the hand-built data."""
    allow_admin(env)
    with env.app.app_context():
        build(env)
    client = env.app.test_client()
    assert client.post("/login/admin@example.com").status_code == 200
    return client


def text_of(html: str, element_id: str) -> str:
    """The text of the element with ``element_id`` (up to its closing section/div)."""
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</(section|div)>', html, re.S)
    assert match, element_id
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


def test_denied_by_default(env: HostApp, client: t.Any) -> None:
    assert client.get("/utm/").status_code == 403
    assert client.get("/utm/report.json").status_code == 403


def test_denied_when_the_check_says_no(env: HostApp, client: t.Any) -> None:
    allow_admin(env)
    client.post("/login/someone@example.com")
    assert client.get("/utm/").status_code == 403
    assert client.get("/utm/report.json").status_code == 403


def test_a_denied_user_gets_a_page_with_a_way_back(env: HostApp, client: t.Any) -> None:
    allow_admin(env)
    client.post("/login/someone@example.com")
    response = client.get("/utm/?start=2024-03-01")
    assert response.status_code == 403 and response.mimetype == "text/html"
    assert response.headers["Cache-Control"] == "private, no-store"
    html = response.text
    assert "Forbidden" not in html  # not Werkzeug's bare page
    assert "You may not see this dashboard" in html
    assert re.search(r'<a class="button" href="/" id="home">Back to the home page</a>', html)
    assert '<link rel="stylesheet" href="/utm/dashboard.css">' in html
    assert 'id="login"' not in html  # logged in already: no login link
    assert "<script" not in html and "style=" not in html
    # The JSON routes still answer JSON.
    for path in ("/utm/report.json", "/utm/conversions.json"):
        denied = client.get(path)
        assert denied.status_code == 403 and denied.mimetype == "application/json"
        assert denied.get_json()["error"] == "The dashboard permission check denied this request."


def test_the_403_page_offers_the_hosts_login_view(env: HostApp, client: t.Any) -> None:
    allow_admin(env)
    env.app.login_manager.login_view = "landing"  # type: ignore[attr-defined]
    html = client.get("/utm/?model=last").text
    assert '<a href="/landing?next=/utm/?model%3Dlast" id="login">Log in</a>' in html
    env.app.login_manager.login_view = "login"  # type: ignore[attr-defined]
    html = client.get("/utm/").text  # a login view that needs an argument: no link, no 500
    assert 'id="home"' in html and 'id="login"' not in html


def test_dashboard_numbers(admin: t.Any) -> None:
    response = admin.get(f"/utm/?{MARCH}&interval=week")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "private, no-store"
    html = response.text
    assert text_of(html, "total-leads") == "Leads 3"
    assert text_of(html, "total-touches") == "Touches per lead 1.67"
    assert text_of(html, "total-channels") == "Channels 4"
    top = text_of(html, "top-sources")
    assert "google 1" in top and "newsletter 1" in top and "example.org 1" in top
    comparison = text_of(html, "comparison")
    assert "Email 1 1 0 1.3 2" in comparison
    assert "Paid Search 1 0 -1 0.3 1" in comparison
    assert "Organic Social 0 1 +1 0.3 1" in comparison
    # No script and no inline style: the page works under a strict Content-Security-Policy.
    assert "<script" not in html and "style=" not in html and "<style" not in html
    # The latest lead sources of the period (by recorded time).
    assert text_of(html, "latest").count("newsletter / email") == 2


def test_the_model_filter_changes_the_numbers(admin: t.Any) -> None:
    first = text_of(admin.get(f"/utm/?{MARCH}&model=first").text, "top-sources")
    last = text_of(admin.get(f"/utm/?{MARCH}&model=last").text, "top-sources")
    assert "google 1" in first and "facebook" not in first
    assert "facebook 1" in last and "google" not in last


def test_the_date_filter_changes_the_numbers(admin: t.Any) -> None:
    html = admin.get("/utm/?start=2024-04-01&end=2024-04-30").text
    assert text_of(html, "total-leads") == "Leads 1"
    assert "Organic Search" in text_of(html, "comparison")


def test_chart(admin: t.Any) -> None:
    html = admin.get(f"/utm/?{MARCH}&model=linear&interval=week").text
    svg = re.search(r'<svg class="plot" width="100%".*?</svg>', html, re.S)
    assert svg
    rects = re.findall(
        r'<rect x="[\d.]+%" y="[\d.]+" width="[\d.]+%" height="([\d.]+)"', svg.group(0)
    )
    assert (
        len(rects) == 4
    )  # week of the 4th: ann's three channels (bob's Email too); the 11th: eve's
    assert all(float(h) > 0 for h in rects)
    assert 'data-total="3"' in svg.group(0)
    assert "<title>Mar 11: Referral, 1</title>" in svg.group(0)
    assert "per week (linear)" in html


def test_empty_period(admin: t.Any) -> None:
    html = admin.get("/utm/?start=2020-01-01&end=2020-01-31").text
    assert text_of(html, "total-leads") == "Leads 0"
    assert "No leads in this period." in html
    assert 'class="plot"' not in html


def test_every_value_is_escaped_and_links_are_http_only(env: HostApp) -> None:
    allow_admin(env)
    with env.app.app_context():
        fields = touch("Referral", XSS_SOURCE, "referral", at(1), at(2), XSS_CAMPAIGN)
        add_user(
            env,
            "mallory@example.com",
            {
                **fields,
                "landing_url": "javascript:alert(1)",
                "referrer": "https://evil.example/?q=\"'<>",
            },
        )
        add_user(
            env,
            "nat@example.com",
            touch("Referral", "ok", "referral", at(3), at(4))
            | {"landing_url": "data:text/html,hi"},
        )
    client = env.app.test_client()
    client.post("/login/admin@example.com")
    html = client.get(f"/utm/?{MARCH}").text
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&#39;source&#39;)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    hrefs = re.findall(r'<a href="([^"]*)"', html)
    assert not [h for h in hrefs if h.startswith(("javascript:", "data:"))]
    assert "https://evil.example/?q=&#34;&#39;&lt;&gt;" in hrefs
    assert 'rel="noopener noreferrer nofollow"' in html
    assert "javascript:alert(1)</span>" in html  # shown as text


def test_bad_filters_are_reported(admin: t.Any) -> None:
    response = admin.get("/utm/?start=2024-03-31&end=2024-03-01&model=<b>x</b>")
    assert response.status_code == 400
    assert "The start must not be after the end." in response.text or "model" in response.text
    assert "<b>x</b>" not in response.text
    assert "Must be one of" in response.text


def form_value(html: str, name: str) -> str:
    """The value an input or select of the filters form shows."""
    found = re.search(rf'<input type="date" name="{name}" value="([^"]*)"', html)
    if found:
        return found.group(1)
    select = re.search(rf'<select name="{name}".*?</select>', html, re.S)
    assert select, name
    chosen = re.findall(r'<option value="([^"]*)" selected>', select.group(0))
    assert len(chosen) == 1, (name, chosen)
    return chosen[0]


def test_a_bad_filter_keeps_what_was_typed(admin: t.Any) -> None:
    typed = "start=2024-03-31&end=2024-03-01&model=last&interval=week&cmodel=position&by=source"
    response = admin.get(f"/utm/?{typed}")
    assert response.status_code == 400
    html = response.text
    assert "start: The start must not be after the end." in html
    got = {name: form_value(html, name) for name in ("start", "end", "model", "interval")}
    assert got == {"start": "2024-03-31", "end": "2024-03-01", "model": "last", "interval": "week"}
    assert form_value(html, "cmodel") == "position" and form_value(html, "by") == "source"
    assert '<input type="date" name="start" value="2024-03-31" aria-invalid="true">' in html
    assert 'name="end" value="2024-03-01">' in html  # the end alone was fine
    # A value no option has stays selected, marked, and escaped.
    html = admin.get("/utm/?model=%3Cb%3Ex%3C/b%3E&cmodel=u_shaped&start=2024-02-30").text
    assert form_value(html, "model") == "&lt;b&gt;x&lt;/b&gt;" and "<b>x</b>" not in html
    assert "&lt;b&gt;x&lt;/b&gt; (unknown)</option>" in html
    assert form_value(html, "cmodel") == "u_shaped"
    assert form_value(html, "start") == "2024-02-30"
    assert "start: Not a valid date." in html and "cmodel: Must be one of" in html


def test_valid_filters_show_what_is_in_use(admin: t.Any) -> None:
    html = admin.get("/utm/?start=2024-03-01&model=linear").text
    assert form_value(html, "start") == "2024-03-01"
    assert form_value(html, "model") == "linear" and form_value(html, "interval") == "auto"
    assert form_value(html, "cmodel") == "last" and form_value(html, "by") == "channel"
    assert "aria-invalid" not in html and 'id="filter-errors"' not in html


def test_users_are_named_by_the_hosts_label(admin: t.Any, env: HostApp) -> None:
    def cell(html: str) -> list[str]:
        latest = html.split('id="latest"')[1]
        return re.findall(r'<td class="user"[^>]*>(.*?)</td>', latest)

    with env.app.app_context():
        ids = sorted(env.db.session.scalars(env.db.select(env.User.id)))
    default = cell(admin.get(f"/utm/?{MARCH}").text)
    assert default and set(default) <= {str(i) for i in ids}  # the primary key by default

    @env.tracker.user_label
    def label(user: t.Any) -> str:
        return "<i>" + user.email + "</i>" if user.email.startswith("bob") else user.email

    named = cell(admin.get(f"/utm/?{MARCH}").text)
    assert len(named) == len(default)
    assert "ann@example.com" in named and "eve@example.com" in named
    assert "&lt;i&gt;bob@example.com&lt;/i&gt;" in named  # escaped like every value


def test_a_click_id_that_decides_the_channel_is_explained(env: HostApp) -> None:
    allow_admin(env)
    visitor = env.app.test_client()
    visitor.get("/landing?utm_source=twitter&utm_medium=social&gclid=Cj0-test")
    assert visitor.post("/login/tw@example.com").status_code == 200
    visitor = env.app.test_client()
    visitor.get("/landing?utm_source=newsletter&utm_medium=email")
    assert visitor.post("/login/news@example.com").status_code == 200
    admin = env.app.test_client()
    admin.post("/login/admin@example.com")
    html = admin.get("/utm/").text
    rows = re.findall(r"<tr>(.*?)</tr>", html.split('id="latest"')[1], re.S)
    paid = next(row for row in rows if "twitter / social" in row)
    assert "Paid Search" in paid
    note = re.search(r'<small class="why" title="([^"]*)">by click ID</small>', paid)
    assert note and "gclid" in note.group(1) and "utm_medium (social)" in note.group(1)
    email = next(row for row in rows if "newsletter / email" in row)
    assert "Email" in email and "by click ID" not in email
    # The rule is stated where channels are shown, in words when no docs URL is known.
    found = re.search(r'<p class="hint" id="channel-rule">(.*?)</p>', html, re.S)
    assert found and html.index('id="leads-by-channel"') < found.start()
    rule = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", found.group(1)))
    assert "An ad click ID decides the channel over utm_medium, as GA4's rule does" in rule
    assert "a gclid tagged utm_medium=social is Paid Search" in rule
    assert "attribution rules of the documentation" in rule


def test_the_channel_rule_links_to_the_docs(admin: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard, "docs_url", lambda: "https://docs.example/en/")
    html = admin.get(f"/utm/?{MARCH}").text
    assert '<a href="https://docs.example/en/attribution.html#click-id-rule">' in html
    assert re.search(
        r'<th title="A click ID decides the channel over utm_medium[^"]*">Channel', html
    )


def test_docs_url_comes_from_the_project_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    class Meta:
        def __init__(self, urls: list[str]) -> None:
            self.urls = urls

        def get_all(self, name: str) -> list[str]:
            return self.urls if name == "Project-URL" else []

    for urls, expected in [
        (["Source, https://github.com/x/y", "Documentation, https://x.example/docs"],
         "https://x.example/docs/"),
        (["Documentation, https://x.example/"], "https://x.example/"),
        (["Source, https://github.com/x/y"], None),
        (["Documentation, javascript:alert(1)"], None),
    ]:  # fmt: skip
        monkeypatch.setattr(metadata, "metadata", lambda name, urls=urls: Meta(urls))
        dashboard.docs_url.cache_clear()
        assert dashboard.docs_url() == expected
    dashboard.docs_url.cache_clear()


def test_report_json(admin: t.Any) -> None:
    body = admin.get(f"/utm/report.json?{MARCH}&model=last&interval=month").get_json()
    assert body["start"] == "2024-03-01" and body["end"] == "2024-03-31"
    assert body["model"] == "last" and body["interval"] == "month"
    assert body["totals"] == {"leads": 3, "touches": 5, "touches_per_lead": 5 / 3, "unclaimed": 0}
    assert body["series"] == {
        "buckets": ["2024-03-01"],
        "values": {"Email": [1.0], "Organic Social": [1.0], "Referral": [1.0]},
    }
    assert {c["key"] for c in body["top_sources"]} == {"newsletter", "facebook", "example.org"}
    assert body["top_campaigns"] == [{"key": "", "leads": 3.0}]  # last touches had no campaign
    email = next(c for c in body["comparison"] if c["key"] == "Email")
    assert email == {
        "key": "Email",
        "first": 1,
        "last": 1,
        "linear": pytest.approx(4 / 3),
        "touches": 2,
    }


def test_extreme_dates(admin: t.Any) -> None:
    assert admin.get("/utm/?start=0001-01-01&end=0001-01-31").status_code == 200
    assert admin.get("/utm/?start=9999-12-01&end=9999-12-31").status_code == 400
    assert admin.get("/utm/report.json?start=1990-01-01&end=2024-01-01").status_code == 400


def test_report_json_rejects_bad_filters(admin: t.Any) -> None:
    response = admin.get("/utm/report.json?model=middle&start=yesterday")
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "The filters are invalid."
    assert set(body["details"]) == {"model", "start"}


def test_stylesheet(client: t.Any) -> None:
    response = client.get("/utm/dashboard.css")
    assert response.status_code == 200
    assert response.mimetype == "text/css"
    assert ".utm-dashboard" in response.text
    response.close()


def test_templates_are_overridable(env: HostApp, tmp_path: t.Any) -> None:
    allow_admin(env)
    folder = tmp_path / "templates" / "utm_tracker"
    folder.mkdir(parents=True)
    (folder / "_chart.html").write_text("<p id=custom-chart>{{ chart.total }}</p>")
    env.app.template_folder = str(tmp_path / "templates")
    client = env.app.test_client()
    client.post("/login/admin@example.com")
    html = client.get("/utm/").text
    assert "<p id=custom-chart>0.0</p>" in html
    assert "Lead sources" in html  # the rest is still the package's


# -- units -----------------------------------------------------------------------------------


def test_filters_defaults() -> None:
    today = date(2024, 5, 31)
    got = dashboard.filters_from({}, today=today)
    assert (got.start, got.end, got.model, got.interval) == (
        date(2024, 5, 2),
        today,
        "first",
        "day",
    )
    got = dashboard.filters_from({"start": "2024-01-01", "end": "", "model": "linear"}, today=today)
    assert (got.start, got.end, got.model, got.interval) == (
        date(2024, 1, 1),
        today,
        "linear",
        "week",
    )
    got = dashboard.filters_from({"start": "2020-01-01", "interval": "day"}, today=today)
    assert got.interval == "month" and got.asked_interval == "day"
    got = dashboard.filters_from({"end": "0001-01-05"}, today=today)
    assert (got.start, got.end) == (date(1, 1, 1), date(1, 1, 5))
    with pytest.raises(ValidationError):
        dashboard.filters_from({"interval": "hour"})
    with pytest.raises(ValidationError, match="at most 3653 days"):
        dashboard.filters_from({"start": "2000-01-01", "end": "2024-01-01"})
    with pytest.raises(ValidationError, match="at most 3653 days"):
        dashboard.filters_from({"start": "9999-12-01"})


def test_safe_href() -> None:
    assert dashboard.safe_href("https://example.com/a?b=c") == "https://example.com/a?b=c"
    assert dashboard.safe_href(" HTTP://example.com ") == "HTTP://example.com"
    bad_urls = ["javascript:alert(1)", "JaVaScRiPt:x", "data:text/html,x", "//example.com", "/x"]
    bad_urls += ["", None, "http://[::1", "vbscript:x", "http:///nohost"]
    for bad in bad_urls:
        assert dashboard.safe_href(bad) is None, bad


def test_nice_step() -> None:
    assert [dashboard.nice_step(v) for v in (0, 3, 7, 13, 40, 130)] == [1, 1, 2, 5, 10, 50]


def test_chart_geometry() -> None:
    series = reports.Series(
        [date(2024, 3, 4), date(2024, 3, 11)],
        {"Email": [2.0, 1.0], "Something new": [2.0, 0.0]},
    )
    got = dashboard.chart(series, "week")
    assert got.total == 5
    heights = [bar.height for bar in got.bars]
    assert len(heights) == 3
    assert heights[0] == pytest.approx(heights[1]) == pytest.approx(2 * heights[2])
    # The tallest stack (4) reaches the top tick (4).
    assert got.bars[1].y == pytest.approx(got.top)
    assert [tick.label for tick in got.y_ticks] == ["0", "1", "2", "3", "4"]
    assert [tick.label for tick in got.x_ticks] == ["Mar 4", "Mar 11"]
    assert got.legend == [("Email", "#ff7f0e", 3.0), ("Something new", "#aec7e8", 2.0)]
    # Horizontal geometry in percent of the plot: every bar inside it, in its own band.
    assert all(0 <= bar.x and bar.x + bar.width <= 100 for bar in got.bars)
    assert got.bars[0].x < 50 <= got.bars[2].x
    many = reports.Series([date(2024, 1, 1) + timedelta(days=i) for i in range(90)], {})
    ticks = dashboard.chart(many, "day").x_ticks
    assert len(ticks) <= 8
    # Every other label is minor (hidden on a phone), so a phone shows at most four.
    assert len([tick for tick in ticks if not tick.minor]) <= 4


def test_visits_through_the_app_show_up_by_channel(env: HostApp) -> None:
    """A product owner's check: ads, a newsletter, search and social, then sign-ups."""
    allow_admin(env)
    visits = {
        "ads@example.com": ("/landing?utm_source=google&utm_medium=cpc&utm_campaign=spring", None),
        "click@example.com": ("/landing?gclid=Cj0KCQ", None),
        "news@example.com": ("/landing?utm_source=newsletter&utm_medium=email", None),
        "search@example.com": ("/landing", "https://www.google.com/search?q=lead+tracking"),
        "social@example.com": ("/landing", "https://www.facebook.com/"),
        "direct@example.com": ("/landing", None),
    }
    for email, (url, referrer) in visits.items():
        visitor = env.app.test_client()
        visitor.get(url, headers={"Referer": referrer} if referrer else {})
        assert visitor.post(f"/login/{email}").status_code == 200
    admin = env.app.test_client()
    admin.post("/login/admin@example.com")
    body = admin.get("/utm/report.json").get_json()
    assert body["totals"]["leads"] == 5  # the direct visit is not a touch
    channels = {c["key"]: c["first"] for c in body["comparison"]}
    assert channels == {"Paid Search": 2, "Email": 1, "Organic Search": 1, "Organic Social": 1}
    assert {c["key"] for c in body["top_sources"]} == {"google", "newsletter", "facebook"}
    html = admin.get("/utm/").text
    assert text_of(html, "total-leads") == "Leads 5"
    assert html.count("<rect x=") == 4  # today's bar, one segment per channel


# -- conversions ---------------------------------------------------------------------------------


@pytest.fixture
def buyer(env: HostApp) -> t.Any:
    """The admin's client, on an app with two purchases and some spend, in March 2024."""
    from datetime import datetime, timezone

    from .builders import add_lead as add_buyer

    allow_admin(env)
    when = datetime(2024, 3, 10, 12, tzinfo=timezone.utc)
    day = timedelta(days=1)
    with env.app.app_context():
        one = add_buyer(
            env,
            [("google", "cpc", "spring", when - 3 * day), (XSS_SOURCE, "email", "", when - day)],
        )
        two = add_buyer(env, [("google", "cpc", "spring", when - day)])
        env.tracker.record_conversion(one, "purchase", value=100, currency="EUR", occurred_at=when)
        env.tracker.record_conversion(two, "purchase", value=60, currency="EUR", occurred_at=when)
        env.tracker.record_conversion(two, "sign_up", occurred_at=when - 2 * day)
        spend = env.tracker.Spend(
            date=when.date(), source="google", medium="cpc", campaign="spring", utm_id="",
            cost=40, currency="EUR",
        )  # fmt: skip
        env.db.session.add(spend)
        env.db.session.commit()
    client = env.app.test_client()
    assert client.post("/login/admin@example.com").status_code == 200
    return client


def test_conversions_section(buyer: t.Any) -> None:
    html = buyer.get(f"/utm/?{MARCH}&conversion=purchase&cmodel=first&by=channel").text
    assert text_of(html, "total-conversions") == "Conversions 2"
    assert text_of(html, "total-revenue") == "Revenue 160.00 EUR"
    assert text_of(html, "total-spend") == "Spend 40.00 EUR"
    assert text_of(html, "total-roas") == "ROAS 4.00"
    models = re.findall(r'<option value="([a-z_]+)"', html.split('id="conversion-model"')[1])
    assert models[:6] == ["first", "last", "linear", "position", "time_decay", "data_driven"]
    table = html.split('id="conversion-table">')[1].split("</table>")[0]
    # First touch: both purchases from Paid Search: 160 EUR for 40 EUR of spend, CPA 20.
    assert re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", table)).split() == [
        "Channel", "Conversions", "Revenue", "Spend", "ROAS", "CPA",
        "Paid", "Search", "2", "160.00", "EUR", "40.00", "EUR", "4.00", "20.00",
    ]  # fmt: skip
    assert 'id="revenue-over-time"' in html and 'data-total="160.00"' in html


def test_the_model_switch_moves_the_credit(buyer: t.Any) -> None:
    last = buyer.get(f"/utm/?{MARCH}&conversion=purchase&cmodel=last&by=medium").text
    table = last.split('id="conversion-table"')[1]
    assert re.search(r"<td>email</td>\s*<td class=\"n\">1</td>", table)
    assert XSS_SOURCE not in last  # escaped where it shows (the source dimension)
    linear = buyer.get(f"/utm/?{MARCH}&conversion=purchase&cmodel=linear&by=source").text
    assert "&lt;script&gt;alert(&#39;source&#39;)&lt;/script&gt;" in linear
    assert text_of(linear, "total-conversions") == "Conversions 2"
    driven = buyer.get(f"/utm/?{MARCH}&cmodel=data_driven").text
    assert "Showing linear instead" in driven


def test_bad_conversion_filters(buyer: t.Any) -> None:
    response = buyer.get(f"/utm/?{MARCH}&cmodel=u_shaped&by=term")
    assert response.status_code == 400
    assert "cmodel: Must be one of" in response.text and "by: Must be one of" in response.text


def test_conversions_json(buyer: t.Any, env: HostApp) -> None:
    response = buyer.get("/utm/conversions.json?name=purchase&model=position&by=campaign")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "private, no-store"
    body = response.get_json()
    with env.app.app_context():
        rows = env.tracker.attribute(name="purchase", model="position", by="campaign")
    assert body["rows"] == rows and body["model"] == body["used"] == "position"
    assert rows[0] == {
        "key": "spring", "conversions": 1.5, "revenue": {"EUR": 110.0}, "spend": {"EUR": 40.0},
        "roas": 2.75, "cpa": pytest.approx(40 / 1.5, abs=1e-6),
    }  # fmt: skip
    bad = buyer.get("/utm/conversions.json?model=x&by=term&name=a%20b")
    assert bad.status_code == 400 and set(bad.get_json()["details"]) == {"model", "by", "name"}
    bad = buyer.get("/utm/conversions.json?start=2024-03-02&end=2024-03-01")
    assert bad.status_code == 400 and set(bad.get_json()["details"]) == {"start"}


def test_conversions_json_is_denied_by_default(env: HostApp, client: t.Any) -> None:
    response = client.get("/utm/conversions.json")
    assert response.status_code == 403 and "error" in response.get_json()
