"""Rate limits (clients by IPv4 address or IPv6 /64, bounded memory, Redis, a hung storage) and
bots."""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
import typing as t
from pathlib import Path

import pytest
from flask_utm_tracker.abuse import RateLimiter
from flask_utm_tracker.config import ConfigError

from .conftest import REDIS_VAR, HostApp, make_app, service_url
from .helpers import VISITOR, beacon, touch, touches
from .servers import gunicorn, post_beacon


def limiter(limit: str = "3/minute", uri: str = "memory://", **options: t.Any) -> RateLimiter:
    """A limiter with a fresh secret: fresh counters, even in a shared Redis."""
    return RateLimiter(limit, uri, secrets.token_bytes(16), **options)


def hits(limiter: RateLimiter, addresses: t.Iterable[str]) -> list[bool]:
    """Which hits were allowed."""
    return [limiter.hit(address) is None for address in addresses]


def test_rate_limit_answers_429_with_retry_after(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_RATE_LIMIT="3/minute")
    client = env.app.test_client()
    statuses = [beacon(client, {"v": VISITOR, "touches": [touch(n)]}).status_code for n in range(5)]
    assert statuses == [204, 204, 204, 429, 429]
    limited = beacon(client, {"v": VISITOR, "touches": [touch(9)]})
    assert limited.json["error"].startswith("Too many beacons")
    assert 1 <= int(limited.headers["Retry-After"]) <= 61
    assert len(touches(env)) == 3
    other = env.app.test_client()
    response = beacon(
        other, {"v": VISITOR, "touches": [touch(8)]}, environ_base={"REMOTE_ADDR": "10.9.8.7"}
    )
    assert response.status_code == 204  # another client has its own budget


def test_addresses_of_one_ipv6_64_are_one_client(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_RATE_LIMIT="3/minute")
    client = env.app.test_client()

    def from_address(address: str, n: int) -> int:
        body = {"v": VISITOR, "touches": [touch(n)]}
        status: int = beacon(client, body, environ_base={"REMOTE_ADDR": address}).status_code
        return status

    # One subscriber rotating through its /64, a new address for every beacon.
    rotating = [from_address(f"2001:db8:1:2:{n:x}:{n:x}:{n:x}:{n:x}", n) for n in range(1, 7)]
    assert rotating == [204, 204, 204, 429, 429, 429]
    assert len(touches(env)) == 3
    # Other /64s, even next door, are other clients.
    assert from_address("2001:db8:1:3::1", 10) == 204
    assert from_address("2001:db8:ffff:2::1", 11) == 204
    assert len(touches(env)) == 5


def test_ipv4_addresses_are_clients_each_and_ipv4_mapped_ipv6_is_the_same_client() -> None:
    limits = limiter("2/minute")
    assert hits(limits, ["192.0.2.1", "::ffff:192.0.2.1", "192.0.2.1"]) == [True, True, False]
    assert hits(limits, ["192.0.2.2", "192.0.2.2", "192.0.2.2"]) == [True, True, False]
    assert hits(limits, ["::ffff:c000:203"]) == [True]  # 192.0.2.3, in hex


def test_the_ipv6_prefix_is_configurable() -> None:
    by_48 = limiter("2/minute", ipv6_prefix=48)
    assert hits(by_48, ["2001:db8:1:2::1", "2001:db8:1:3::1", "2001:db8:1:4::1"]) == [
        True,
        True,
        False,
    ]
    assert hits(by_48, ["2001:db8:2::1"]) == [True]
    by_address = limiter("1/minute", ipv6_prefix=128)
    assert hits(by_address, ["2001:db8::1", "2001:db8::2", "2001:db8::1"]) == [True, True, False]


def test_the_rate_limit_settings_reach_the_beacon(db_url: str) -> None:
    env = make_app(
        db_url,
        UTM_TRACKER_RATE_LIMIT="2/minute",
        UTM_TRACKER_RATE_LIMIT_IPV6_PREFIX=48,
        UTM_TRACKER_RATE_LIMIT_MAX_CLIENTS=10,
    )
    client = env.app.test_client()

    def from_address(address: str, n: int) -> int:
        body = {"v": VISITOR, "touches": [touch(n)]}
        status: int = beacon(client, body, environ_base={"REMOTE_ADDR": address}).status_code
        return status

    # Three /64s of one /48: one client.
    assert [from_address(f"2001:db8:1:{n}::1", n) for n in range(1, 4)] == [204, 204, 429]
    for n in range(30):
        from_address(f"10.0.0.{n}", 10 + n)
    storage = env.tracker.state(env.app).limiter.storage
    assert len(storage) <= 10  # type: ignore[arg-type]


