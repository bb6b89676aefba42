"""Fuzzing: schemathesis against /utm/openapi.json in-process, and hypothesis properties of the
parsers (query strings, the cookie decoder, the beacon schema): any input gives a valid touch or a
clean rejection, never an exception.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import secrets
import tempfile
import typing as t

import schemathesis
import sqlalchemy as sa
from flask_utm_tracker import cookie as cookies
from flask_utm_tracker.params import MAX_VALUE_LENGTH, TRACKED, from_query, from_url, normalize
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
keys = st.one_of(
    st.sampled_from(sorted(TRACKED)), st.sampled_from(["UTM_Source", "GCLID", "ScCid"]), text
)


@given(st.lists(st.tuples(keys, st.one_of(text, st.integers(), st.none())), max_size=40))
def test_normalize_keeps_only_clean_tracked_values(pairs: list[tuple[t.Any, t.Any]]) -> None:
    result = normalize(pairs)
    for key, value in result.items():
        assert key in TRACKED and key == key.lower()
        assert value and value == value.strip() and len(value) <= MAX_VALUE_LENGTH
        assert "\x00" not in value
        value.encode("utf-8")  # no lone surrogates
        if key.startswith("utm_"):
            assert value == value.lower()


_valid_text = st.text(st.characters(codec="utf-8"), max_size=300)


@given(
    st.lists(
        st.tuples(st.one_of(st.sampled_from(sorted(TRACKED)), _valid_text), _valid_text),
        max_size=12,
    ),
    st.sampled_from([(), ("ref",)]),
)
def test_the_raw_query_reads_as_request_args_do(
    pairs: list[tuple[str, str]], custom: tuple[str, ...]
) -> None:
    """The request hook reads the raw QUERY_STRING (``from_query``); it keeps what ``normalize``
    keeps from werkzeug's ``request.args`` for the same URL."""
    from urllib.parse import urlencode

    from flask import Flask, request

    query = urlencode(pairs)
    with Flask(__name__).test_request_context("/?" + query):
        expected = normalize(request.args.items(multi=True), custom)
    assert from_query(query, custom) == expected


#: Pieces of hand-made query strings; "%" and "+" are rarer, so that most examples take the
#: parser for queries with nothing to unquote.
_plain_parts = ["utm_source", "UTM_Medium", "gclid", "ref", "a", "Ü", "=", "==", "&", "&&", ";"]
_raw_parts = st.sampled_from(_plain_parts * 4 + ["+", " ", "%", "%2", "%41"])


@settings(max_examples=300)
@given(
    st.lists(st.one_of(_raw_parts, _raw_parts, st.text(max_size=3)), max_size=20).map("".join),
    st.sampled_from([(), ("ref",)]),
)
def test_a_raw_query_as_sent_reads_as_parse_qsl_reads_it(
    query: str, custom: tuple[str, ...]
) -> None:
    """Queries no browser would send as they are (bare "=", "+" and "%", empty parts, text
    beyond ASCII): both of from_query's parsers read them as parse_qsl does (and the snippet's
    URLSearchParams), on the text werkzeug decodes from the environ."""
    from urllib.parse import parse_qsl

    from flask import Flask, request

    with Flask(__name__).test_request_context("/", query_string=query):
        raw = request.environ["QUERY_STRING"]
    text = raw.encode("latin-1").decode("utf-8", "replace")
    assert from_query(raw, custom) == normalize(parse_qsl(text), custom)


def test_invalid_utf8_in_the_query_reads_as_the_snippet_reads_it() -> None:
    """Bytes that are not UTF-8 become U+FFFD, as the snippet's URLSearchParams makes them (so
    both halves see the same touch); werkzeug's request.args would keep them percent-encoded."""
    assert from_query("utm_source=%ED%A0%80x") == {"utm_source": "\ufffd\ufffd\ufffdx"}
    raw = "utm_source=caf\u00c3\u00a9"  # "café" sent unencoded: UTF-8 bytes as WSGI latin-1
    assert from_query(raw) == {"utm_source": "caf\u00e9"}


@given(st.text(max_size=2000))
def test_from_query_never_raises(query: str) -> None:
    assert isinstance(from_query(query), dict)
    assert isinstance(from_query(query.encode("utf-8", "surrogatepass").decode("latin-1")), dict)


@given(st.text(max_size=2000))
def test_from_url_never_raises(url: str) -> None:
    assert isinstance(from_url(url), dict)
    assert isinstance(from_url("https://example.com/?" + url), dict)


@given(
    st.one_of(
        st.text(max_size=5000),
        st.binary(max_size=3000).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    )
)
def test_cookie_decoder_never_raises(value: str) -> None:
    state = cookies.decode(value)
    assert state is None or cookies.valid_id(state.visitor_id)


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
