"""Helpers the test modules share: beacons, logins, the rows they leave."""

from __future__ import annotations

import json
import typing as t

import sqlalchemy as sa
from flask_utm_tracker import cookie as cookies

from .conftest import HostApp


def rows(env: HostApp, user_email: str | None = None) -> list[t.Any]:
    with env.app.app_context():
        query = sa.select(env.tracker.LeadSource).order_by(env.tracker.LeadSource.id)
        if user_email is not None:
            query = query.join(env.User).where(env.User.email == user_email)
        return list(env.db.session.scalars(query))


def login(client: t.Any, email: str = "ann@example.com") -> None:
    assert client.post(f"/login/{email}").status_code == 200


def pending(client: t.Any) -> list[dict[str, t.Any]]:
    value = client.get_cookie("utm_tracker")
    state = cookies.decode(value.value if value else None)
    return state.pending if state else []


VISITOR = "Vis1tor_ABCDEFGHIJKLMN"


def touch(n: int = 1, **extra: t.Any) -> dict[str, t.Any]:
    return {
        "id": f"touch-{n}",
        "ts": 1_750_000_000_000 + n,
        "url": f"https://www.example.com/pricing?utm_source=News&utm_medium=Email&utm_campaign=c{n}",
        "referrer": "https://mail.google.com/",
        **extra,
    }


def beacon(client: t.Any, body: t.Any, **kwargs: t.Any) -> t.Any:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    kwargs.setdefault("content_type", "text/plain")
    return client.post("/utm/beacon", data=data, **kwargs)


def touches(env: HostApp) -> list[t.Any]:
    with env.app.app_context():
        model = env.tracker.Touch
        return list(env.db.session.scalars(sa.select(model).order_by(model.id)))


def allow_admin(env: HostApp) -> None:
    """The dashboard for the user admin@example.com only."""
    from flask_login import current_user

    @env.tracker.dashboard_permission
    def is_admin() -> bool:
        return bool(current_user.is_authenticated and current_user.email == "admin@example.com")
