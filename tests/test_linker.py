"""The cross-domain linker's server half: a ``_utm`` token adds its touches to the browser that
opens it, then a redirect drops it; bad tokens are ignored. The tokens are the snippet's own
(tests/fixtures/utm-tokens.json, which the node tests check the snippet makes)."""

from __future__ import annotations

import json
import pathlib
import typing as t

import pytest
import sqlalchemy as sa
from flask_utm_tracker import cookie as cookies

from .conftest import HostApp

FIXTURES = json.loads(
    (pathlib.Path(__file__).parent / "fixtures" / "utm-tokens.json").read_text("utf-8")
)
VALID = FIXTURES["valid"]
INVALID = FIXTURES["invalid"]


def _pending(client: t.Any) -> list[dict[str, t.Any]]:
    value = client.get_cookie("utm_tracker")
    state = cookies.decode(value.value if value else None)
    return state.pending if state else []


@pytest.mark.parametrize("case", VALID, ids=[case["name"] for case in VALID])
def test_a_token_becomes_this_browsers_touches_and_is_dropped(
    env: HostApp, client: t.Any, case: dict[str, t.Any]
) -> None:
    response = client.get(f"/landing?plan=pro&_utm={case['token']}&x=1")
    assert response.status_code == 302
    assert response.headers["Location"] in (
        "/landing?plan=pro&x=1",
        "http://localhost/landing?plan=pro&x=1",
    )
    assert response.headers["Cache-Control"] == "no-store"
    carried = case["decoded"]["t"]  # what the token holds (a capped one drops some)
    ids = [touch["id"] for touch in carried]
    assert [touch["id"] for touch in _pending(client)] == ids
    assert client.get("/landing?plan=pro&x=1").data == b"landing"
    assert client.post("/login/ann@example.com").status_code == 200
    with env.app.app_context():
        rows = env.db.session.scalars(sa.select(env.tracker.LeadSource)).all()
        assert sorted(r.touch_id for r in rows) == sorted(ids)
        campaigns = {r.campaign for r in rows if r.campaign}
        expected = {t_["params"].get("utm_campaign") for t_ in carried if t_.get("params")}
        assert campaigns == {c for c in expected if c}


def test_a_token_opened_twice_adds_each_touch_once(env: HostApp, client: t.Any) -> None:
    token = VALID[0]["token"]
    client.get(f"/landing?_utm={token}")
    client.get(f"/landing?_utm={token}")
    assert len(_pending(client)) == len(VALID[0]["touches"])


@pytest.mark.parametrize("case", INVALID, ids=[case["name"] for case in INVALID])
def test_a_bad_token_is_ignored_and_dropped(
    env: HostApp, client: t.Any, case: dict[str, t.Any]
) -> None:
    response = client.get(f"/landing?_utm={case['token']}")
    assert response.status_code == 302
    assert _pending(client) == []
    assert client.get("/landing").status_code == 200


def test_a_token_under_gpc_adds_nothing(env: HostApp, client: t.Any) -> None:
    response = client.get(f"/landing?_utm={VALID[0]['token']}", headers={"Sec-GPC": "1"})
    assert response.status_code == 302 and _pending(client) == []


def test_a_token_never_claims_another_visitors_rows(env: HostApp) -> None:
    """The token carries touches, not a visitor id: the rows a beacon stored for another
    browser stay unclaimed when this browser opens a token and logs in."""
    other, client = env.app.test_client(), env.app.test_client()
    body = {"v": "v", "touches": [{"id": "other-1", "params": {"utm_source": "other"}}]}
    assert other.post("/utm/beacon", json=body).status_code == 204
    client.get(f"/landing?_utm={VALID[0]['token']}")
    assert client.post("/login/ann@example.com").status_code == 200
    with env.app.app_context():
        touch = env.db.session.scalars(sa.select(env.tracker.Touch)).one()
        assert touch.touch_id == "other-1" and touch.claimed_by is None


def test_the_marketing_sites_referral_does_not_replace_the_linked_touches(
    env: HostApp, client: t.Any
) -> None:
    """The browser follows the link from brand.example with a Referer, and keeps it through
    the redirect: the campaign still becomes the lead source, not brand.example / referral."""
    case = VALID[0]
    referer = {"Referer": "https://brand.example/pricing"}
    response = client.get(f"/landing?_utm={case['token']}", headers=referer)
    assert response.status_code == 302
    assert client.get("/landing", headers=referer).status_code == 200
    assert client.post("/login/ann@example.com").status_code == 200
    with env.app.app_context():
        rows = env.db.session.scalars(sa.select(env.tracker.LeadSource)).all()
        assert [(r.source, r.campaign) for r in rows] == [("news", "spring")]


def test_a_form_posted_with_a_token_and_a_login_writes_the_touches_at_once(
    env: HostApp, client: t.Any
) -> None:
    """A sign-up form on the marketing site posting to the app with _utm in its action: no
    redirect (it would lose the form), the touches are adopted and the login writes them."""
    case = VALID[0]
    response = client.post(f"/login/ann@example.com?_utm={case['token']}")
    assert response.status_code == 200
    with env.app.app_context():
        rows = env.db.session.scalars(sa.select(env.tracker.LeadSource)).all()
        assert [(r.touch_id, r.campaign) for r in rows] == [(case["touches"][0]["id"], "spring")]


def test_adopted_touches_keep_only_tracked_parameters(env: HostApp, client: t.Any) -> None:
    import base64
    import json as json_

    token = {
        "at": 1,
        "t": [{"id": "tok-1", "url": "https://brand.example/?utm_source=x&token=s3cret"}],
    }
    raw = base64.urlsafe_b64encode(json_.dumps(token).encode()).decode().rstrip("=")
    client.get(f"/landing?_utm={raw}")
    assert [touch["url"] for touch in _pending(client)] == ["https://brand.example/?utm_source=x"]
