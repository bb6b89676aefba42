"""Abuse controls of the beacon endpoint: a per-client rate limit and bot filtering.

The rate limit calls `limits`, the engine of Flask-Limiter, directly: Flask-Limiter's
``init_app`` would hook every request of the host app and read the host's own ``RATELIMIT_*``
keys, while only the beacon needs a limit. What comes from `limits` and what is ours:

- **Strategy** (limits): :class:`limits.strategies.SlidingWindowCounterRateLimiter`, a counter
  per window weighted with the previous window's: constant work and memory per client, against
  the moving window's list of timestamps per client.
- **Storage** ``redis://`` (limits): :class:`limits.storage.RedisStorage` (or its Sentinel and
  Cluster kin), shared by every worker, its keys under the ``utm_tracker:`` prefix. Ours are only
  its options: short socket timeouts (also for the sentinels) and no retries, so a Redis that
  accepts connections and never answers costs one timeout, not seconds. Each hit makes one
  Redis call per limit (one more when refused), each bounded by the timeout. Other `limits`
  storage URIs (memcached, MongoDB) are passed to `limits` as they are, the breaker aside.
- **Storage** ``memory://`` (ours): :class:`BoundedMemoryStorage`, a `limits` storage that keeps
  the counters of at most ``max_clients`` clients, the least recently seen dropped first. limits'
  own ``MemoryStorage`` keeps every client ever seen until a timer thread, rescheduled every
  10 ms while hits arrive, walks all of their keys: work and memory that grow with the clients
  seen. Ours has no thread, never walks its keys and lays out its memory once, when made: a hit
  costs a few probes of its hash table and keeps nothing it allocates.
- **Circuit breaker** (ours; limits has none): a failing storage lets the beacon through (a rate
  limit must not lose touches) and is then left alone for ``cooldown`` seconds, after which one
  hit tries it again (half-open) and closes the breaker if it answers.
- **Client key** (ours): an IPv4 address, or the IPv6 network of ``ipv6_prefix`` bits (64: one
  /64, what a single subscriber gets and rotates addresses within); an IPv4-mapped IPv6 address
  counts as its IPv4 address. The storage sees an HMAC of that key, never the address.
"""

from __future__ import annotations

import functools
import hmac
import inspect
import logging
import mmap
import re
import socket
import threading
import time
import typing as t
from math import floor

import limits
from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError
from limits.storage import (
    RedisStorage,
    SlidingWindowCounterSupport,
    Storage,
    storage_from_string,
)
from limits.strategies import SlidingWindowCounterRateLimiter

logger = logging.getLogger("flask_utm_tracker")

#: URI schemes of limits' Redis storages, which take a key prefix and redis-py's socket options.
REDIS_SCHEMES = ("redis://", "rediss://", "redis+unix://", "redis+sentinel://", "redis+cluster://")
#: Of those, the ones made with ``redis.from_url``, which takes a retry policy.
PLAIN_REDIS_SCHEMES = ("redis://", "rediss://", "redis+unix://")
#: The client key of a request without a valid IP address (``REMOTE_ADDR`` unset, or a garbled
#: ``X-Forwarded-For`` let through by a proxy): all of them share one budget, so junk addresses
#: cannot be rotated to get a fresh budget each.
NO_ADDRESS = "-"
#: The first 96 bits of an IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, RFC 4291 2.5.5.2).
IPV4_MAPPED = bytes(10) + b"\xff\xff"


def client_id(address: str, ipv6_prefix: int = 64) -> str:
    """The client an address belongs to: an IPv4 address, or an IPv6 network.

    ``socket.inet_pton`` reads the address (in C, cheaper than ``ipaddress``). It takes only
    the canonical dotted form of IPv4 addresses (no leading zeros,
    no shortened forms), so an IPv4 address has one spelling and is its own name.

    :param address: the request's remote address.
    :param ipv6_prefix: how many leading bits of an IPv6 address name a client.
    :return: e.g. ``"192.0.2.1"``, ``"20010db800010002/64"`` (the network's bits in hex), or
        :data:`NO_ADDRESS`.
    """
    try:
        if ":" not in address:
            socket.inet_pton(socket.AF_INET, address)
            return address
        packed = socket.inet_pton(socket.AF_INET6, address.partition("%")[0])  # less a zone
    except (OSError, ValueError):  # not an address; ValueError: a NUL character
        return NO_ADDRESS
    if packed[:12] == IPV4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return f"{int.from_bytes(packed, 'big') >> (128 - ipv6_prefix):x}/{ipv6_prefix}"