def test_junk_addresses_share_one_budget() -> None:
    # REMOTE_ADDR unset, or a proxy passing on a garbled X-Forwarded-For: not a fresh budget each.
    limits = limiter("2/minute")
    assert hits(limits, ["", "unknown", "1.2.3.4.5", "01.2.3.4"]) == [True, True, False, False]
    assert hits(limits, ["1.2.3.4"]) == [True]


def test_no_raw_ip_in_the_rate_limit_keys(env: HostApp) -> None:
    limits = env.tracker.state(env.app).limiter
    for address in ("127.0.0.1", "2001:db8:1:2::1"):
        key = limits.key(address)
        assert address not in key and "2001" not in key and "db8" not in key
    assert limits.key("127.0.0.1") == limits.key("127.0.0.1") != limits.key("127.0.0.2")
    assert limits.key("2001:db8:1:2::1") == limits.key("2001:db8:1:2::ffff")


def test_memory_stays_bounded_after_many_distinct_clients() -> None:
    threads = threading.active_count()
    limits = limiter("5/minute;50/hour", max_clients=1000)
    assert hits(limits, ["192.0.2.1"] * 6)[-1] is False
    for n in range(20_000):
        address = f"10.{n >> 8 & 255}.{n & 255}.1" if n % 2 else f"2001:db8:{n:x}::1"
        assert limits.hit(address) is None
    # One counter per limit of each client kept, the least recently seen dropped first.
    assert limits.storage is not None and len(limits.storage) <= 2 * 1000  # type: ignore[arg-type]
    assert threading.active_count() == threads  # no timer thread walking the counters
    # The client seen last is still counted (1 hit of 5 spent); the first one was dropped and
    # starts afresh.
    assert hits(limits, ["10.78.31.1"] * 5) == [True] * 4 + [False]
    assert hits(limits, ["192.0.2.1"]) == [True]


def test_a_client_seen_recently_keeps_its_count_while_others_come_and_go() -> None:
    limits = limiter("3/minute", max_clients=100)
    assert hits(limits, ["192.0.2.1"] * 3) == [True] * 3
    for n in range(99):
        limits.hit(f"10.0.{n}.1")
    assert hits(limits, ["192.0.2.1"]) == [False]  # still limited after 99 other clients
    for n in range(150):
        limits.hit(f"10.1.{n}.1")
    assert hits(limits, ["192.0.2.1"]) == [True]  # dropped after 150 more: a fresh count


def test_the_bounded_storage_also_serves_limits_fixed_window() -> None:
    from flask_utm_tracker.abuse import BoundedMemoryStorage
    from limits import parse
    from limits.strategies import FixedWindowRateLimiter

    fixed = FixedWindowRateLimiter(BoundedMemoryStorage(max_keys=10))
    item = parse("3/minute")
    assert [fixed.hit(item, "a") for _ in range(4)] == [True, True, True, False]
    assert fixed.get_window_stats(item, "a").remaining == 0
    assert fixed.hit(item, "b")


def test_the_bounded_storage_keeps_the_most_recently_used_counters() -> None:
    # Against a model (an LRU dictionary): a small table, so that keys share probe runs and the
    # counters dropped or cleared move the others back in the table.
    import random
    from collections import OrderedDict

    from flask_utm_tracker.abuse import BoundedMemoryStorage

    randomly = random.Random(11)
    storage = BoundedMemoryStorage(max_keys=7)
    model: OrderedDict[str, int] = OrderedDict()
    expiry = 10**9  # one window for the whole test
    for step in range(5000):
        key = f"k{randomly.randrange(12)}"
        if randomly.random() < 0.1:
            storage.clear_sliding_window(key, expiry)
            model.pop(key, None)
        else:
            assert storage.acquire_sliding_window_entry(key, 10**6, expiry)
            model[key] = model.get(key, 0) + 1
            model.move_to_end(key)
            if len(model) > 7:
                model.popitem(last=False)
        assert len(storage) == len(model), step
        for other in (f"k{n}" for n in range(12)):
            assert storage.get_sliding_window(other, expiry)[2] == model.get(other, 0), step
    assert storage.reset() == len(model)
    assert len(storage) == 0 and storage.get_sliding_window("k1", expiry)[2] == 0


