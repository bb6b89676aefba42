"""Tracked parameters: reading, normalising, and stripping everything else from stored URLs."""

from __future__ import annotations

import typing as t
from urllib.parse import unquote_plus

from flask_utm_tracker.params import (
    MAX_VALUE_LENGTH,
    TRACKED,
    from_query,
    from_url,
    normalize,
    strip_query,
)
from hypothesis import given, settings
from hypothesis import strategies as st

text = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
keys = st.one_of(
    st.sampled_from(sorted(TRACKED)), st.sampled_from(["UTM_Source", "GCLID", "ScCid"]), text
)


_valid_text = st.text(st.characters(codec="utf-8"), max_size=300)


#: Pieces of hand-made query strings; "%" and "+" are rarer, so that most examples take the
#: parser for queries with nothing to unquote.
_plain_parts = ["utm_source", "UTM_Medium", "gclid", "ref", "a", "Ü", "=", "==", "&", "&&", ";"]
_raw_parts = st.sampled_from(_plain_parts * 4 + ["+", " ", "%", "%2", "%41"])


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


def test_stored_urls_keep_only_tracked_and_kept_parameters() -> None:
    keep = ("plan",)
    assert strip_query("https://a.example/reset?token=s3cret&utm_source=x#frag", keep) == (
        "https://a.example/reset?utm_source=x"
    )
    assert strip_query("https://a.example/cb?code=c&state=s&GCLID=G1&plan=pro", keep) == (
        "https://a.example/cb?GCLID=G1&plan=pro"
    )
    assert strip_query("https://a.example/p?utm_source=%C3%BC+x", keep) == (
        "https://a.example/p?utm_source=%C3%BC+x"  # kept as written
    )
    assert strip_query("https://a.example/", keep) == "https://a.example/"
    assert strip_query("http://[::1", keep) == ""  # unparseable: nothing stored


@given(st.text(max_size=200), st.sampled_from([(), ("ref",)]))
def test_strip_query_never_raises_and_keeps_no_other_name(url: str, keep: tuple[str, ...]) -> None:
    stripped = strip_query(url, keep)
    query = stripped.partition("?")[2]
    for part in query.split("&") if query else ():
        name = unquote_plus(part.split("=", 1)[0]).strip().lower()
        assert name in TRACKED or name in keep
