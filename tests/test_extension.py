"""The seed's scenarios (django-utm-tracker's) and the request hook, on SQLite and PostgreSQL."""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa
from flask_utm_tracker import lead_source_created, stash_touch

from .conftest import HostApp, make_app
from .helpers import login, pending, rows


def test_anonymous_visit_writes_nothing(env: HostApp, client: t.Any) -> None:
    client.get("/landing?utm_source=Google&utm_medium=CPC&utm_campaign=Spring")
    assert rows(env) == []
    with env.app.app_context():
        assert env.db.session.scalar(sa.select(sa.func.count()).select_from(env.tracker.Touch)) == 0
    assert len(pending(client)) == 1


def test_login_writes_every_field(env: HostApp, client: t.Any) -> None:
    client.get(
        "/landing?UTM_Source=Google&utm_medium=CPC&utm_campaign=Spring%20Sale&utm_term=Shoes"
        "&utm_content=Banner&gclid=AbC-123_x&msclkid=MsX&fbclid=Fb1&twclid=Tw1&aclk=Ac1&ttclid=Tt9"
    )
    login(client)
    (row,) = rows(env)
    assert (row.source, row.medium, row.campaign, row.term, row.content) == (
        "google",
        "cpc",
        "spring sale",
        "shoes",
        "banner",
    )
    assert (row.gclid, row.msclkid, row.fbclid, row.twclid, row.aclk) == (
        "AbC-123_x",
        "MsX",
        "Fb1",
        "Tw1",
        "Ac1",
    )
    assert row.click_ids["ttclid"] == "Tt9"
    assert row.channel == "Paid Search"
    assert row.landing_url.startswith("http://localhost/landing?")
    assert row.visitor_id and row.touch_id
    assert pending(client) == []


def test_two_campaigns_two_rows_in_order(env: HostApp, client: t.Any) -> None:
    client.get("/landing?utm_source=newsletter&utm_medium=email&utm_campaign=one")
    client.get("/landing?utm_source=twitter&utm_medium=social&utm_campaign=two")
    login(client)
    assert [r.campaign for r in rows(env)] == ["one", "two"]


def test_reload_and_redirect_give_one_row(env: HostApp, client: t.Any) -> None:
    url = "/landing?utm_source=google&utm_medium=cpc"
    client.get(url)
    client.get(url)
    client.get(url, headers={"Referer": "https://www.google.com/"})
    client.get("/go", headers={"Referer": "https://news.ycombinator.com/"})
    client.get("/landing", headers={"Referer": "https://news.ycombinator.com/"})
    login(client)
    assert len(rows(env)) == 1


def test_gclid_only_becomes_google_cpc(env: HostApp, client: t.Any) -> None:
    client.get("/landing?gclid=Cj0KCQ")
    login(client)
    (row,) = rows(env)
    assert (row.source, row.medium, row.gclid, row.channel) == (
        "google",
        "cpc",
        "Cj0KCQ",
        "Paid Search",
    )


def test_referrer_only_touch(env: HostApp, client: t.Any) -> None:
    client.get("/landing", headers={"Referer": "https://www.bing.com/search?q=flask+tracking"})
    client.get("/", headers={"Referer": "http://localhost/landing"})  # internal: no touch
    login(client)
    (row,) = rows(env)
    assert (row.source, row.medium, row.term) == ("bing", "organic", "flask tracking")
    assert row.referrer == "https://www.bing.com/search"  # only tracked parameters are stored


def test_direct_visit_is_not_a_touch(env: HostApp, client: t.Any) -> None:
    client.get("/landing")
    assert client.get_cookie("utm_tracker") is None
    login(client)
    assert rows(env) == []


def test_plain_request_costs_no_query_no_cookie_no_session(env: HostApp, client: t.Any) -> None:
    statements: list[str] = []
    with env.app.app_context():
        engine = env.db.engine
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    response = client.get("/landing?page=2", headers={"Referer": "http://localhost/"})
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers  # neither our cookie nor a session write
    assert statements == []