def test_a_hit_keeps_no_memory_once_the_storage_is_full() -> None:
    # Counters live in memory laid out when the storage is made: new clients past max_clients
    # take the least recently used ones' slots and leave no Python object behind, and no
    # dictionary is rebuilt (in a threaded worker, in whichever thread's malloc arena).
    import tracemalloc

    limits = limiter("5/minute;50/hour", max_clients=1000)
    for n in range(3000):
        limits.hit(f"10.0.{n >> 8}.{n & 255}")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(3000, 13_000):
            limits.hit(f"10.1.{n >> 8 & 255}.{n & 255}")
        kept, peak = (size - before for size in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    assert kept < 10_000, kept  # bytes, for 10,000 new clients (a dictionary: 480 KB)
    assert peak < 50_000, peak  # no table rebuilt on the way
    assert limits.storage is not None and len(limits.storage) == 2 * 1000  # type: ignore[arg-type]


# -- a hung storage --------------------------------------------------------------------------


class Proxy:
    """A TCP server on 127.0.0.1 that accepts connections and then, while ``hung``, never
    answers; otherwise it relays them to ``upstream``."""

    def __init__(self, upstream: tuple[str, int] | None = None) -> None:
        self.upstream = upstream
        self.hung = True
        self.accepted = 0
        self._sockets: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.accepted += 1
            self._sockets.append(conn)
            if not self.hung and self.upstream is not None:
                upstream = socket.create_connection(self.upstream)
                self._sockets.append(upstream)
                for a, b in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)

    def connections(self, at_least: int) -> int:
        """Connections accepted, waiting (a little) for ``at_least`` of them."""
        deadline = time.monotonic() + 5
        while self.accepted < at_least and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.accepted

    def close(self) -> None:
        self._server.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def hung() -> t.Iterator[Proxy]:
    proxy = Proxy()
    yield proxy
    proxy.close()


def test_a_hung_redis_lets_hits_through_and_is_not_retried_on_every_hit(hung: Proxy) -> None:
    limits = limiter("1/minute", f"redis://127.0.0.1:{hung.port}/0", cooldown=3600)
    # A working limit would refuse the second hit; a hung one lets every hit through.
    assert hits(limits, ["192.0.2.1"] * 5) == [True] * 5
    # The first hit found Redis hung; the others did not try it (the breaker is open).
    assert hung.connections(at_least=1) == 1


def test_a_hung_redis_is_tried_again_after_the_cooldown(hung: Proxy) -> None:
    limits = limiter("1/minute", f"redis://127.0.0.1:{hung.port}/0", cooldown=1)
    assert hits(limits, ["192.0.2.1"] * 3) == [True] * 3
    assert hung.connections(at_least=1) == 1
    time.sleep(1.1)
    assert hits(limits, ["192.0.2.1"] * 3) == [True] * 3
    assert hung.connections(at_least=2) == 2  # one try again, then open for 1 s more


def test_beacons_and_pages_go_on_with_a_hung_redis(db_url: str, hung: Proxy) -> None:
    env = make_app(
        db_url,
        UTM_TRACKER_RATE_LIMIT="1/minute",
        UTM_TRACKER_RATE_LIMIT_STORAGE=f"redis://127.0.0.1:{hung.port}/0",
    )
    client = env.app.test_client()
    statuses = [beacon(client, {"v": VISITOR, "touches": [touch(n)]}).status_code for n in range(3)]
    assert statuses == [204, 204, 204]
    assert len(touches(env)) == 3
    assert client.get("/?utm_source=news&utm_medium=email").status_code == 200


