"""POST /utm/beacon: storage, authentication, and every bad input answered with a clean 4xx."""

from __future__ import annotations

import json
import typing as t

import pytest
import sqlalchemy as sa
from flask_utm_tracker import cookie as cookies

from .conftest import HostApp, make_app
from .helpers import VISITOR, beacon, login, rows, touch, touches


def test_anonymous_beacon_then_login(env: HostApp, client: t.Any) -> None:
    response = beacon(client, {"v": VISITOR, "touches": [touch(1), touch(2)]})
    assert response.status_code == 204
    stored = touches(env)
    assert [(s.touch_id, s.campaign, s.claimed_by) for s in stored] == [
        ("touch-1", "c1", None),
        ("touch-2", "c2", None),
    ]
    cookie = cookies.decode(client.get_cookie("utm_tracker").value)
    # The server's visitor id of this browser, not the body's: it names the stored rows.
    assert cookie is not None and cookie.visitor_id != VISITOR
    visitor = cookie.visitor_id
    assert {s.visitor_id for s in stored} == {visitor}
    login(client)
    got = rows(env)
    assert [(r.touch_id, r.source, r.medium, r.channel, r.visitor_id) for r in got] == [
        ("touch-1", "news", "email", "Email", visitor),
        ("touch-2", "news", "email", "Email", visitor),
    ]
    assert got[0].landing_url.startswith("https://www.example.com/pricing")
    # The client said June 2025, before this browser first reached the server: not believed.
    assert got[0].timestamp.year >= 2026
    assert all(s.claimed_by is not None for s in touches(env))


def test_resent_beacon_is_stored_once(env: HostApp, client: t.Any) -> None:
    body = {"v": VISITOR, "touches": [touch(1)]}
    for _ in range(3):
        assert beacon(client, body).status_code == 204
    assert len(touches(env)) == 1
    login(client)
    login(client)
    assert len(rows(env)) == 1


def test_application_json_is_accepted(env: HostApp, client: t.Any) -> None:
    response = client.post("/utm/beacon", json={"v": VISITOR, "touches": [touch(1)]})
    assert response.status_code == 204
    assert len(touches(env)) == 1


def test_authenticated_beacon_by_session(env: HostApp, client: t.Any) -> None:
    login(client)
    assert beacon(client, {"v": VISITOR, "touches": [touch(1)]}).status_code == 204
    (row,) = rows(env)
    assert row.touch_id == "touch-1"