def test_custom_tags(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_CUSTOM_TAGS=["ref", "Partner"])
    client = env.app.test_client()
    client.get("/landing?utm_source=blog&ref=Alice&partner=ACME&other=x")
    login(client)
    (row,) = rows(env)
    assert row.custom_tags == {"ref": "Alice", "partner": "ACME"}


def test_authenticated_visit_written_at_once(env: HostApp, client: t.Any) -> None:
    login(client)
    client.get("/landing?utm_source=facebook&utm_medium=social")
    (row,) = rows(env)
    assert row.source == "facebook"
    assert pending(client) == []


def test_second_login_and_reloads_duplicate_nothing(env: HostApp, client: t.Any) -> None:
    client.get("/landing?utm_source=a&utm_medium=b")
    login(client)
    for _ in range(3):
        client.get("/landing?utm_source=a&utm_medium=b")
    client.post("/logout")
    login(client)
    assert len(rows(env)) == 1


def test_two_visitors_go_to_the_right_users(env: HostApp) -> None:
    ann, bob = env.app.test_client(), env.app.test_client()
    ann.get("/landing?utm_source=ann-source")
    bob.get("/landing?utm_source=bob-source")
    login(ann, "ann@example.com")
    login(bob, "bob@example.com")
    assert [r.source for r in rows(env, "ann@example.com")] == ["ann-source"]
    assert [r.source for r in rows(env, "bob@example.com")] == ["bob-source"]


def test_seed_session_keys_and_stash_touch(env: HostApp) -> None:
    app = env.app

    @app.route("/invite/<token>")
    def invite(token: str) -> str:
        from flask import session

        session["utm_medium"] = "referral"
        session["utm_source"] = "internal"
        session["utm_campaign"] = "july"
        session["utm_term"] = token
        return "ok"

    @app.route("/partner/<token>")
    def partner(token: str) -> str:
        return stash_touch(
            source="partner", medium="referral", term=token, content="Buy-Me", ref=token
        )

    client = app.test_client()
    client.get("/invite/TOKEN1")
    client.get("/partner/Tok2")
    login(client)
    got = sorted(
        (r.source, r.medium, r.campaign, r.term, r.content, r.custom_tags) for r in rows(env)
    )
    assert got == [
        ("internal", "referral", "july", "token1", "", {}),
        ("partner", "referral", "", "tok2", "buy-me", {"ref": "Tok2"}),
    ]
    with client.session_transaction() as sess:
        assert "utm_source" not in sess and "_utm_tracker_touches" not in sess
    client.post("/logout")
    login(client)
    assert len(rows(env)) == 2


def test_stash_touch_needs_a_request() -> None:
    with pytest.raises(RuntimeError, match="needs a request"):
        stash_touch(source="x")


def test_deleting_a_user_deletes_lead_sources(env: HostApp, client: t.Any) -> None:
    client.get("/landing?utm_source=x")
    login(client)
    with env.app.app_context():
        user = env.db.session.scalar(sa.select(env.User))
        env.db.session.delete(user)
        env.db.session.commit()
    assert rows(env) == []


def test_lead_source_created_signal(env: HostApp, client: t.Any) -> None:
    got = []

    def on_created(sender: t.Any, lead_source: t.Any) -> None:
        got.append((sender, lead_source.source, lead_source.user_id))

    with lead_source_created.connected_to(on_created):
        client.get("/landing?utm_source=x")
        login(client)
    assert got == [(env.app, "x", 1)]


