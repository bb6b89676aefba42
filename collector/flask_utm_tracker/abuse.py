"""Abuse controls of the beacon endpoint: a per-client rate limit and bot filtering.

The rate limit uses `limits`, the engine of Flask-Limiter, directly: Flask-Limiter's ``init_app``
would hook every request of the host app and read the host's own ``RATELIMIT_*`` keys, while
only the beacon needs a limit. Storage is ``memory://`` by default and ``redis://`` in production
(shared by every worker). Clients are keyed by an HMAC of their address, never the raw IP.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import re
import time
import typing as t

from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

logger = logging.getLogger("flask_utm_tracker")


class RateLimiter:
    """Hits against ``limit`` (e.g. ``"60/minute;1000/hour"``) in the storage at ``uri``."""

    def __init__(self, limit: str, uri: str, secret: bytes) -> None:
        self.items: list[RateLimitItem] = parse_many(limit) if limit else []
        self.limiter: MovingWindowRateLimiter | None = None
        if self.items:
            options = {"key_prefix": "utm_tracker"} if uri.startswith(("redis", "rediss")) else {}
            self.limiter = MovingWindowRateLimiter(storage_from_string(uri, **options))
        self.secret = secret

    def key(self, address: str) -> str:
        """The storage key of a client: an HMAC of its address, not the address."""
        digest = hmac.new(self.secret, address.encode("utf-8", "replace"), hashlib.sha256)
        return digest.hexdigest()[:24]

    def hit(self, address: str) -> int | None:
        """Count a request from ``address``: ``None`` when allowed, else seconds to wait.

        A storage outage lets the request through (logged): a rate limit must not lose touches.
        """
        if self.limiter is None:
            return None
        key = self.key(address)
        try:
            for item in self.items:
                if not self.limiter.hit(item, "beacon", key):
                    reset = self.limiter.get_window_stats(item, "beacon", key).reset_time
                    return max(1, int(reset - time.time()) + 1)
        except Exception:
            logger.exception("The rate-limit storage failed; the beacon is let through.")
        return None


#: Agents crawlerdetect lists that still send real touches: headless browsers (sites testing
#: themselves) and HTTP client libraries (native apps and server-side code posting beacons).
NOT_BOTS = re.compile(
    r"HeadlessChrome|python-requests|Python-urllib|python-httpx|aiohttp|okhttp|Go-http-client|node-fetch|axios"
    r"|undici|curl/|Wget/|Java/|Dalvik/|CFNetwork",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=1)
def _crawler_detect() -> t.Any:
    from crawlerdetect import CrawlerDetect

    return CrawlerDetect()


def is_bot(user_agent: str | None) -> bool:
    """Whether ``user_agent`` is a crawler by crawlerdetect's list (less :data:`NOT_BOTS`)."""
    if not user_agent or NOT_BOTS.search(user_agent):
        return False
    try:
        return bool(_crawler_detect().isCrawler(user_agent[:1000]))
    except Exception:  # pragma: no cover - a library bug must not drop real touches
        logger.exception("crawlerdetect failed on a user agent.")
        return False
