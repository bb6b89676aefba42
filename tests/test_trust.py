"""Attacks on a tracker, each reproduced: hijacked visitor ids, planted and crowded-out touches,
unbounded logged-in paths, secrets in URLs (the rate-limit attacks are in test_abuse.py)."""

from __future__ import annotations

import json
import logging
import time
import typing as t

import pytest
import sqlalchemy as sa
from flask_utm_tracker import cookie as cookies

from .conftest import HostApp, make_app


def _touch(n: int, ts: int | None = None, **params: str) -> dict[str, t.Any]:
    out: dict[str, t.Any] = {
        "id": f"touch-{n}",
        "params": {"utm_source": f"s{n}", "utm_medium": "email", **params},
    }
    if ts is not None:
        out["ts"] = ts
    return out


def _beacon(client: t.Any, v: str, touches: list[dict[str, t.Any]]) -> int:
    body = json.dumps({"v": v, "touches": touches})
    status: int = client.post("/utm/beacon", data=body, content_type="text/plain").status_code
    return status


def _login(client: t.Any, email: str) -> None:
    assert client.post(f"/login/{email}").status_code == 200


def _leads(env: HostApp, email: str) -> list[t.Any]:
    with env.app.app_context():
        model = env.tracker.LeadSource
        query = sa.select(model).join(env.User).where(env.User.email == email)
        return list(env.db.session.scalars(query.order_by(model.timestamp)))


def _visitor(client: t.Any) -> str:
    state = cookies.decode(client.get_cookie("utm_tracker").value)
    assert state is not None
    return state.visitor_id


def test_a_known_visitor_id_claims_nothing(env: HostApp) -> None:
    """A logged-in attacker's beacon naming the victim's visitor id does not make the victim's
    unclaimed touches the attacker's lead sources."""
    victim, attacker = env.app.test_client(), env.app.test_client()
    assert _beacon(victim, "victim-chosen", [_touch(1)]) == 204
    victim_id = _visitor(victim)  # readable by any script on the page
    _login(attacker, "mallory@example.com")
    assert _beacon(attacker, victim_id, [_touch(2)]) == 204
    attacker.set_cookie("utm_tracker", cookies.encode(cookies.CookieState(victim_id)))
    attacker.get("/")
    _login(attacker, "mallory@example.com")
    assert [r.source for r in _leads(env, "mallory@example.com")] == ["s2"]
    _login(victim, "victim@example.com")
    assert [r.source for r in _leads(env, "victim@example.com")] == ["s1"]


def test_planted_touches_are_never_the_victims(env: HostApp) -> None:
    """Touches sent under the victim's id, dated in the year 2000, do not become the victim's
    first touch at their login."""
    victim, attacker = env.app.test_client(), env.app.test_client()
    assert _beacon(victim, "v", [_touch(1)]) == 204
    victim_id = _visitor(victim)
    planted = [_touch(10 + n, ts=946_684_800_000 + n, utm_campaign="planted") for n in range(5)]
    assert _beacon(attacker, victim_id, planted) == 204
    _login(victim, "victim@example.com")
    assert [r.campaign for r in _leads(env, "victim@example.com")] == [""]


def test_the_cap_cannot_be_filled_to_drop_a_visitors_touches(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_MAX_TOUCHES_PER_VISITOR=5, UTM_TRACKER_RATE_LIMIT="")
    victim, attacker = env.app.test_client(), env.app.test_client()
    assert _beacon(victim, "v", [_touch(1)]) == 204
    victim_id = _visitor(victim)
    for n in range(3):
        assert _beacon(attacker, victim_id, [_touch(100 + 10 * n + k) for k in range(10)]) == 204
    assert _beacon(victim, victim_id, [_touch(2)]) == 204
    _login(victim, "victim@example.com")
    assert sorted(r.source for r in _leads(env, "victim@example.com")) == ["s1", "s2"]


def test_a_forged_signed_cookie_is_ignored(env: HostApp) -> None:
    victim, attacker = env.app.test_client(), env.app.test_client()
    assert _beacon(victim, "v", [_touch(1)]) == 204
    signed = victim.get_cookie("utm_tracker_id").value
    victim_id = _visitor(victim)
    forged = signed.replace(signed.rsplit(".", 1)[1], "A" * 27)
    attacker.set_cookie("utm_tracker_id", forged)
    attacker.set_cookie("utm_tracker_id", f"{victim_id}.1700000000000")  # unsigned
    assert _beacon(attacker, victim_id, [_touch(2)]) == 204
    assert attacker.get_cookie("utm_tracker_id").value != signed
    _login(attacker, "mallory@example.com")
    assert [r.source for r in _leads(env, "mallory@example.com")] == ["s2"]


