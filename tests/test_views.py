"""HTTP hygiene of the extension's cacheable routes: ``snippet.js`` and ``openapi.json``."""

from __future__ import annotations

import typing as t

import pytest
from flask import session

from .conftest import HostApp


@pytest.mark.parametrize("path", ["/utm/snippet.js", "/utm/openapi.json"])
def test_shared_documents_are_cacheable_and_the_same_for_everyone(
    env: HostApp, client: t.Any, path: str
) -> None:
    client.post("/login/ann@example.com")  # a session cookie, which Flask-Login looks at
    response = client.get(path)
    assert response.status_code == 200
    assert "Cookie" not in response.headers.get("Vary", "")  # one copy for every visitor
    assert "Date" not in response.headers  # the server adds the one Date
    assert response.headers["Cache-Control"] == "public, max-age=3600"
    etag = response.headers["ETag"]
    again = client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""


def test_a_page_that_reads_the_session_still_varies_on_cookie(env: HostApp, client: t.Any) -> None:
    """Only the shared documents drop it: Flask keeps Vary: Cookie where the session matters."""
    env.app.add_url_rule("/reads", "reads", lambda: session.get("greeting", "hello"))
    client.post("/login/ann@example.com")
    assert "Cookie" in client.get("/reads").headers.get("Vary", "")


def test_snippet_parts_are_served_by_name_only(env: HostApp, client: t.Any) -> None:
    assert client.get("/utm/snippet-nothing.js").status_code == 404
    assert client.get("/utm/snippet-..%2Fviews.js").status_code == 404
