"""Fuzzing: schemathesis against /utm/openapi.json in-process, and hypothesis properties of the
parsers (query strings, the cookie decoder, the beacon schema): any input gives a valid touch or a
clean rejection, never an exception.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import tempfile
import typing as t

import schemathesis
import sqlalchemy as sa
from flask_utm_tracker.params import TRACKED
from flask_utm_tracker.schemas import BeaconSchema
from flask_utm_tracker.touches import Context, fields
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
)

from .conftest import POSTGRES_VAR, make_app


def _app() -> t.Any:
    """The app under fuzzing: PostgreSQL (a schema of its own) when configured, else SQLite."""
    base = os.environ.get(POSTGRES_VAR)
    if not base:
        directory = tempfile.mkdtemp(prefix="utm-fuzz-")
        return make_app(f"sqlite:///{directory}/fuzz.db", UTM_TRACKER_RATE_LIMIT="").app
    name = f"fuzz_{secrets.token_hex(6)}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {name}"))
    env = make_app(
        sa.make_url(base)
        .update_query_dict({"options": f"-csearch_path={name}"})
        .render_as_string(hide_password=False),
        UTM_TRACKER_RATE_LIMIT="",
    )

    def drop() -> None:
        with env.app.app_context():
            env.db.engine.dispose()
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {name} CASCADE"))
        engine.dispose()

    atexit.register(drop)
    return env.app


schema = schemathesis.openapi.from_wsgi("/utm/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_fails_and_conforms(case: t.Any) -> None:
    # Every default check (no 5xx, documented status codes, content types and response bodies)
    # except the two that judge acceptance: the 16 KiB body limit (413) is real and JSON Schema
    # cannot state a limit on a whole document's size, so schema-valid bodies may get 413 and
    # schemathesis does not count 413 as a rejection. test_beacon.py covers both directions.
    case.call_and_validate(excluded_checks=[positive_data_acceptance, negative_data_rejection])


text = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
keys = st.one_of(st.sampled_from(sorted(TRACKED)), st.sampled_from(["UTM_Source", "GCLID"]), text)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=30,
)
touch_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z"), text),
        "ts": st.one_of(st.integers(), json_values),
        "url": st.one_of(text.map(lambda s: "https://example.com/?utm_source=" + s), json_values),
        "referrer": st.one_of(text.map(lambda s: "https://" + s), json_values),
        "params": st.one_of(st.dictionaries(keys, text, max_size=8), json_values),
    },
)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "v": st.one_of(st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z"), json_values),
            "touches": st.one_of(st.lists(touch_like, max_size=5), json_values),
        }
    )
)
def test_beacon_schema_gives_a_touch_or_a_clean_rejection(body: dict[str, t.Any]) -> None:
    json.dumps(body)  # it is a JSON document
    try:
        beacon = BeaconSchema().load(body)
    except ValidationError as err:
        assert err.messages
        return
    context = Context(site_hosts=("app.example.com",))
    for raw in beacon["touches"]:
        row = fields(raw, context, beacon["v"])
        if row is not None:
            assert row["source"] and row["medium"] and row["channel"]
            assert len(row["source"]) <= 255