class BoundedMemoryStorage(Storage, SlidingWindowCounterSupport):
    """A `limits` storage in this process's memory holding at most ``max_keys`` counters.

    All of its memory is laid out once, when it is made, for ``max_keys`` counters; a hit
    allocates nothing that it keeps. A counter is a slot of typed arrays: its key's hash, three
    numbers, and its neighbours in a doubly linked list of the slots in the order of their last
    use. An open-addressing hash table (linear probing, at most half full) finds a key's slot.
    A new counter past ``max_keys`` takes the slot of the least recently used one (that client
    starts afresh). Every operation is a constant number of steps under one lock (a handful of
    probes on average); there is no thread and nothing ever walks the counters. An expired
    counter is reset when next used.

    Why not a dictionary: one whose keys come and go is rebuilt each time its deleted entries
    fill it (here every ninety thousand new counters or so), and glibc allocates each rebuilt
    table in the malloc arena of the thread at hand, where the freed one stays: a 16-thread
    worker grew by 95 MB after a million clients. The arrays are one anonymous private memory
    mapping (on platforms with ``mmap.MAP_PRIVATE``), outside malloc's arenas; its pages become
    resident as they are first used, and a forked worker writes to its own copy.

    A counter is known by its key's 64-bit ``hash()`` (SipHash, keyed at random per process):
    two keys would share one counter only if their hashes were equal.

    Fixed-window counters (``incr``/``get``) are ``(count, expires_at)``; sliding-window ones
    ``(window, count, previous count)``, where ``window`` numbers the windows since the epoch.
    """

    def __init__(self, max_keys: int) -> None:
        super().__init__(None)
        if max_keys < 1:
            raise ValueError(f"A rate-limit storage needs room for 1 counter, not {max_keys}.")
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._lay_out()

    def _lay_out(self) -> None:
        """Make the slots, all free, and the empty hash table."""
        slots = self.max_keys
        positions = 1 << (2 * slots - 1).bit_length()  # a power of two, at least twice the slots
        # Per slot: its key's hash (8 bytes); the counter's three numbers (8 bytes each); the
        # slots used just before and just after it (-1: none; 4 bytes each). Then the hash
        # table: per position, the number of a slot + 1, 0 when empty (4 bytes).
        memory = memoryview(zeroed(40 * slots + 4 * positions))
        self._hashes = memory[: 8 * slots].cast("q")
        self._a = memory[8 * slots : 16 * slots].cast("d")
        self._b = memory[16 * slots : 24 * slots].cast("d")
        self._c = memory[24 * slots : 32 * slots].cast("d")
        self._older = memory[32 * slots : 36 * slots].cast("i")
        self._newer = memory[36 * slots : 40 * slots].cast("i")
        self._table = memory[40 * slots :].cast("i")
        self._mask = positions - 1
        self._newest = self._oldest = -1
        self._held = 0
        self._fresh = 0  # the slots from this one on were never used
        self._free = -1  # cleared slots, chained through _older

    def __len__(self) -> int:
        """How many counters are held."""
        return self._held

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    # -- slots (call with the lock held) -------------------------------------------------------

    def _find(self, hashed: int) -> int:
        """The slot of the counter whose key hashes to ``hashed``, or -1."""
        table, hashes, mask = self._table, self._hashes, self._mask
        position = hashed & mask
        while slot := table[position]:
            if hashes[slot - 1] == hashed:
                return slot - 1
            position = (position + 1) & mask
        return -1

    def _add(self, hashed: int) -> int:
        """A slot for a new counter, the most recently used: a free slot, else the least
        recently used counter's. The caller sets its numbers."""
        if self._free >= 0:
            slot = self._free
            self._free = self._older[slot]
        elif self._fresh < self.max_keys:
            slot = self._fresh
            self._fresh += 1
        else:
            slot = self._oldest
            self._drop(slot)
        table, mask = self._table, self._mask
        position = hashed & mask
        while table[position]:
            position = (position + 1) & mask
        table[position] = slot + 1
        self._hashes[slot] = hashed
        self._link(slot)
        self._held += 1
        return slot

    def _drop(self, slot: int) -> None:
        """Forget the counter in ``slot``: out of the list and of the table, which it leaves as
        if the counter had never been added (the entries after it move back)."""
        self._unlink(slot)
        self._held -= 1
        table, hashes, mask = self._table, self._hashes, self._mask
        hole = hashes[slot] & mask
        while table[hole] != slot + 1:
            hole = (hole + 1) & mask
        position = hole
        while True:
            position = (position + 1) & mask
            moved = table[position]
            if not moved:
                break
            home = hashes[moved - 1] & mask
            # An entry may move back into the hole unless the hole lies before its home.
            if (position - home) & mask >= (position - hole) & mask:
                table[hole] = moved
                hole = position
        table[hole] = 0

    def _link(self, slot: int) -> None:
        """Make ``slot`` the most recently used (it is not in the list)."""
        newest = self._newest
        self._older[slot] = newest
        self._newer[slot] = -1
        if newest >= 0:
            self._newer[newest] = slot
        else:
            self._oldest = slot
        self._newest = slot

    def _unlink(self, slot: int) -> None:
        older, newer = self._older[slot], self._newer[slot]
        if older >= 0:
            self._newer[older] = newer
        else:
            self._oldest = newer
        if newer >= 0:
            self._older[newer] = older
        else:
            self._newest = older

    def _touch(self, slot: int) -> None:
        """Make ``slot`` the most recently used."""
        if slot != self._newest:
            self._unlink(slot)
            self._link(slot)

    # -- fixed window --------------------------------------------------------------------------

    def incr(self, key: str, expiry: int, amount: int = 1, elastic_expiry: bool = False) -> int:
        # limits 5 calls incr(key, expiry, amount=...), limits 4 also passes elastic_expiry=...
        now = time.time()
        hashed = hash(key)
        with self._lock:
            slot = self._find(hashed)
            if slot < 0:
                slot = self._add(hashed)
                self._b[slot] = 0
            else:
                self._touch(slot)
            if self._b[slot] <= now:  # new or expired
                self._a[slot] = 0
                self._b[slot] = now + expiry
            elif elastic_expiry:
                self._b[slot] = now + expiry
            count = int(self._a[slot]) + amount
            self._a[slot] = count
            return count

    def get(self, key: str) -> int:
        hashed = hash(key)
        with self._lock:
            slot = self._find(hashed)
            if slot < 0 or self._b[slot] <= time.time():
                return 0
            return int(self._a[slot])

    def get_expiry(self, key: str) -> float:
        hashed = hash(key)
        now = time.time()
        with self._lock:
            slot = self._find(hashed)
            return self._b[slot] if slot >= 0 and self._b[slot] > now else now

    # -- sliding window counter ----------------------------------------------------------------

    def _window(self, slot: int, expiry: int, now: float) -> tuple[int, int, int]:
        """``(window, count, previous count)`` of the counter in ``slot`` (-1: none) at ``now``."""
        window = int(now / expiry)
        if slot < 0:
            return window, 0, 0
        last = self._a[slot]  # the window the counter was last written in
        if last >= window:
            return window, int(self._b[slot]), int(self._c[slot])
        if last == window - 1:
            return window, 0, int(self._b[slot])
        return window, 0, 0

    def acquire_sliding_window_entry(
        self, key: str, limit: int, expiry: int, amount: int = 1
    ) -> bool:
        if amount > limit:
            return False
        now = time.time()
        hashed = hash(key)
        with self._lock:
            slot = self._find(hashed)
            window, count, previous = self._window(slot, expiry, now)
            # The share of the previous window still inside the sliding one, as in limits.
            weighted = previous * (1 - (now / expiry) % 1) + count
            if slot >= 0:
                self._touch(slot)  # a refused client is still a recent one
            if floor(weighted) + amount > limit:
                return False
            if slot < 0:
                slot = self._add(hashed)
            self._a[slot] = window
            self._b[slot] = count + amount
            self._c[slot] = previous
            return True

    def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        now = time.time()
        hashed = hash(key)
        with self._lock:
            _, count, previous = self._window(self._find(hashed), expiry, now)
        left = (1 - (now / expiry) % 1) * expiry
        return previous, left if previous else 0.0, count, left + expiry

    def clear_sliding_window(self, key: str, expiry: int) -> None:
        self.clear(key)

    # -- the rest of limits' Storage -----------------------------------------------------------

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        with self._lock:
            held = self._held
            self._lay_out()
        return held

    def clear(self, key: str) -> None:
        hashed = hash(key)
        with self._lock:
            slot = self._find(hashed)
            if slot >= 0:
                self._drop(slot)
                self._older[slot] = self._free
                self._free = slot