def test_database_error_never_breaks_the_login_and_touches_wait(
    env: HostApp, client: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    client.get("/landing?utm_source=patient")
    table = env.tracker.LeadSource.__table__
    with env.app.app_context():
        table.drop(env.db.engine)
    login(client)  # the write fails: logged, the login succeeds
    assert "will retry" in caplog.text
    assert len(pending(client)) == 1
    with env.app.app_context():
        table.create(env.db.engine)
    assert client.get("/").status_code == 200  # the next authenticated request writes it
    assert [r.source for r in rows(env)] == ["patient"]
    assert pending(client) == []


def test_stash_touch_when_logged_in_is_written_at_once(env: HostApp, client: t.Any) -> None:
    @env.app.route("/refer")
    def refer() -> str:
        return stash_touch(source="partner", medium="referral")

    login(client)
    touch_id = client.get("/refer").get_data(as_text=True)
    (row,) = rows(env)
    assert (row.touch_id, row.source) == (touch_id, "partner")


def test_touch_recorded_signal(env: HostApp, client: t.Any) -> None:
    from flask_utm_tracker import touch_recorded

    got = []

    def on_touch(sender: t.Any, touch: dict[str, t.Any], user_id: t.Any) -> None:
        got.append((sender, touch["source"], user_id))

    with touch_recorded.connected_to(on_touch):
        client.get("/landing?utm_source=signal")
    assert got == [(env.app, "signal", None)]


def test_excluded_and_cookie_domain_referrers_make_no_touch(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_COOKIE_DOMAIN=".example.com")
    client = env.app.test_client()
    for referrer in [
        "https://checkout.stripe.com/pay/cs_123",
        "https://www.paypal.com/checkoutnow",
        "https://www.example.com/pricing",
    ]:
        client.get("/landing", headers={"Referer": referrer})
    assert client.get_cookie("utm_tracker", domain=".example.com") is None
    assert client.get_cookie("utm_tracker") is None


def test_referral_after_the_session_timeout_is_a_new_touch(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_SESSION_TIMEOUT=0)
    client = env.app.test_client()
    client.get("/landing", headers={"Referer": "https://blog.example.org/post/1"})
    import time

    time.sleep(0.01)
    client.get("/landing", headers={"Referer": "https://www.reddit.com/r/flask"})
    login(client)
    assert [r.source for r in rows(env)] == ["blog.example.org", "reddit"]


def test_capture_querystring_off(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_CAPTURE_QUERYSTRING=False)
    client = env.app.test_client()
    client.get("/landing?utm_source=x", headers={"Referer": "https://www.bing.com/"})
    assert client.get_cookie("utm_tracker") is None
    login(client)
    assert rows(env) == []


def test_url_prefix_and_cookie_name(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_URL_PREFIX="/track", UTM_TRACKER_COOKIE_NAME="attr")
    client = env.app.test_client()
    assert client.get("/track/snippet.js").status_code == 200
    assert client.get("/utm/snippet.js").status_code == 404
    client.get("/landing?utm_source=x")
    assert client.get_cookie("attr") is not None
    with env.app.test_request_context():
        tag = str(env.tracker.script_tag(spa="auto"))
    assert tag == (
        '<script src="/track/snippet.js" async data-cookie-name="attr" data-spa="auto"></script>'
    )


def test_database_cascade_deletes_lead_sources(env: HostApp, client: t.Any) -> None:
    """``ON DELETE CASCADE`` in the database itself (PostgreSQL; SQLite with foreign keys on)."""
    client.get("/landing?utm_source=x")
    login(client)
    with env.app.app_context():
        engine = env.db.engine
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.execute(sa.delete(env.User.__table__))
    assert rows(env) == []


def test_capturing_an_anonymous_landing_runs_no_query(db_url: str) -> None:
    env = make_app(db_url)
    client = env.app.test_client()
    statements: list[str] = []
    with env.app.app_context():
        engine = env.db.engine
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    client.get("/landing?utm_source=google&utm_medium=cpc")
    client.get("/landing?utm_source=bing&utm_medium=cpc")
    assert len(pending(client)) == 2
    assert statements == []
    login(client)  # the login itself still writes them
    assert [r.source for r in rows(env)] == ["google", "bing"]
