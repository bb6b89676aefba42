"""Configuration: defaults, unknown keys, bad values."""

from __future__ import annotations

import typing as t

import pytest
from flask_utm_tracker import ConfigError, UTMTracker

from .conftest import HostApp, make_app


def test_unknown_config_key_names_the_closest(db_url: str) -> None:
    with pytest.raises(ConfigError, match="Did you mean UTM_TRACKER_COOKIE_DOMAIN"):
        make_app(db_url, UTM_TRACKER_COOKIE_DOMIAN=".example.com")


def test_second_init_app_is_an_error(env: HostApp) -> None:
    with pytest.raises(RuntimeError, match="Import and use that instance instead"):
        env.tracker.init_app(env.app)


def test_defaults_are_set_with_setdefault(env: HostApp) -> None:
    config = env.app.config
    assert config["UTM_TRACKER_URL_PREFIX"] == "/utm"
    assert config["UTM_TRACKER_CUSTOM_TAGS"] == []
    assert config["UTM_TRACKER_CAPTURE_QUERYSTRING"] is True
    assert config["UTM_TRACKER_RESPECT_GPC"] is True
    assert isinstance(env.tracker, UTMTracker)


@pytest.mark.parametrize(
    ("key", "value"),
    [("UTM_TRACKER_COOKIE_NAME", "bad name;"), ("UTM_TRACKER_COOKIE_DOMAIN", "x.com; HttpOnly")],
)
def test_cookie_name_and_domain_are_checked(db_url: str, key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        make_app(db_url, **{key: value})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("UTM_TRACKER_CURRENCY", "usd"),
        ("UTM_TRACKER_LOOKBACK_DAYS", 0),
        ("UTM_TRACKER_LOOKBACK_DAYS", True),
        ("UTM_TRACKER_HALF_LIFE_DAYS", float("inf")),
        ("UTM_TRACKER_HALF_LIFE_DAYS", 0),
        ("UTM_TRACKER_DESTINATIONS", []),
        ("UTM_TRACKER_KEEP_QUERY_PARAMS", 5),
        ("UTM_TRACKER_MAX_LEAD_SOURCES_PER_USER", -1),
    ],
)
def test_a_bad_value_names_its_key(db_url: str, key: str, value: t.Any) -> None:
    with pytest.raises(ConfigError, match=key):
        make_app(db_url, **{key: value})


def test_conversion_keys_are_real_keys_with_defaults(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_CURRENCY="EUR")
    config = env.app.config
    assert config["UTM_TRACKER_CURRENCY"] == "EUR"
    assert config["UTM_TRACKER_LOOKBACK_DAYS"] == 90
    assert config["UTM_TRACKER_HALF_LIFE_DAYS"] == 7
    assert config["UTM_TRACKER_DESTINATIONS"] == {}