def test_authenticated_beacon_by_bearer_token(db_url: str) -> None:
    env = make_app(db_url, request_loader=True)
    client = env.app.test_client()
    login(client, "spa@example.com")
    with env.app.app_context():
        token = env.db.session.scalar(sa.select(env.User.token))
    spa = env.app.test_client()
    response = beacon(
        spa, {"v": VISITOR, "touches": [touch(7)]}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 204
    (row,) = rows(env, "spa@example.com")
    assert row.campaign == "c7"


def test_click_id_only_touch_is_kept(env: HostApp, client: t.Any) -> None:
    body = {"v": VISITOR, "touches": [{"id": "t1", "params": {"GCLID": "Cj0-Abc"}}]}
    assert beacon(client, body).status_code == 204
    login(client)
    (row,) = rows(env)
    assert (row.source, row.medium, row.gclid) == ("google", "cpc", "Cj0-Abc")


DEEP = "[" * 5000 + "]" * 5000
BAD_BODIES: list[tuple[str, t.Any, int]] = [
    ("empty", b"", 400),
    ("not json", b"utm_source=x", 400),
    ("invalid utf-8", b'{"v": "\xff\xfe"}', 400),
    ("json array", b"[1, 2]", 400),
    ("json string", b'"hello"', 400),
    ("json null", b"null", 400),
    ("nested 5,000 deep", DEEP.encode(), 400),
    ("nested object 2,500 deep", ('{"v":' * 2500 + "1" + "}" * 2500).encode(), 400),
    (
        "nested in a touch",
        json.dumps({"v": VISITOR, "touches": [{"id": "a", "params": {}}]})[:-3].encode()
        + b'"x": '
        + b"[" * 3000
        + b"]" * 3000
        + b"}]}",
        400,
    ),
    ("missing v", json.dumps({"touches": [touch(1)]}).encode(), 400),
    ("missing touches", json.dumps({"v": VISITOR}).encode(), 400),
    ("empty touches", json.dumps({"v": VISITOR, "touches": []}).encode(), 400),
    ("v wrong type", json.dumps({"v": 12, "touches": [touch(1)]}).encode(), 400),
    ("v bad characters", json.dumps({"v": "a b;DROP", "touches": [touch(1)]}).encode(), 400),
    ("v too long", json.dumps({"v": "a" * 65, "touches": [touch(1)]}).encode(), 400),
    ("touches not a list", json.dumps({"v": VISITOR, "touches": {"id": "x"}}).encode(), 400),
    ("touch not an object", json.dumps({"v": VISITOR, "touches": ["x"]}).encode(), 400),
    (
        "touch without url or params",
        json.dumps({"v": VISITOR, "touches": [{"id": "a"}]}).encode(),
        400,
    ),
    (
        "touch id missing",
        json.dumps({"v": VISITOR, "touches": [{"url": "https://a.b/?utm_source=x"}]}).encode(),
        400,
    ),
    (
        "ts a string",
        json.dumps({"v": VISITOR, "touches": [touch(1, ts="yesterday")]}).encode(),
        400,
    ),
    ("ts a float", json.dumps({"v": VISITOR, "touches": [touch(1, ts=1.5)]}).encode(), 400),
    (
        "params not strings",
        json.dumps({"v": VISITOR, "touches": [touch(1, params={"utm_source": 1})]}).encode(),
        400,
    ),
    (
        "param name over 100 characters",
        json.dumps({"v": VISITOR, "touches": [touch(1, params={"u" * 101: "x"})]}).encode(),
        400,
    ),
    (
        "params too many",
        json.dumps(
            {"v": VISITOR, "touches": [touch(1, params={f"p{i}": "x" for i in range(200)})]}
        ).encode(),
        400,
    ),
    (
        "params a list",
        json.dumps({"v": VISITOR, "touches": [touch(1, params=["utm_source"])]}).encode(),
        400,
    ),
    (
        "51 touches",
        json.dumps(
            {
                "v": VISITOR,
                "touches": [{"id": f"t{i}", "params": {"utm_source": "x"}} for i in range(51)],
            }
        ).encode(),
        400,
    ),
    (
        "5,000 touches",
        json.dumps({"v": VISITOR, "touches": [{"id": "t", "params": {}}] * 5000}).encode(),
        413,
    ),
    (
        "2 MB",
        json.dumps(
            {"v": VISITOR, "touches": [touch(1, url="https://a.b/?" + "x" * 2_000_000)]}
        ).encode(),
        413,
    ),
    (
        "huge integer",
        b'{"v": "abc", "touches": [{"id": "a", "ts": 1'
        + b"0" * 5000
        + b', "url": "https://a.b/"}]}',
        400,
    ),
]


@pytest.mark.parametrize(("name", "body", "status"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies_get_a_clear_4xx_and_nothing_is_stored(
    env: HostApp, client: t.Any, name: str, body: bytes, status: int
) -> None:
    response = beacon(client, body)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    assert isinstance(response.json["error"], str) and response.json["error"].endswith(".")
    assert touches(env) == []


def test_wrong_content_type_is_415(client: t.Any) -> None:
    response = client.post("/utm/beacon", data=b"<x/>", content_type="application/xml")
    assert response.status_code == 415


def test_errors_say_which_field(client: t.Any) -> None:
    response = beacon(client, {"v": VISITOR, "touches": [touch(1, ts="x")]})
    assert response.json["details"] == {"touches": {"0": {"ts": ["Not a valid integer."]}}}


HOSTILE = [
    "nul\x00byte",
    "lone \ud800 surrogate",
    "x" * 10_000,
    "<script>alert(1)</script>",
    "'; DROP TABLE utm_lead_source; --",
    "\u202e\ufeffemoji 🎯",
]


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_values_in_a_beacon(env: HostApp, client: t.Any, value: str) -> None:
    body = {
        "v": VISITOR,
        "touches": [
            {
                "id": "hostile",
                "url": "https://www.example.com/?utm_source=" + value[:100],
                "referrer": "https://" + value[:50] + ".example.org/",
                "params": {
                    "utm_source": value,
                    "utm_campaign": value[:1000],
                    "gclid": value[:1000],
                    value[:90]: "x",
                },
            }
        ],
    }
    raw = json.dumps(body)  # ensure_ascii keeps the lone surrogate as \\ud800
    response = beacon(client, raw)
    assert response.status_code == 204
    login(client)
    (row,) = rows(env)
    assert "\x00" not in row.source and len(row.source) <= 255
    assert row.campaign and len(row.gclid) <= 255


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_values_in_the_query_string_and_cookie(env: HostApp, value: str) -> None:
    client = env.app.test_client()
    from urllib.parse import quote

    quoted = quote(value.encode("utf-8", "surrogatepass"))
    response = client.get(f"/landing?utm_source={quoted}&gclid={quoted}&{quoted}=1")
    assert response.status_code == 200
    client.set_cookie("utm_tracker", quoted[:3000])
    assert client.get("/landing?utm_source=ok").status_code == 200
    login(client)
    assert client.get("/").status_code == 200
    assert [r.source for r in rows(env)][-1] == "ok"


@pytest.mark.parametrize(
    "value",
    [
        "!!!not base64",
        cookies._b64({"v": "ok", "t": "not-a-list", "l": "x"}),
        cookies._b64({"v": "ok", "t": [{"id": "a b", "params": {"utm_source": 3}}, "x", 5]}),
        cookies._b64({"v": "ok", "t": [{"id": "fine", "params": {"utm_source": "c"}}]})[:-3],
        "W1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tb" * 40,
    ],
)
def test_a_broken_cookie_never_breaks_the_login(env: HostApp, value: str) -> None:
    client = env.app.test_client()
    client.set_cookie("utm_tracker", value)
    assert client.get("/landing").status_code == 200
    assert client.post("/login/ann@example.com").status_code == 200
    assert client.get("/").status_code == 200


def test_a_bad_cookie_touch_is_skipped_and_the_rest_kept(env: HostApp) -> None:
    client = env.app.test_client()
    good = {"id": "good", "ts": 1_750_000_000_000, "params": {"utm_source": "kept"}}
    bad = {"id": "bad id!", "params": {"utm_source": "lost"}}
    client.set_cookie("utm_tracker", cookies._b64({"v": "visitor", "t": [bad, good]}))
    login(client)
    assert [r.source for r in rows(env)] == ["kept"]


def test_cross_origin_needs_the_allow_list(db_url: str) -> None:
    from .conftest import make_app

    env = make_app(db_url, UTM_TRACKER_ALLOWED_ORIGINS=["https://www.example.com"])
    client = env.app.test_client()
    body = {"v": VISITOR, "touches": [touch(1)]}
    ok = beacon(client, body, headers={"Origin": "https://www.example.com"})
    assert ok.status_code == 204
    assert ok.headers["Access-Control-Allow-Origin"] == "https://www.example.com"
    assert ok.headers["Access-Control-Allow-Credentials"] == "true"
    evil = beacon(
        client, {"v": VISITOR, "touches": [touch(2)]}, headers={"Origin": "https://evil.test"}
    )
    assert evil.status_code == 403
    assert "Access-Control-Allow-Origin" not in evil.headers
    same = beacon(
        client, {"v": VISITOR, "touches": [touch(3)]}, headers={"Origin": "http://localhost"}
    )
    assert same.status_code == 204
    assert [s.touch_id for s in touches(env)] == ["touch-1", "touch-3"]
    preflight = client.options("/utm/beacon", headers={"Origin": "https://www.example.com"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://www.example.com"


def test_gpc_beacon_is_acknowledged_and_not_stored(env: HostApp, client: t.Any) -> None:
    response = beacon(client, {"v": VISITOR, "touches": [touch(1)]}, headers={"Sec-GPC": "1"})
    assert response.status_code == 204
    assert touches(env) == []


def test_gpc_request_makes_no_touch(env: HostApp, client: t.Any) -> None:
    client.get("/landing?utm_source=x", headers={"Sec-GPC": "1"})
    assert client.get_cookie("utm_tracker") is None


def test_per_visitor_cap(db_url: str) -> None:
    from .conftest import make_app

    env = make_app(db_url, UTM_TRACKER_MAX_TOUCHES_PER_VISITOR=3)
    client = env.app.test_client()
    for n in range(5):
        assert beacon(client, {"v": VISITOR, "touches": [touch(n)]}).status_code == 204
    assert len(touches(env)) == 3


def test_snippet_is_served_with_caching_headers(client: t.Any) -> None:
    response = client.get("/utm/snippet.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert "max-age=" in response.headers["Cache-Control"]
    etag = response.headers["ETag"]
    again = client.get("/utm/snippet.js", headers={"If-None-Match": etag})
    assert again.status_code == 304


def test_a_beacon_naming_another_visitor_stays_this_browsers(env: HostApp, client: t.Any) -> None:
    """The body's "v" is the browser's word only: the touch is stored under this browser's
    server-issued id, its cookie keeps its pending touches, and its login claims both."""
    client.get("/landing?utm_source=server-side")
    before = cookies.decode(client.get_cookie("utm_tracker").value)
    response = beacon(client, {"v": "someone-else", "touches": [touch(1)]})
    assert response.status_code == 204
    after = cookies.decode(client.get_cookie("utm_tracker").value)
    assert before is not None and after is not None
    assert after.visitor_id == before.visitor_id != "someone-else"
    assert after.pending == before.pending
    assert [t.visitor_id for t in touches(env)] == [before.visitor_id]
    login(client)
    assert sorted(r.source for r in rows(env)) == ["news", "server-side"]


@pytest.mark.parametrize("order", ["before", "after"])
def test_csrfprotect_exempts_the_beacon_only(db_url: str, order: str) -> None:
    """With Flask-WTF's CSRFProtect on the host, registered before or after the tracker, a
    beacon (which carries no CSRF token) is stored, and the host's own POST views stay
    protected."""
    env = make_app(db_url, csrf=order)
    client = env.app.test_client()
    assert client.post("/logout").status_code == 400  # the host's view: no token, refused
    response = beacon(client, {"v": "visitor-1", "touches": [touch(1)]})
    assert response.status_code == 204
    assert [t.touch_id for t in touches(env)] == ["touch-1"]
    # A cross-site beacon is still refused, by the Origin check.
    response = beacon(
        client,
        {"v": "visitor-2", "touches": [touch(2)]},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
