"""Configuration keys, their defaults, and the frozen per-app settings object.

Every key starts with ``UTM_TRACKER_``. Defaults are applied with ``app.config.setdefault`` in
:meth:`~flask_utm_tracker.UTMTracker.init_app`; a misspelled ``UTM_TRACKER_*`` key is an error
that names the closest valid key.
"""

from __future__ import annotations

import difflib
import re
import typing as t
from dataclasses import dataclass

PREFIX = "UTM_TRACKER_"
#: The key of the extension's state in ``app.extensions``.
EXTENSION = "utm_tracker"

#: Where the blueprint (beacon, snippet.js, dashboard, openapi.json) is mounted.
URL_PREFIX = "/utm"
#: Extra query parameters to keep, in ``LeadSource.custom_tags`` (e.g. ``["ref", "partner"]``).
CUSTOM_TAGS: list[str] = []
#: The first-party cookie holding the visitor id and the pending touches.
COOKIE_NAME = "utm_tracker"
#: Domain attribute of that cookie (``".example.com"`` to share it across sub-domains).
COOKIE_DOMAIN: str | None = None
#: Max-Age of that cookie, in seconds (one year).
COOKIE_MAX_AGE = 365 * 24 * 3600
#: ``Secure`` attribute of that cookie; ``None`` means "when the request is https".
COOKIE_SECURE: bool | None = None
#: Origins (``"https://www.example.com"``) allowed to send beacons cross-origin, with credentials.
ALLOWED_ORIGINS: list[str] = []
#: Turn the query string and the ``Referer`` of the app's own pages into touches.
CAPTURE_QUERYSTRING = True
#: Honour Global Privacy Control (``Sec-GPC: 1``, ``navigator.globalPrivacyControl``).
RESPECT_GPC = True
#: Other host names of this site (with their sub-domains), never counted as referrers (nor is
#: the request's own host); the snippet's tag gets them as ``data-site-hosts``.
SITE_HOSTS: list[str] = []
#: Referrer domains that never make a touch (payment gateways, sign-in providers), sub-domains too.
EXCLUDED_REFERRERS: list[str] = [
    "checkout.stripe.com",
    "paypal.com",
    "accounts.google.com",
    "appleid.apple.com",
    "login.microsoftonline.com",
]
#: A referral makes a new touch only when the latest touch is older than this many seconds.
SESSION_TIMEOUT = 30 * 60
#: Unclaimed ``Touch`` rows older than this many days are removed by ``flask utm purge``.
RETENTION_DAYS = 90
#: Most ``Touch`` rows kept per visitor; beacons past that are acknowledged and dropped.
MAX_TOUCHES_PER_VISITOR = 200
#: Beacons allowed per client address (``limits`` notation, ``""`` for none); then 429.
RATE_LIMIT = "60/minute;600/hour"
#: Where rate-limit counters live: ``memory://`` (one process) or ``redis://host:6379/0`` (shared).
RATE_LIMIT_STORAGE = "memory://"
#: IPv6 addresses sharing this many leading bits are one client of the rate limit (64: a /64,
#: what one subscriber gets); IPv4 addresses, and IPv4-mapped IPv6 ones, are one client each.
RATE_LIMIT_IPV6_PREFIX = 64
#: With ``memory://``, the rate limit keeps the counters of this many clients at most, the least
#: recently seen dropped first (under 1 KB of a worker's memory each with two limits).
RATE_LIMIT_MAX_CLIENTS = 40_000
#: With Redis, seconds to wait to connect or for an answer; past that, and for the next 5
#: seconds, beacons are let through without a limit.
RATE_LIMIT_TIMEOUT = 0.05
#: Acknowledge beacons from crawlers (crawlerdetect) with 204 and store nothing.
DROP_BOTS = True
#: Query parameters kept in stored landing URLs and referrers besides the tracked ones (every
#: other one is removed, so a password-reset token or an OAuth ``code`` is never stored).
KEEP_QUERY_PARAMS: list[str] = []
#: Most ``LeadSource`` rows kept per user; touches past that are dropped (and logged).
MAX_LEAD_SOURCES_PER_USER = 500
#: A bind key of ``SQLALCHEMY_BINDS`` (a read replica) for the reports and the dashboard to
#: read from; ``None`` reads from the default engine.
REPORTS_BIND: str | None = None
#: The currency of conversions recorded without one (ISO 4217).
CURRENCY = "USD"
#: Attribution counts the touches of the last this many days before each conversion.
LOOKBACK_DAYS = 90
#: Half-life, in days, of a touch's weight under the ``time_decay`` model.
HALF_LIFE_DAYS = 7
#: Ad-platform destinations of conversions (``flask utm destinations push``), by name.
DESTINATIONS: dict[str, t.Any] = {}

