"""marshmallow schemas: the one check of a touch (beacon, cookie, session stash, link token), the
beacon's body and the JSON error answers."""

from __future__ import annotations

import logging
import re
import typing as t

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from .params import MAX_PARAMS

logger = logging.getLogger("flask_utm_tracker")

#: Visitor and touch ids: 1 to 64 characters of ``[A-Za-z0-9_-]``.
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

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


class Params(fields.Dict):
    """Tracked parameters: names of at most 100 characters to string values.

    The same field as ``fields.Dict(keys=String(validate=Length(max=100)), values=String())``,
    and documented as one, with a fast path for what the snippet sends (every name and value a
    string): that field deserializes each name and value through a field of its own, which was
    a third of a beacon's validation. Anything else is checked by such a ``fields.Dict``, with
    its messages.
    """

    def __init__(self, **kwargs: t.Any) -> None:
        super().__init__(keys=_param_name(), values=fields.String(), **kwargs)
        self.checked = fields.Dict(keys=_param_name(), values=fields.String())

    def _deserialize(self, value: t.Any, attr: t.Any, data: t.Any, **kwargs: t.Any) -> t.Any:
        if type(value) is dict and all(
            type(k) is str and len(k) <= 100 and type(v) is str for k, v in value.items()
        ):
            return dict(value)
        return self.checked.deserialize(value, attr, data, **kwargs)


def _param_name() -> fields.String:
    return fields.String(validate=validate.Length(max=100))


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
    params = Params(
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
        metadata={
            "description": (
                "The snippet's visitor id. Informational: the touches are stored under the"
                " server's own visitor id of the browser (its signed cookie), never this one."
            ),
            "pattern": _ID_PATTERN,
        },
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


class LatestSchema(Schema):
    """The latest touch as the visitor cookie keeps it (``l``): its id, time and parameters."""

    class Meta:
        unknown = EXCLUDE

    id = fields.String(required=True, validate=_id)
    ts = fields.Integer(strict=True, required=True)
    params = Params(load_default=dict, validate=_max_params)


_touch = TouchSchema()
_latest = LatestSchema()


def load_touch(raw: t.Any) -> dict[str, t.Any] | None:
    """``raw`` validated by :class:`TouchSchema`, or ``None`` (logged) when it is not a touch.

    The one check of a touch that did not come in a beacon (the cookie, the session stash).
    """
    if not isinstance(raw, dict):
        return None
    try:
        return t.cast(dict[str, t.Any], _touch.load(raw))
    except ValidationError as err:
        logger.warning("Skipping an invalid touch: %s", err.messages)
    except RecursionError:
        logger.warning("Skipping an invalid touch: nested too deeply.")
    return None


def load_latest(raw: t.Any) -> dict[str, t.Any] | None:
    """``raw`` validated by :class:`LatestSchema`, or ``None``."""
    if not isinstance(raw, dict):
        return None
    try:
        return t.cast(dict[str, t.Any], _latest.load(raw))
    except (ValidationError, RecursionError):
        return None


def accepted_type(environ: t.Mapping[str, t.Any]) -> bool:
    """Whether the body's media type is one a beacon may have (none, ``text/plain`` or
    ``application/json``): the type without its parameters, as ``Request.mimetype`` gives it,
    without parsing them."""
    mimetype = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
    return mimetype in ("", "text/plain", "application/json")
