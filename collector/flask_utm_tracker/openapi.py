"""``GET /utm/openapi.json``: the OpenAPI document of the JSON routes, made by apispec from the
marshmallow schemas.
"""

from __future__ import annotations

import typing as t

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, jsonify

from . import __name__ as package
from .schemas import MAX_BODY, MAX_TOUCHES, BeaconSchema, ErrorSchema

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
    return spec.to_dict()


def register(bp: Blueprint, tracker: UTMTracker) -> None:
    """Add ``GET /openapi.json`` to the extension's blueprint."""

    @bp.route("/openapi.json")
    def openapi() -> Response:
        return jsonify(make_spec(tracker.settings().url_prefix))
