"""marshmallow schemas: the beacon's input and the ``LeadSource`` output."""

from __future__ import annotations

import typing as t

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from .cookie import ID_RE
from .params import MAX_PARAMS

#: Most touches in one beacon.
MAX_TOUCHES = 50
#: Largest beacon body, in bytes.
MAX_BODY = 16 * 1024

_id = validate.Regexp(ID_RE.pattern + r"\Z", error="Must be 1 to 64 characters of [A-Za-z0-9_-].")
#: The id pattern as JSON Schema writes it (ECMA-262 regex).
_ID_PATTERN = "^[A-Za-z0-9_-]{1,64}$"


def _max_params(value: dict[str, str]) -> None:
    if len(value) > MAX_PARAMS:
        raise ValidationError(f"At most {MAX_PARAMS} parameters per touch.")


class TouchSchema(Schema):
    """One touch as the snippet sends it; ``url`` or ``params`` is required."""

    class Meta:
        unknown = EXCLUDE

    id = fields.String(
        required=True,
        validate=_id,
        metadata={"description": "The touch id.", "pattern": _ID_PATTERN},
    )
    ts = fields.Integer(
        strict=True,
        load_default=None,
        metadata={"description": "When the touch happened, client clock, epoch milliseconds."},
    )
    # Over-long values are truncated when stored, never rejected: the body limit bounds them.
    url = fields.String(load_default=None, metadata={"description": "Landing URL."})
    referrer = fields.String(
        load_default=None, metadata={"description": "document.referrer, when external."}
    )
    params = fields.Dict(
        keys=fields.String(validate=validate.Length(max=100)),
        values=fields.String(),
        load_default=None,
        validate=_max_params,
        metadata={
            "description": "Tracked query parameters: utm_*, click IDs, custom tags.",
            "maxProperties": MAX_PARAMS,
        },
    )

    @validates_schema
    def _url_or_params(self, data: dict[str, t.Any], **kwargs: t.Any) -> None:
        if not data.get("url") and not data.get("params"):
            raise ValidationError("Each touch needs a url or params.", "url")


class BeaconSchema(Schema):
    """``POST /utm/beacon``: a visitor id and its touches."""

    class Meta:
        unknown = EXCLUDE

    v = fields.String(
        required=True,
        validate=_id,
        metadata={"description": "The visitor id.", "pattern": _ID_PATTERN},
    )
    touches = fields.List(
        fields.Nested(TouchSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_TOUCHES),
    )


class ErrorSchema(Schema):
    """Every 4xx and 5xx answer of the JSON routes."""

    error = fields.String(required=True, metadata={"description": "What is wrong, in a sentence."})
    details = fields.Dict(
        metadata={"description": "Per-field messages, when the body was invalid."}
    )


class LeadSourceSchema(Schema):
    """A ``LeadSource`` row as exported (``flask utm export``, JSON routes)."""

    id = fields.Integer()
    user_id = fields.Raw()
    touch_id = fields.String()
    visitor_id = fields.String(allow_none=True)
    channel = fields.String()
    source = fields.String()
    medium = fields.String()
    campaign = fields.String()
    term = fields.String()
    content = fields.String()
    utm_id = fields.String(allow_none=True)
    source_platform = fields.String(allow_none=True)
    creative_format = fields.String(allow_none=True)
    marketing_tactic = fields.String(allow_none=True)
    gclid = fields.String(allow_none=True)
    aclk = fields.String(allow_none=True)
    msclkid = fields.String(allow_none=True)
    twclid = fields.String(allow_none=True)
    fbclid = fields.String(allow_none=True)
    click_ids = fields.Dict()
    custom_tags = fields.Dict()
    referrer = fields.String(allow_none=True)
    landing_url = fields.String(allow_none=True)
    timestamp = fields.DateTime()
    created_at = fields.DateTime()


def accepted_type(environ: t.Mapping[str, t.Any]) -> bool:
    """Whether the body's media type is one a beacon may have (none, ``text/plain`` or
    ``application/json``): the type without its parameters, as ``Request.mimetype`` gives it,
    without parsing them."""
    mimetype = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
    return mimetype in ("", "text/plain", "application/json")