DEFAULTS: dict[str, t.Any] = {
    PREFIX + name: value
    for name, value in list(globals().items())
    if name.isupper() and name not in {"PREFIX", "DEFAULTS", "EXTENSION"}
}


#: RFC 6265 / RFC 7230 token characters, for the cookie name.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A host name, optionally with the leading dot of a shared cookie domain.
_DOMAIN = re.compile(
    r"\.?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)


class ConfigError(KeyError):
    """An unknown or invalid ``UTM_TRACKER_*`` configuration key."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Settings:
    """The extension's configuration for one app, read once by ``init_app``."""

    url_prefix: str
    custom_tags: tuple[str, ...]
    cookie_name: str
    cookie_domain: str | None
    cookie_max_age: int
    cookie_secure: bool | None
    allowed_origins: frozenset[str]
    capture_querystring: bool
    respect_gpc: bool
    site_hosts: tuple[str, ...]
    excluded_referrers: tuple[str, ...]
    session_timeout: int
    retention_days: int
    max_touches_per_visitor: int
    rate_limit: str
    rate_limit_storage: str
    rate_limit_ipv6_prefix: int
    rate_limit_max_clients: int
    rate_limit_timeout: float
    drop_bots: bool
    keep_query_params: tuple[str, ...]
    reports_bind: str | None
    max_lead_sources_per_user: int


def _as_list(key: str, value: t.Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part for part in value.split(",")]
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
        isinstance(v, str) for v in value
    ):
        raise ConfigError(f"{key} must be a list of strings, not {value!r}.")
    return tuple(v.strip() for v in value if v.strip())


def _as_int(key: str, value: t.Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key} must be a whole number of at least 0, not {value!r}.")
    return value


def _in_range(key: str, value: t.Any, low: float, high: float, what: str) -> t.Any:
    """``value`` when it is a number from ``low`` to ``high`` (an ``int`` if ``low`` is one)."""
    kinds = (int,) if isinstance(low, int) else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        raise ConfigError(f"{key} must be {what} from {low} to {high}, not {value!r}.")
    return value


