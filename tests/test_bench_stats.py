"""The snippet benchmark's figures (bench/snippet_cpu.py): the paired interval, which tells a
margin over Plausible's tracker from a coin toss, so its ranks must be the sign test's; and the
CPU, which must be the landing page's renderer's main thread alone."""

from __future__ import annotations

import importlib.util
import math
import pathlib
import random

import pytest

_PATH = pathlib.Path(__file__).resolve().parent.parent / "bench" / "snippet_cpu.py"
_SPEC = importlib.util.spec_from_file_location("snippet_cpu", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
snippet_cpu = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(snippet_cpu)


def _below(n: int, k: int) -> float:
    """P(Binomial(n, 1/2) <= k)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


@pytest.mark.parametrize("n", [6, 9, 21, 30, 61, 101, 200])
def test_the_interval_is_the_widest_95_percent_sign_test_interval(n: int) -> None:
    values = [float(i) for i in range(n)]
    random.Random(n).shuffle(values)
    low, middle, high = snippet_cpu.median_interval(values)
    k = int(low) + 1  # the rank of the lower end, 1-based
    assert high == n - k  # symmetric: the k-th largest
    assert middle == (n - 1) / 2
    assert _below(n, k - 1) <= 0.025, "covers at least 95%"
    assert _below(n, k) > 0.025, "and is no wider than it must be"


def test_sixty_one_rounds_use_the_23rd_values_from_either_end() -> None:
    # The figure's default count: the textbook sign-test ranks for n = 61.
    assert snippet_cpu.median_interval([float(i) for i in range(61)]) == (22.0, 30.0, 38.0)


def test_a_shift_shows_as_an_interval_off_zero() -> None:
    rng = random.Random(1)
    shifted = [rng.gauss(-1.0, 1.0) for _ in range(61)]
    assert snippet_cpu.median_interval(shifted)[2] < 0
    level = [rng.gauss(0.0, 1.0) for _ in range(61)]
    low, _, high = snippet_cpu.median_interval(level)
    assert low < 0 < high


def _task(pid: int, ts: float, dur: float, tdur: float) -> dict[str, object]:
    return {
        "pid": pid,
        "tid": 1,
        "ph": "X",
        "name": "ThreadControllerImpl::RunTask",
        "ts": ts,
        "dur": dur,
        "tdur": tdur,
    }


def test_the_cpu_is_the_landing_pages_renderer_main_thread_alone() -> None:
    page = "http://127.0.0.1:8000/snippet.html"
    events: list[dict[str, object]] = []
    for pid, url in ((10, page + "?utm_source=x"), (20, "http://localhost:8000/go.html")):
        events += [
            {
                "pid": pid,
                "tid": 1,
                "ph": "M",
                "name": "thread_name",
                "args": {"name": "CrRendererMain"},
            },
            {
                "pid": pid,
                "tid": 2,
                "ph": "M",
                "name": "thread_name",
                "args": {"name": "Compositor"},
            },
            {
                "pid": pid,
                "tid": 1,
                "ph": "X",
                "name": "ParseHTML",
                "ts": 5,
                "dur": 1,
                "args": {"beginData": {"url": url}},
            },
        ]
    events += [
        _task(10, 0, 100, 4000),
        _task(10, 10, 20, 1000),  # nested in the task before: counted with it
        _task(10, 200, 10, 500),
        {**_task(10, 300, 10, 9000), "tid": 2},  # another thread
        _task(20, 0, 100, 7000),  # the page that sent the visitor on
    ]
    assert snippet_cpu.main_thread_cpu(events, page) == 4.5
    assert snippet_cpu.main_thread_cpu(events, "http://127.0.0.1:8000/none.html") == 0