def test_redis_limits_ipv6_by_64_under_the_tracker_prefix() -> None:
    redis_url = service_url(REDIS_VAR, "Redis")
    import redis

    limits = limiter("3/minute", redis_url)
    assert hits(limits, [f"2001:db8:7:8::{n:x}" for n in range(1, 6)]) == [True] * 3 + [False] * 2
    assert hits(limits, ["2001:db8:7:9::1", "203.0.113.9"]) == [True, True]
    key = limits.key("2001:db8:7:8::1")
    stored = [k.decode() for k in redis.Redis.from_url(redis_url).keys(f"*{key}*")]
    assert stored and all(k.startswith("utm_tracker:") for k in stored)
    assert not any("2001" in k or "db8" in k for k in stored)


def test_redis_limits_again_once_it_answers_again() -> None:
    redis_url = service_url(REDIS_VAR, "Redis")
    import redis

    pool = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    proxy = Proxy(upstream=(pool.get("host", "127.0.0.1"), int(pool.get("port", 6379))))
    try:
        uri = f"redis://127.0.0.1:{proxy.port}/{pool.get('db', 0)}"
        limits = limiter("2/minute", uri, cooldown=0.2)
        assert hits(limits, ["192.0.2.1"] * 3) == [True] * 3  # hung: let through
        proxy.hung = False
        time.sleep(0.3)
        assert hits(limits, ["192.0.2.1"] * 3) == [True, True, False]
    finally:
        proxy.close()


def test_redis_limit_is_shared_by_two_gunicorn_workers(tmp_path: Path) -> None:
    redis_url = service_url(REDIS_VAR, "Redis")
    with gunicorn(
        tmp_path,
        f"sqlite:///{tmp_path / 'rl.db'}",
        workers=2,
        # Counters are keyed by an HMAC of the client address: a fresh secret, fresh counters.
        SECRET_KEY=secrets.token_hex(16),
        UTM_TRACKER_RATE_LIMIT="10/minute",
        UTM_TRACKER_RATE_LIMIT_STORAGE=redis_url,
    ) as server:
        # A new connection per request: gunicorn hands them to both workers.
        statuses = [
            post_beacon(server.url, {"v": VISITOR, "touches": [touch(n)]}) for n in range(16)
        ]
    assert statuses.count(204) == 10, statuses
    assert statuses.count(429) == 6, statuses


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("RATE_LIMIT_IPV6_PREFIX", 129, "RATE_LIMIT_IPV6_PREFIX must be a prefix length"),
        ("RATE_LIMIT_IPV6_PREFIX", 0, "from 1 to 128, not 0"),
        ("RATE_LIMIT_IPV6_PREFIX", "64", "not '64'"),
        ("RATE_LIMIT_MAX_CLIENTS", 0, "RATE_LIMIT_MAX_CLIENTS must be a number of clients"),
        ("RATE_LIMIT_TIMEOUT", 0, "RATE_LIMIT_TIMEOUT must be a number of seconds"),
        ("RATE_LIMIT_TIMEOUT", True, "not True"),
        ("RATE_LIMIT", "lots", "'lots' is not a rate limit such as '60/minute'"),
        ("RATE_LIMIT_STORAGE", "nosuch://x", "'nosuch://x' is not a rate-limit storage"),
    ],
)
def test_an_invalid_setting_is_a_clear_config_error(
    tmp_path: Path, key: str, value: t.Any, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        make_app(f"sqlite:///{tmp_path / 'c.db'}", **{f"UTM_TRACKER_{key}": value})
    assert message in str(raised.value)
    assert f"UTM_TRACKER_{key}" in str(raised.value)


# -- bots ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "agent",
    [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    ],
)
def test_bots_get_204_and_nothing_is_stored(env: HostApp, client: t.Any, agent: str) -> None:
    response = beacon(client, {"v": VISITOR, "touches": [touch(1)]}, headers={"User-Agent": agent})
    assert response.status_code == 204
    assert touches(env) == []


def test_headless_browsers_are_not_bots(env: HostApp, client: t.Any) -> None:
    agent = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
        " HeadlessChrome/156.0.0.0 Safari/537.36"
    )
    response = beacon(client, {"v": VISITOR, "touches": [touch(1)]}, headers={"User-Agent": agent})
    assert response.status_code == 204
    assert len(touches(env)) == 1


def test_referrer_spam_makes_no_touch(env: HostApp, client: t.Any) -> None:
    spam = {"id": "spam", "url": "https://www.example.com/", "referrer": "http://semalt.com/"}
    assert beacon(client, {"v": VISITOR, "touches": [spam]}).status_code == 204
    assert touches(env) == []