def load_settings(config: t.MutableMapping[str, t.Any]) -> Settings:
    """Apply the defaults to ``config``, reject unknown keys, and return the frozen settings.

    :param config: the app's ``app.config``.
    :raises ConfigError: for a misspelled key (naming the closest valid one) or a bad value.
    """
    for key in config:
        if key.startswith(PREFIX) and key not in DEFAULTS:
            close = difflib.get_close_matches(key, DEFAULTS, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]}?" if close else ""
            valid = ", ".join(sorted(DEFAULTS))
            raise ConfigError(
                f"Unknown configuration key {key}.{hint} The valid keys are: {valid}."
            )
    for key, value in DEFAULTS.items():
        config.setdefault(
            key,
            list(value)
            if isinstance(value, list)
            else dict(value)
            if isinstance(value, dict)
            else value,
        )

    def get(name: str) -> t.Any:
        return config[PREFIX + name]

    prefix = str(get("URL_PREFIX") or "").rstrip("/")
    if prefix and not prefix.startswith("/"):
        raise ConfigError(f"{PREFIX}URL_PREFIX must start with '/', not {prefix!r}.")
    secure = get("COOKIE_SECURE")
    name = str(get("COOKIE_NAME"))
    if not _TOKEN.fullmatch(name):
        raise ConfigError(
            f"{PREFIX}COOKIE_NAME must be a cookie name (RFC 6265 token characters), not {name!r}."
        )
    domain = get("COOKIE_DOMAIN") or None
    if domain is not None and not _DOMAIN.fullmatch(str(domain)):
        raise ConfigError(
            f"{PREFIX}COOKIE_DOMAIN must be a host name such as '.example.com', not {domain!r}."
        )
    reports_bind = get("REPORTS_BIND")
    if reports_bind is not None and not isinstance(reports_bind, str):
        raise ConfigError(f"{PREFIX}REPORTS_BIND must be a bind key of SQLALCHEMY_BINDS or None.")
    if reports_bind is not None and reports_bind not in (config.get("SQLALCHEMY_BINDS") or {}):
        raise ConfigError(
            f"{PREFIX}REPORTS_BIND is {reports_bind!r}, which SQLALCHEMY_BINDS does not define."
        )
    currency = get("CURRENCY")
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
        raise ConfigError(
            f"{PREFIX}CURRENCY must be an ISO 4217 code such as 'USD', not {currency!r}."
        )
    lookback = get("LOOKBACK_DAYS")
    if isinstance(lookback, bool) or not isinstance(lookback, int) or lookback < 1:
        raise ConfigError(
            f"{PREFIX}LOOKBACK_DAYS must be a whole number of days, at least 1, not {lookback!r}."
        )
    half_life = get("HALF_LIFE_DAYS")
    if (
        isinstance(half_life, bool)
        or not isinstance(half_life, (int, float))
        or not 0 < half_life < float("inf")
    ):
        raise ConfigError(
            f"{PREFIX}HALF_LIFE_DAYS must be a number of days above 0, not {half_life!r}."
        )
    if not isinstance(get("DESTINATIONS"), dict):
        raise ConfigError(f"{PREFIX}DESTINATIONS must be a dict of destinations by name.")
    return Settings(
        url_prefix=prefix,
        custom_tags=tuple(
            dict.fromkeys(
                tag.lower() for tag in _as_list(PREFIX + "CUSTOM_TAGS", get("CUSTOM_TAGS"))
            )
        ),
        cookie_name=name,
        cookie_domain=domain,
        cookie_max_age=_as_int(PREFIX + "COOKIE_MAX_AGE", get("COOKIE_MAX_AGE")),
        cookie_secure=None if secure is None else bool(secure),
        allowed_origins=frozenset(
            o.rstrip("/") for o in _as_list(PREFIX + "ALLOWED_ORIGINS", get("ALLOWED_ORIGINS"))
        ),
        capture_querystring=bool(get("CAPTURE_QUERYSTRING")),
        respect_gpc=bool(get("RESPECT_GPC")),
        site_hosts=tuple(h.lower() for h in _as_list(PREFIX + "SITE_HOSTS", get("SITE_HOSTS"))),
        excluded_referrers=tuple(
            h.lower() for h in _as_list(PREFIX + "EXCLUDED_REFERRERS", get("EXCLUDED_REFERRERS"))
        ),
        session_timeout=_as_int(PREFIX + "SESSION_TIMEOUT", get("SESSION_TIMEOUT")),
        retention_days=_as_int(PREFIX + "RETENTION_DAYS", get("RETENTION_DAYS")),
        max_touches_per_visitor=_as_int(
            PREFIX + "MAX_TOUCHES_PER_VISITOR", get("MAX_TOUCHES_PER_VISITOR")
        ),
        rate_limit=str(get("RATE_LIMIT") or ""),
        rate_limit_storage=str(get("RATE_LIMIT_STORAGE") or "memory://"),
        rate_limit_ipv6_prefix=_in_range(
            PREFIX + "RATE_LIMIT_IPV6_PREFIX",
            get("RATE_LIMIT_IPV6_PREFIX"),
            1,
            128,
            "a prefix length in bits (64 for a /64)",
        ),
        rate_limit_max_clients=_in_range(
            PREFIX + "RATE_LIMIT_MAX_CLIENTS",
            get("RATE_LIMIT_MAX_CLIENTS"),
            1,
            100_000_000,
            "a number of clients",
        ),
        rate_limit_timeout=float(
            _in_range(
                PREFIX + "RATE_LIMIT_TIMEOUT",
                get("RATE_LIMIT_TIMEOUT"),
                0.001,
                60.0,
                "a number of seconds",
            )
        ),
        drop_bots=bool(get("DROP_BOTS")),
        keep_query_params=tuple(
            dict.fromkeys(
                name.lower()
                for name in _as_list(PREFIX + "KEEP_QUERY_PARAMS", get("KEEP_QUERY_PARAMS"))
            )
        ),
        reports_bind=reports_bind,
        max_lead_sources_per_user=_as_int(
            PREFIX + "MAX_LEAD_SOURCES_PER_USER", get("MAX_LEAD_SOURCES_PER_USER")
        ),
    )
