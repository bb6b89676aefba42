"""``GET /utm/openapi.json``: the OpenAPI document of the JSON routes, made by apispec from the
marshmallow schemas.
"""

from __future__ import annotations

import json
import sys
import typing as t

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response

from . import __name__ as package
from .dashboard import ConversionsQuerySchema, ConversionsSchema, FiltersSchema, ReportSchema
from .schemas import MAX_BODY, MAX_TOUCHES, BeaconSchema, ErrorSchema
from .views import cacheable

if t.TYPE_CHECKING:
    from .extension import UTMTracker

VERSION = "0.1.0"


def _error(description: str) -> dict[str, t.Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": "Error"}},
    }


def make_spec(url_prefix: str) -> dict[str, t.Any]:
    """The OpenAPI 3.1 document, with paths under ``url_prefix``."""
    spec = APISpec(
        title="flask-utm-tracker",
        version=VERSION,
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin()],
        info={"description": f"The JSON routes of {package}."},
    )
    spec.components.schema("Beacon", schema=BeaconSchema)
    spec.components.schema("Error", schema=ErrorSchema)
    body = {"schema": "Beacon"}
    spec.path(
        path=f"{url_prefix}/beacon",
        operations={
            "post": {
                "summary": "Store a visitor's touches.",
                "description": (
                    f"At most {MAX_TOUCHES} touches and {MAX_BODY} bytes. Sent as text/plain by"
                    " the snippet (no CORS preflight). Authenticated requests also write"
                    " LeadSource rows for the user at once."
                ),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": body, "text/plain": body},
                },
                "responses": {
                    "204": {"description": "Stored (or ignored on purpose: GPC, bots)."},
                    "400": _error("The body is not a valid beacon."),
                    "403": _error("The Origin is not allowed."),
                    "413": _error(f"The body is larger than {MAX_BODY} bytes."),
                    "415": _error("The content type is neither text/plain nor JSON."),
                    "429": _error("Too many beacons; retry later."),
                    "503": _error("The database is unavailable; retry later."),
                },
            }
        },
    )
    spec.components.schema("Report", schema=ReportSchema)
    spec.path(
        path=f"{url_prefix}/report.json",
        operations={
            "get": {
                "summary": "The dashboard's numbers.",
                "description": (
                    "Leads (users with at least one touch, dated by sign-up) from start to end,"
                    " by channel over time, top sources and campaigns, and every channel under"
                    " each attribution model. Allowed by the host's dashboard_permission check."
                ),
                "parameters": [{"in": "query", "schema": FiltersSchema}],
                "responses": {
                    "200": {
                        "description": "The report.",
                        "content": {"application/json": {"schema": "Report"}},
                    },
                    "400": _error("A filter is invalid."),
                    "403": _error("The dashboard permission check denied the request."),
                },
            }
        },
    )
    spec.components.schema("Conversions", schema=ConversionsSchema)
    spec.path(
        path=f"{url_prefix}/conversions.json",
        operations={
            "get": {
                "summary": "Conversions, revenue, spend, ROAS and CPA by one attribution model.",
                "description": (
                    "What tracker.attribute() returns for the query, with the model used (the"
                    " data-driven model falls back to linear without enough non-converting"
                    " paths). Allowed by the host's dashboard_permission check."
                ),
                "parameters": [{"in": "query", "schema": ConversionsQuerySchema}],
                "responses": {
                    "200": {
                        "description": "The rows, sorted by conversions.",
                        "content": {"application/json": {"schema": "Conversions"}},
                    },
                    "400": _error("A query argument is invalid."),
                    "403": _error("The dashboard permission check denied the request."),
                },
            }
        },
    )
    document = spec.to_dict()
    # TouchSchema's @validates_schema (a url or params is required) has no apispec equivalent.
    document["components"]["schemas"]["Touch"]["anyOf"] = [
        {"required": ["url"], "properties": {"url": {"type": "string", "minLength": 1}}},
        {"required": ["params"], "properties": {"params": {"type": "object", "minProperties": 1}}},
    ]
    return document


#: ``Cache-Control`` max-age of ``openapi.json`` (revalidated with its ETag after that).
OPENAPI_MAX_AGE = 3600


def dumps(url_prefix: str = "/utm") -> str:
    """The document as committed in ``docs/openapi.json`` (2-space indent, final newline)."""
    return json.dumps(make_spec(url_prefix), indent=2, ensure_ascii=False) + "\n"


def register(bp: Blueprint, tracker: UTMTracker) -> None:
    """Add ``GET /openapi.json`` to the extension's blueprint."""

    @bp.route("/openapi.json")
    def openapi() -> Response:
        body = dumps(tracker.settings().url_prefix).encode("utf-8")
        return cacheable(body, "application/json", OPENAPI_MAX_AGE)


if __name__ == "__main__":  # python -m flask_utm_tracker.openapi > docs/openapi.json
    sys.stdout.write(dumps(*sys.argv[1:2]))