def test_a_clock_in_the_future_or_the_past_is_not_believed(env: HostApp) -> None:
    client = env.app.test_client()
    before = time.time()
    far = int((before + 30 * 86400) * 1000)
    assert _beacon(client, "v", [_touch(1, ts=far), _touch(2, ts=946_684_800_000)]) == 204
    _login(client, "ann@example.com")
    after = time.time()
    for row in _leads(env, "ann@example.com"):
        assert before - 1 <= row.timestamp.timestamp() <= after + 1


def test_logged_in_paths_are_bounded(db_url: str) -> None:
    """A forged visitor cookie full of pending touches, sent again and again by a logged-in
    user, and authenticated beacons, write at most MAX_LEAD_SOURCES_PER_USER rows."""
    env = make_app(db_url, UTM_TRACKER_MAX_LEAD_SOURCES_PER_USER=60, UTM_TRACKER_RATE_LIMIT="")
    client = env.app.test_client()
    _login(client, "mallory@example.com")
    for round_ in range(4):
        pending = [
            {"id": f"r{round_}-{n}", "ts": 1, "params": {"utm_source": "x"}} for n in range(43)
        ]
        state = cookies.CookieState("forged", pending=pending)
        client.set_cookie("utm_tracker", cookies.encode(state))
        client.get("/")
    assert len(_leads(env, "mallory@example.com")) <= 60
    for round_ in range(3):
        touches = [_touch(1000 + 50 * round_ + n) for n in range(50)]
        assert _beacon(client, "v", touches) == 204
    assert len(_leads(env, "mallory@example.com")) == 60
    with env.app.app_context():  # nor are claimed Touch rows kept past the user's cap
        count = sa.select(sa.func.count()).select_from(env.tracker.Touch)
        assert env.db.session.scalar(count) <= 60


def test_an_authenticated_beacon_writes_at_most_a_beacons_worth(env: HostApp) -> None:
    client = env.app.test_client()
    _login(client, "mallory@example.com")
    pending = [{"id": f"p{n}", "ts": 1, "params": {"utm_source": "p"}} for n in range(60)]
    client.set_cookie("utm_tracker", cookies.encode(cookies.CookieState("forged", pending)))
    assert _beacon(client, "v", [_touch(n) for n in range(50)]) == 204
    assert len(_leads(env, "mallory@example.com")) == 50


def test_secrets_in_urls_are_never_stored(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_KEEP_QUERY_PARAMS=["plan"])
    client = env.app.test_client()
    client.get(
        "/landing?utm_source=news&code=oauth-secret&state=xyz&plan=pro&token=reset-secret",
        headers={"Referer": "https://partner.example/page?session=abc&utm_campaign=x#frag"},
    )
    value = client.get_cookie("utm_tracker").value
    assert "secret" not in json.dumps(cookies.decode(value).pending)  # type: ignore[union-attr]
    body = {
        "v": "v",
        "touches": [
            {
                "id": "b1",
                "url": "https://app.example/reset?token=s3cret&gclid=G1",
                "referrer": "https://mail.example/?sid=s3cret",
            }
        ],
    }
    assert client.post("/utm/beacon", json=body).status_code == 204
    _login(client, "ann@example.com")
    rows = _leads(env, "ann@example.com")
    stored = {(r.landing_url, r.referrer) for r in rows}
    assert stored == {
        (
            "http://localhost/landing?utm_source=news&plan=pro",
            "https://partner.example/page?utm_campaign=x",
        ),
        ("https://app.example/reset?gclid=G1", "https://mail.example/"),
    }


def test_a_database_error_at_login_logs_no_parameters(
    env: HostApp, caplog: pytest.LogCaptureFixture
) -> None:
    client = env.app.test_client()
    client.get("/landing?utm_source=news&utm_campaign=launch-secret-plan")
    visitor = _visitor(client)
    with env.app.app_context():
        env.tracker.LeadSource.__table__.drop(env.db.engine)
    with caplog.at_level(logging.ERROR, logger="flask_utm_tracker"):
        _login(client, "ann@example.com")  # the login itself never fails
    logged = caplog.text  # messages and tracebacks, as a log handler writes them
    assert "will retry" in logged
    assert visitor not in logged and "launch-secret-plan" not in logged
    assert "parameters" not in logged.lower()