def zeroed(size: int) -> mmap.mmap | bytearray:
    """``size`` zero bytes: an anonymous private memory mapping where the platform has one
    (pages resident only once written, and copied, not shared, by a fork), else a bytearray."""
    if hasattr(mmap, "MAP_PRIVATE"):
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    return bytearray(size)


class RateLimiter:
    """Hits against ``limit`` (e.g. ``"60/minute;600/hour"``) in the storage at ``uri``.

    :param limit: limits' notation, ``;``-separated; ``""`` for no limit.
    :param uri: ``memory://`` (this process, :class:`BoundedMemoryStorage`), ``redis://...``
        (shared) or another `limits` storage URI.
    :param secret: the key of the HMAC that names clients in the storage.
    :param ipv6_prefix: IPv6 addresses in one network of this many bits are one client.
    :param max_clients: with ``memory://``, the most clients whose counters are kept.
    :param timeout: with Redis, the socket connect and read timeout in seconds.
    :param cooldown: after a storage failure, seconds during which beacons are let through
        without trying the storage; then one beacon tries it again.
    :raises ValueError: for an invalid limit, storage URI or option, saying which.
    """

    def __init__(
        self,
        limit: str,
        uri: str,
        secret: bytes,
        *,
        ipv6_prefix: int = 64,
        max_clients: int = 40_000,
        timeout: float = 0.05,
        cooldown: float = 5.0,
    ) -> None:
        if isinstance(ipv6_prefix, bool) or not 1 <= ipv6_prefix <= 128:
            raise ValueError(f"The IPv6 prefix must be 1 to 128 bits, not {ipv6_prefix!r}.")
        if max_clients < 1:
            raise ValueError(f"The rate limit needs room for 1 client at least, not {max_clients}.")
        if not timeout > 0:
            raise ValueError(f"The rate-limit storage timeout must be above 0, not {timeout!r}.")
        try:
            self.items: list[RateLimitItem] = parse_many(limit) if limit else []
        except ValueError:
            raise ValueError(
                f"{limit!r} is not a rate limit such as '60/minute' or '60/minute;600/hour'."
            ) from None
        self.secret = secret
        self.ipv6_prefix = ipv6_prefix
        self.cooldown = cooldown
        self.storage: Storage | None = None
        self.strategy: SlidingWindowCounterRateLimiter | None = None
        if self.items:
            self.storage = make_storage(
                uri, max_keys=max_clients * len(self.items), timeout=timeout
            )
            self.strategy = SlidingWindowCounterRateLimiter(self.storage)
        # Circuit breaker: 0 when closed, else the monotonic time until which it stays open.
        self._open_until = 0.0
        self._trial = threading.Lock()

    def key(self, address: str) -> str:
        """The storage key of the client ``address`` belongs to: an HMAC, not the address."""
        name = client_id(address, self.ipv6_prefix).encode()
        return hmac.digest(self.secret, name, "sha256")[:12].hex()

    def hit(self, address: str) -> int | None:
        """Count a request from ``address``: ``None`` when allowed, else seconds to wait.

        A storage failure lets the request through (logged) and opens the circuit breaker.
        """
        strategy = self.strategy
        if strategy is None:
            return None
        trying_again = bool(self._open_until)
        if trying_again and not self._try_again():
            return None
        key = self.key(address)
        wait = None
        try:
            for item in self.items:
                if not strategy.hit(item, key):
                    reset = strategy.get_window_stats(item, key).reset_time
                    wait = max(1, int(reset - time.time()) + 1)
                    break
        except Exception:
            self._open_until = time.monotonic() + self.cooldown
            logger.warning(
                "The rate-limit storage failed; beacons are let through without a limit for"
                " %g seconds, then it is tried again.",
                self.cooldown,
                exc_info=True,
            )
            return None
        if trying_again:  # only the hit that tried it again closes the breaker
            self._open_until = 0.0
            logger.warning("The rate-limit storage answers again; beacons are limited again.")
        return wait

    def _try_again(self) -> bool:
        """With the breaker open: whether this hit is the one that tries the storage again
        (the cooldown is over and no other hit is trying it)."""
        with self._trial:
            now = time.monotonic()
            if now < self._open_until:
                return False
            self._open_until = now + self.cooldown  # the others keep skipping while this tries
            return True


