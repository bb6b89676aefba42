"""The visitor cookies: the snippet's shared cookie and the server's signed one."""

from __future__ import annotations

import base64

import sqlalchemy as sa
from flask_utm_tracker import cookie as cookies
from hypothesis import given
from hypothesis import strategies as st

from .conftest import make_app


def test_the_cookie_attributes(db_url: str) -> None:
    env = make_app(
        db_url, UTM_TRACKER_COOKIE_DOMAIN=".example.test", UTM_TRACKER_COOKIE_SECURE=True
    )
    response = env.app.test_client().get("/landing?utm_source=x")
    shared, signed = response.headers.getlist("Set-Cookie")
    attributes = ["Domain=.example.test", "Max-Age=31536000", "Path=/", "SameSite=Lax", "Secure"]
    name_value, *got = shared.split("; ")
    assert name_value.startswith("utm_tracker=")
    assert sorted(got) == attributes  # the snippet reads this one
    assert cookies.decode(name_value.split("=", 1)[1]) is not None
    name_value, *got = signed.split("; ")
    assert name_value.startswith("utm_tracker_id=")
    assert sorted(got) == sorted([*attributes, "HttpOnly"])  # the server's claim: no script


@given(
    st.one_of(
        st.text(max_size=5000),
        st.binary(max_size=3000).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    )
)
def test_cookie_decoder_never_raises(value: str) -> None:
    state = cookies.decode(value)
    assert state is None or cookies.valid_id(state.visitor_id)


def test_a_signed_browser_round_trips_and_nothing_else_passes() -> None:
    browser = cookies.Browser("visitor-1", 1_764_400_000_000)
    value = cookies.sign("secret", browser)
    assert cookies.unsign("secret", value) == browser
    assert cookies.unsign("another secret", value) is None
    assert cookies.unsign("secret", value.replace("visitor-1", "visitor-2")) is None
    assert cookies.unsign("secret", "visitor-1.1764400000000") is None
    for junk in (None, "", "x" * 500, "a.b.c", "\udc80"):
        assert cookies.unsign("secret", junk) is None


def test_a_beacon_answers_with_the_browsers_cookie_under_the_servers_id() -> None:
    pending = [{"id": "t1", "ts": 1, "params": {"utm_source": "x"}}]
    value = cookies.encode(cookies.CookieState("snippet-made", pending=pending))
    state, write = cookies.for_beacon(value, "server-id")
    assert write and state.visitor_id == "server-id" and state.pending == pending
    state, write = cookies.for_beacon(None, "server-id")
    assert write and state.visitor_id == "server-id" and state.pending == []


def test_rotating_the_secret_key_keeps_the_claims() -> None:
    """Flask's SECRET_KEY_FALLBACKS: cookies signed with an old key still name their browser;
    new ones are signed with the current key."""
    browser = cookies.Browser("visitor-1", 1_764_400_000_000)
    old = cookies.sign("old secret", browser)
    assert cookies.unsign(["old secret", "new secret"], old) == browser
    new = cookies.sign(["old secret", "new secret"], browser)
    assert cookies.unsign("new secret", new) == browser
    assert cookies.unsign("old secret", new) is None


def test_a_login_after_a_key_rotation_claims_the_browsers_touches(db_url: str) -> None:
    before = make_app(db_url, SECRET_KEY="old secret")
    client = before.app.test_client()
    body = {"v": "v", "touches": [{"id": "t1", "params": {"utm_source": "news"}}]}
    assert client.post("/utm/beacon", json=body).status_code == 204
    signed = client.get_cookie("utm_tracker_id").value
    after = make_app(db_url, SECRET_KEY="new secret", SECRET_KEY_FALLBACKS=["old secret"])
    later = after.app.test_client()
    later.set_cookie("utm_tracker_id", signed)
    assert later.post("/login/ann@example.com").status_code == 200
    with after.app.app_context():
        rows = after.db.session.scalars(sa.select(after.tracker.LeadSource)).all()
        assert [r.touch_id for r in rows] == ["t1"]


def test_the_script_tag_names_the_site_hosts(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_SITE_HOSTS=["www.example.com", "shop.example.com"])
    with env.app.test_request_context():
        tag = env.tracker.script_tag()
    assert 'data-site-hosts="www.example.com,shop.example.com"' in tag
