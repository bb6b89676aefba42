"""The beacon rate limiter under many clients and a hung storage, in one process.

    .venv/bin/python bench/limiter.py                 # 1,000,000 clients
    .venv/bin/python bench/limiter.py --clients 200000
    .venv/bin/python bench/limiter.py --threads 16    # the clients fed by 16 threads in turn
    .venv/bin/python bench/limiter.py --before        # also limits' MemoryStorage + moving
                                                      # window (the limiter before), 100,000 clients
    .venv/bin/python bench/limiter.py --redis redis://127.0.0.1:6379/0   # also a hit's cost there

The limiter is built from the default settings, as ``init_app`` builds it. Measured:

- the process's RSS before and after that many distinct client addresses (half IPv4 addresses,
  half IPv6 addresses each in its own /64) went through it (target: at most +50 MB). With
  ``--threads N`` they go through it in chunks of 50,000, each chunk in the next of ``N`` threads
  in turn, as ``make bench`` feeds a gthread worker's limiter (one request per chunk, served by
  whichever of its threads). glibc gives each thread that allocates a malloc arena of its own,
  so memory one thread frees is not reused by the others: ``--threads 16`` is the worker's figure;
- the cost of a hit at 1 client and after all of them (a new client's first hit, allowed; one
  client over its limit, refused), and their ratio (target: about 1, O(1) per hit);
- the time a hit takes when the Redis storage accepts connections and never answers: the hit
  that finds it hung, the hits while the breaker is open, and the hit that tries it again
  (target: under 100 ms each).
"""

from __future__ import annotations

import argparse
import queue
import secrets
import socket
import sys
import threading
import time
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask_utm_tracker.abuse import RateLimiter  # noqa: E402
from flask_utm_tracker.config import load_settings  # noqa: E402

SECRET = b"bench-secret"
#: Hits per timed batch; each figure is the best of 10 batches.
BATCH = 1_000
#: Clients per chunk of ``--threads`` (the bench's requests to a worker's limiter).
CHUNK = 50_000