def make_storage(uri: str, *, max_keys: int, timeout: float) -> Storage:
    """The `limits` storage at ``uri``: ours for ``memory://``, limits' for the rest.

    :raises ValueError: when limits does not know the URI or cannot use it.
    """
    if uri.startswith("memory://"):
        return BoundedMemoryStorage(max_keys)
    options: dict[str, t.Any] = {}
    if uri.startswith(REDIS_SCHEMES):
        if "key_prefix" not in inspect.signature(RedisStorage.__init__).parameters:
            # Before 4.8, and in 5.0.0, limits hands key_prefix on to redis-py, whose connection
            # then raises on every command: every beacon would be let through, unlimited.
            raise ValueError(
                f"A Redis rate-limit storage needs limits 4.8 or later (not 5.0.0), not"
                f" limits {limits.__version__}: pip install --upgrade limits."
            )
        options = {
            "key_prefix": "utm_tracker",
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
        }
        if uri.startswith(PLAIN_REDIS_SCHEMES):
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            options["retry"] = Retry(NoBackoff(), 0)
        elif uri.startswith("redis+sentinel://"):  # the sentinels' own connections
            options["sentinel_kwargs"] = {
                "socket_connect_timeout": timeout,
                "socket_timeout": timeout,
            }
    try:
        storage = storage_from_string(uri, **options)
    except (ConfigurationError, ValueError, TypeError) as err:
        raise ValueError(f"{uri!r} is not a rate-limit storage limits can use: {err}") from None
    if not isinstance(storage, Storage) or not isinstance(storage, SlidingWindowCounterSupport):
        raise ValueError(
            f"{uri!r} is not a rate-limit storage for the sliding window counter: use"
            " 'memory://' or 'redis://host:6379/0'."
        )
    return storage


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
    """Whether ``user_agent`` is a crawler by crawlerdetect's list (less :data:`NOT_BOTS`).

    Cached per agent (up to 512 characters): crawlerdetect runs a few hundred regular
    expressions per call, and real traffic repeats a few thousand browser agents.
    """
    if not user_agent:
        return False
    if len(user_agent) <= 512:
        return _is_bot_cached(user_agent)
    return _is_bot(user_agent)


@functools.lru_cache(maxsize=4096)
def _is_bot_cached(user_agent: str) -> bool:
    return _is_bot(user_agent)


def _is_bot(user_agent: str) -> bool:
    if NOT_BOTS.search(user_agent):
        return False
    try:
        return bool(_crawler_detect().isCrawler(user_agent[:1000]))
    except Exception:  # pragma: no cover - a library bug must not drop real touches
        logger.exception("crawlerdetect failed on a user agent.")
        return False
