"""The standalone collector: the same beacon answers and rows as the host's route, without the
host's hooks."""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask, request
from flask_utm_tracker.collector import make_collector, mount_collector

from .conftest import HostApp, make_app

BODY = {
    "v": "visitor-1",
    "touches": [{"id": "touch-1", "ts": 1_750_000_000_000, "params": {"utm_source": "news"}}],
}


def _stored(env: HostApp) -> list[tuple[t.Any, ...]]:
    """(touch id, source) of the stored touches: stored under the server's visitor id."""
    with env.app.app_context():
        table = env.tracker.Touch.__table__
        query = sa.select(table.c.touch_id, table.c.source)
        with env.db.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(query)]


def _close(env: HostApp, collector: Flask) -> None:
    """The collector's engines are its own (Flask-SQLAlchemy makes them per app)."""
    with collector.app_context():
        for engine in env.db.engines.values():
            engine.dispose()


def test_the_collector_stores_what_the_route_stores_without_host_hooks(db_url: str) -> None:
    env = make_app(db_url)
    ran: list[str] = []
    env.app.before_request(lambda: ran.append("host hook"))
    collector = make_collector(env.app)
    client = collector.test_client()
    response = client.post("/utm/beacon", json=BODY)
    assert response.status_code == 204
    assert "utm_tracker=" in response.headers["Set-Cookie"]  # the visitor cookie, as the route
    assert _stored(env) == [("touch-1", "news")]
    assert ran == []
    bad = client.post("/utm/beacon", json={"v": "visitor-1", "touches": []})
    assert bad.status_code == 400 and "error" in bad.get_json()
    assert client.get("/utm/snippet.js").status_code == 200
    assert client.get("/utm/").status_code == 404  # the dashboard stays in the host app
    _close(env, collector)


def test_mounted_the_collector_takes_the_beacon_and_the_host_the_rest(db_url: str) -> None:
    env = make_app(db_url)
    ran: list[str] = []
    env.app.before_request(lambda: ran.append(request.path))
    collector = mount_collector(env.app)
    client = env.app.test_client()
    assert client.post("/utm/beacon", json=BODY).status_code == 204
    assert client.get("/").data == b"home"
    assert ran == ["/"]
    assert _stored(env) == [("touch-1", "news")]
    # A login in the host claims what the collector stored (the cookie came from the collector).
    assert client.post("/login/ann@example.com").status_code == 200
    with env.app.app_context():
        rows = env.db.session.scalars(sa.select(env.tracker.LeadSource)).all()
        assert [(r.touch_id, r.source) for r in rows] == [("touch-1", "news")]
    _close(env, collector)


def test_a_collector_needs_a_tracker() -> None:
    with pytest.raises(RuntimeError, match="init_app"):
        make_collector(Flask(__name__))
