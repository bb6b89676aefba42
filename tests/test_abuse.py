"""Rate limits (memory and Redis across gunicorn workers) and bots."""

from __future__ import annotations

import secrets
import typing as t
from pathlib import Path

import pytest

from .conftest import REDIS_VAR, HostApp, make_app, service_url
from .servers import gunicorn, post_beacon
from .test_beacon import VISITOR, beacon, touch, touches


def test_rate_limit_answers_429_with_retry_after(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_RATE_LIMIT="3/minute")
    client = env.app.test_client()
    statuses = [beacon(client, {"v": VISITOR, "touches": [touch(n)]}).status_code for n in range(5)]
    assert statuses == [204, 204, 204, 429, 429]
    limited = beacon(client, {"v": VISITOR, "touches": [touch(9)]})
    assert limited.json["error"].startswith("Too many beacons")
    assert 1 <= int(limited.headers["Retry-After"]) <= 61
    assert len(touches(env)) == 3
    other = env.app.test_client()
    response = beacon(
        other, {"v": VISITOR, "touches": [touch(8)]}, environ_base={"REMOTE_ADDR": "10.9.8.7"}
    )
    assert response.status_code == 204  # another client has its own budget


@pytest.mark.parametrize(
    "agent",
    [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    ],
)
def test_bots_get_204_and_nothing_is_stored(env: HostApp, client: t.Any, agent: str) -> None:
    response = beacon(client, {"v": VISITOR, "touches": [touch(1)]}, headers={"User-Agent": agent})
    assert response.status_code == 204
    assert touches(env) == []


def test_headless_browsers_are_not_bots(env: HostApp, client: t.Any) -> None:
    agent = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
        " HeadlessChrome/156.0.0.0 Safari/537.36"
    )
    response = beacon(client, {"v": VISITOR, "touches": [touch(1)]}, headers={"User-Agent": agent})
    assert response.status_code == 204
    assert len(touches(env)) == 1


def test_referrer_spam_makes_no_touch(env: HostApp, client: t.Any) -> None:
    spam = {"id": "spam", "url": "https://www.example.com/", "referrer": "http://semalt.com/"}
    assert beacon(client, {"v": VISITOR, "touches": [spam]}).status_code == 204
    assert touches(env) == []


def test_no_raw_ip_in_the_rate_limit_keys(env: HostApp) -> None:
    limiter = env.tracker.state(env.app).limiter
    assert "127.0.0.1" not in limiter.key("127.0.0.1")
    assert limiter.key("127.0.0.1") == limiter.key("127.0.0.1") != limiter.key("127.0.0.2")


def test_redis_limit_is_shared_by_two_gunicorn_workers(tmp_path: Path) -> None:
    redis_url = service_url(REDIS_VAR, "Redis")
    with gunicorn(
        tmp_path,
        f"sqlite:///{tmp_path / 'rl.db'}",
        workers=2,
        # Counters are keyed by an HMAC of the client address: a fresh secret, fresh counters.
        SECRET_KEY=secrets.token_hex(16),
        UTM_TRACKER_RATE_LIMIT="10/minute",
        UTM_TRACKER_RATE_LIMIT_STORAGE=redis_url,
    ) as server:
        # A new connection per request: gunicorn hands them to both workers.
        statuses = [
            post_beacon(server.url, {"v": VISITOR, "touches": [touch(n)]}) for n in range(16)
        ]
    assert statuses.count(204) == 10, statuses
    assert statuses.count(429) == 6, statuses
