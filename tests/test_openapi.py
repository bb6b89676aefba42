"""The OpenAPI document: served at /utm/openapi.json, and committed in docs/openapi.json."""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest
from flask_utm_tracker import openapi

from .conftest import HostApp, make_app
from .helpers import allow_admin

COMMITTED = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
REGENERATE = "python -m flask_utm_tracker.openapi > docs/openapi.json"


def test_committed_copy_is_in_sync() -> None:
    assert COMMITTED.is_file(), f"docs/openapi.json is missing; run `{REGENERATE}`."
    assert COMMITTED.read_text("utf-8") == openapi.dumps(), (
        f"docs/openapi.json is out of date with make_spec(); run `{REGENERATE}` and commit it."
    )


def test_served_document(client: t.Any) -> None:
    body = client.get("/utm/openapi.json").get_json()
    assert body == json.loads(COMMITTED.read_text("utf-8"))
    assert body["openapi"] == "3.1.0"
    assert set(body["paths"]) == {"/utm/beacon", "/utm/report.json", "/utm/conversions.json"}


def test_paths_follow_the_url_prefix(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_URL_PREFIX="/track")
    body = env.app.test_client().get("/track/openapi.json").get_json()
    assert set(body["paths"]) == {"/track/beacon", "/track/report.json", "/track/conversions.json"}


def test_report_json_matches_its_schema(env: HostApp) -> None:
    allow_admin(env)
    client = env.app.test_client()
    client.post("/login/admin@example.com")
    spec = openapi.make_spec("/utm")
    operation = spec["paths"]["/utm/report.json"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"start", "end", "model", "interval"}
    schemas = spec["components"]["schemas"]
    body = client.get("/utm/report.json").get_json()
    assert set(body) == set(schemas["Report"]["properties"])
    assert set(body["totals"]) == set(schemas["Totals"]["properties"])
    error = client.get("/utm/report.json?model=x").get_json()
    assert set(error) <= set(schemas["Error"]["properties"])
    denied = env.app.test_client().get("/utm/report.json")
    assert denied.status_code == 403 and set(denied.get_json()) == {"error"}


@pytest.mark.parametrize("path", ["/utm/report.json", "/utm/conversions.json"])
def test_json_reports_conform_to_the_document(env: HostApp, path: str) -> None:
    """schemathesis: every generated query gets a documented status and a conforming body.

    Schema-valid queries may still be rejected (a start after the end, more than ten years):
    JSON Schema cannot say that, so the positive-data check is left out.
    """
    schemathesis = pytest.importorskip("schemathesis")
    hypothesis = pytest.importorskip("hypothesis")
    env.tracker.dashboard_permission(lambda: True)
    schema = schemathesis.openapi.from_wsgi("/utm/openapi.json", env.app)
    operation = schema[path]["GET"]

    @hypothesis.given(case=operation.as_strategy())
    @hypothesis.settings(
        max_examples=60, deadline=None, suppress_health_check=list(hypothesis.HealthCheck)
    )
    def check(case: t.Any) -> None:
        case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])

    check()
