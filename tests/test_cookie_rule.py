"""The visitor cookie's size and truncation rule, shared with the snippet: each case of
``tests/fixtures/cookie-rule.json`` encoded by the collector gives the value the snippet's node
tests expect (``tests/snippet/cookie.test.js`` reads the same file)."""

from __future__ import annotations

import base64
import copy
import json
import typing as t
from pathlib import Path

import pytest
from flask_utm_tracker import cookie

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "cookie-rule.json").read_text("utf-8"))


def _decoded(value: str) -> t.Any:
    return json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))


def test_the_limits_are_the_collectors() -> None:
    assert cookie.MAX_LENGTH == FIXTURE["max_length"]
    assert cookie.URL_LIMIT == FIXTURE["url_limit"]


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda case: case["name"][:60])
def test_case(case: dict[str, t.Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cookie, "MAX_LENGTH", case["limit"])
    state = case["state"]
    value = cookie.encode(
        cookie.CookieState(state["v"], copy.deepcopy(state["t"]), copy.deepcopy(state.get("l")))
    )
    assert _decoded(value) == case["expected"]
    assert len(value) == case["length"]
    assert "=" not in value and "+" not in value and "/" not in value
    # A value the rule wrote reads back the same.
    read = cookie.decode(value)
    assert read is not None
    assert read.pending == case["expected"].get("t", [])