def rss_mb() -> float:
    """This process's resident set size in MB (VmRSS of /proc/self/status)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("No VmRSS in /proc/self/status (this benchmark needs Linux).")


def address(n: int) -> str:
    """The ``n``-th distinct client: IPv4 addresses for even ``n``, IPv6 /64s for odd ones."""
    if n % 2 == 0:
        n //= 2
        return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
    n //= 2
    return f"2001:db8:{n >> 16:x}:{n & 0xFFFF:x}:1234:5678:9abc:def0"


def default_limiter(
    uri: str = "memory://", secret: bytes = SECRET, **overrides: t.Any
) -> RateLimiter:
    """The limiter ``init_app`` builds with the default settings."""
    settings = load_settings({})
    options = {
        "ipv6_prefix": settings.rate_limit_ipv6_prefix,
        "max_clients": settings.rate_limit_max_clients,
        "timeout": settings.rate_limit_timeout,
        **overrides,
    }
    return RateLimiter(settings.rate_limit, uri, secret, **options)


def per_hit_us(hit: t.Callable[[str], t.Any], batches: t.Sequence[t.Sequence[str]]) -> float:
    """Microseconds per ``hit``: the best batch of ``batches`` (as ``timeit`` takes the best
    round: the others met other work of the machine)."""
    best = float("inf")
    for batch in batches:
        start = time.perf_counter()
        for one in batch:
            hit(one)
        best = min(best, (time.perf_counter() - start) / len(batch))
    return best * 1e6


class Row(t.NamedTuple):
    what: str
    value: str
    target: str = ""


def batches(first: int, count: int = 10, size: int = BATCH) -> list[list[str]]:
    """``count`` batches of ``size`` new clients from the ``first``-th on."""
    return [[address(first + b * size + n) for n in range(size)] for b in range(count)]


def feed(hit: t.Callable[[str], t.Any], first: int, last: int, threads: int) -> None:
    """Clients ``first`` to ``last - 1`` through ``hit``: in this thread, or with ``threads`` above
    1 in chunks of :data:`CHUNK`, chunk ``c`` in thread ``c % threads``, one chunk at a time."""
    if threads <= 1:
        for n in range(first, last):
            hit(address(n))
        return
    inboxes: list[queue.Queue[range | None]] = [queue.Queue() for _ in range(threads)]
    done: queue.Queue[None] = queue.Queue()

    def serve(inbox: queue.Queue[range | None]) -> None:
        while (chunk := inbox.get()) is not None:
            for n in chunk:
                hit(address(n))
            done.put(None)

    pool = [threading.Thread(target=serve, args=(inbox,)) for inbox in inboxes]
    for thread in pool:
        thread.start()
    for c, start in enumerate(range(first, last, CHUNK)):
        inboxes[c % threads].put(range(start, min(start + CHUNK, last)))
        done.get()
    for inbox in inboxes:
        inbox.put(None)
    for thread in pool:
        thread.join()


def many_clients(limiter: t.Any, clients: int, label: str, threads: int = 1) -> list[Row]:
    """RSS and per-hit cost of ``limiter`` before and after ``clients`` distinct clients, fed by
    ``threads`` threads (see :func:`feed`; the timed hits run in this one)."""
    hit = limiter.hit
    over = [["192.0.2.1"] * BATCH] * 10
    for _ in range(100):
        hit("192.0.2.1")  # over its limit from here on
    before = rss_mb()  # before the warm-up too: what it leaves behind counts
    warm = default_limiter()  # the same code paths, run before the timing starts
    for n in range(20 * BATCH):
        warm.hit(address(n))
        warm.hit("192.0.2.1")
    del warm
    running = threading.active_count()
    refused_at_1 = per_hit_us(hit, over)
    new_at_1 = per_hit_us(hit, batches(0))
    start = time.perf_counter()
    feed(hit, 10 * BATCH, clients - 10 * BATCH, threads)
    new_at_n = per_hit_us(hit, batches(clients - 10 * BATCH))
    elapsed = time.perf_counter() - start
    refused_at_n = per_hit_us(hit, over)
    after = rss_mb()
    held = len(limiter.storage) if hasattr(limiter.storage, "__len__") else "?"
    at_n = f"after {clients:,}"
    return [
        Row(f"{label}: RSS before", f"{before:.1f} MB"),
        Row(f"{label}: RSS after {clients:,} clients", f"{after:.1f} MB"),
        Row(f"{label}: RSS growth", f"{after - before:+.1f} MB", "<= +50 MB"),
        Row(f"{label}: counters held", f"{held}"),
        Row(f"{label}: threads started", f"{threading.active_count() - running}", "0"),
        Row(f"{label}: {clients:,} hits took", f"{elapsed:.1f} s"),
        Row(f"{label}: new client's hit, first clients", f"{new_at_1:.2f} us"),
        Row(f"{label}: new client's hit, {at_n}", f"{new_at_n:.2f} us"),
        Row(f"{label}: ratio", f"{new_at_n / new_at_1:.2f}", "~1"),
        Row(f"{label}: refused hit, 1 client", f"{refused_at_1:.2f} us"),
        Row(f"{label}: refused hit, {at_n}", f"{refused_at_n:.2f} us"),
        Row(f"{label}: ratio", f"{refused_at_n / refused_at_1:.2f}", "~1"),
    ]


class HungServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def hung_storage(trials: int = 5) -> list[Row]:
    """Per-hit latency with a Redis that accepts connections and never answers."""
    server = HungServer()
    uri = f"redis://127.0.0.1:{server.port}/0"
    finding, open_, retrying = [], [], []
    cooldown = 0.2  # short, to measure several half-open tries (default: 5 s)
    limiter = default_limiter(uri, cooldown=cooldown)
    for _ in range(trials):
        fresh = default_limiter(uri)
        start = time.perf_counter()
        assert fresh.hit("10.0.0.1") is None
        finding.append(time.perf_counter() - start)
    limiter.hit("10.0.0.1")  # opens the breaker
    for _ in range(trials):
        start = time.perf_counter()
        assert limiter.hit("10.0.0.1") is None
        open_.append(time.perf_counter() - start)
        time.sleep(cooldown + 0.01)
        start = time.perf_counter()
        assert limiter.hit("10.0.0.1") is None
        retrying.append(time.perf_counter() - start)
    connections = len(server.held)
    server.close()

    def ms(values: list[float]) -> str:
        return f"{max(values) * 1e3:.1f} ms (mean {sum(values) / len(values) * 1e3:.1f})"

    return [
        Row("hung Redis: hit that finds it hung, max", ms(finding), "< 100 ms"),
        Row("hung Redis: hit with the breaker open, max", ms(open_), "< 100 ms"),
        Row("hung Redis: hit that tries it again, max", ms(retrying), "< 100 ms"),
        Row("hung Redis: connections opened", f"{connections} for {2 * trials + 1} tries"),
    ]


def redis_hits(url: str) -> list[Row]:
    """Per-hit cost with a real Redis: a new client's hit, and a refused one."""
    # A fresh secret: fresh clients, whatever an earlier run left in Redis.
    limiter = default_limiter(url, secrets.token_bytes(16))
    over = [["192.0.2.1"] * BATCH] * 3
    for _ in range(100):
        limiter.hit("192.0.2.1")
    new, refused = per_hit_us(limiter.hit, batches(0, 3)), per_hit_us(limiter.hit, over)
    failed = "yes (a Redis operation took over the timeout)" if limiter._open_until else "no"
    return [
        Row("Redis: new client's hit", f"{new:.0f} us"),
        Row("Redis: refused hit", f"{refused:.0f} us"),
        Row("Redis: breaker opened", failed, "no"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument(
        "--threads", type=int, default=1, help="feed the clients from this many threads in turn"
    )
    parser.add_argument("--before", action="store_true", help="also limits' MemoryStorage")
    parser.add_argument("--redis", metavar="URL", help="also the per-hit cost with this Redis")
    args = parser.parse_args()
    import logging

    logging.getLogger("flask_utm_tracker").setLevel(logging.CRITICAL)  # the breaker's warnings
    label = "memory://" if args.threads <= 1 else f"memory://, {args.threads} threads"
    rows = many_clients(default_limiter(), args.clients, label, args.threads)
    rows += hung_storage()
    if args.redis:
        rows += redis_hits(args.redis)
    if args.before:
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        before = default_limiter()
        before.storage = MemoryStorage()
        before.strategy = MovingWindowRateLimiter(before.storage)  # type: ignore[assignment]
        rows += many_clients(
            before, 100_000, "before (limits' memory, moving window)", args.threads
        )
    width = max(len(row.what) for row in rows)
    values = max(len(row.value) for row in rows)
    print(f"{'':{width}}  {'measured':{values}}  target")
    for row in rows:
        print(f"{row.what:{width}}  {row.value:{values}}  {row.target}")


if __name__ == "__main__":
    main()
