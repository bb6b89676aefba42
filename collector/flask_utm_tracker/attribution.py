"""Attribution of conversions to the touches before them, by six models.

A conversion's **path** is its user's ``LeadSource`` rows with ``timestamp`` at or before the
conversion's ``occurred_at`` and at most ``UTM_TRACKER_LOOKBACK_DAYS`` (default 90) before it,
oldest first (ties by row id). Each touch stands for its value of the chosen dimension
(``channel``, ``source``, ``medium`` or ``campaign``; an empty value is ``(not set)``). A
conversion with an empty path is credited to ``(direct)`` under every model.

The credit of one conversion whose path has ``n`` touches:

``first``, ``last``
    1 to the first (the last) touch.
``linear``
    ``1/n`` to each touch.
``position``
    ``n = 1``: 1; ``n = 2``: 0.5 each; ``n >= 3``: 0.4 to the first, 0.4 to the last and
    ``0.2/(n-2)`` to each touch between.
``time_decay``
    each touch weighs ``2^(-age/h)``, ``age`` being the conversion time minus the touch time
    and ``h`` ``UTM_TRACKER_HALF_LIFE_DAYS`` (default 7); the weights are normalised to sum
    to 1.
``data_driven``
    a first-order Markov chain over the dimension's values (the states are ``start``, the
    values, ``conversion`` and ``null``). The converting paths are the paths of the range's
    conversions; the null paths are the whole paths (every row, no lookback) of the users who
    have lead sources and no conversion of that name in the range. Consecutive repeats of a
    value collapse into one. The transition probabilities are the observed transition counts
    divided by the counts out of each state. The **removal effect** of a value ``x`` is
    ``RE(x) = 1 - P(conversion with x removed) / P(conversion)``, where removing ``x`` sends
    every transition into ``x`` to ``null``. The range's conversions with a non-empty path, and
    their revenue in each currency, are shared out in proportion to ``RE``; the conversions
    with an empty path go to ``(direct)``.

    Computed exactly, not by simulation: with ``N = (I - Q)^-1`` the fundamental matrix of the
    transient states (``Q`` their transition probabilities) and ``b = N r`` the probabilities
    of ending in ``conversion``, the probability of converting without ever visiting ``x`` is
    ``b[start] - (N[start, x] / N[x, x]) * b[x]`` (the chance of reaching ``x`` times the chance
    of converting from there), so ``RE(x) = N[start, x] * b[x] / (N[x, x] * b[start])``: one
    matrix inversion for every removal effect.

    **What it needs to be meaningful.** The model learns what a value adds by comparing
    journeys that converted with journeys that did not, so it needs non-converting journeys:
    at least :data:`MIN_NULL_PATHS` (100) null paths in the range. With none, every journey
    converts and a removal effect is only the share of conversions whose path holds the value
    (every touch looks indispensable). Below that threshold, or when no conversion of the
    range has a touch, ``data_driven`` **falls back to** ``linear``, logs a warning, and the
    dashboard says so. Users' whole paths are kept up to date when their lead sources are
    written and when they convert; after writing ``LeadSource`` rows around the extension,
    run ``flask utm rebuild``.

Revenue is credited in the same proportions as conversions, per currency (a conversion without
a value adds to the conversions only). Spend is matched on the dimension's value: the channel of
a spend row comes from its source, medium and campaign by the same GA4 rules as a touch's
(:func:`flask_utm_tracker.channels.channel_for`). ``roas`` (revenue / spend) needs the spend
and the revenue in one and the same currency; ``cpa`` (spend / conversions) needs the spend in
one currency and at least one conversion; otherwise they are ``None``.

The first five models are summed from a per-day table kept in step when conversions are
recorded (:mod:`flask_utm_tracker.conversions`); ``data_driven`` reads the stored paths. A
report reads and never computes a path.
"""

from __future__ import annotations

import logging
import typing as t
from datetime import datetime, timedelta

if t.TYPE_CHECKING:
    pass

logger = logging.getLogger("flask_utm_tracker")

#: The models, with the names the dashboard and the CLI show.
MODELS: dict[str, str] = {
    "first": "First touch",
    "last": "Last touch",
    "linear": "Linear",
    "position": "Position based",
    "time_decay": "Time decay",
    "data_driven": "Data-driven (Markov)",
}
#: The models computed per conversion and summed per day (``data_driven`` is not).
POSITIONAL: tuple[str, ...] = ("first", "last", "linear", "position", "time_decay")
#: The dimensions a report groups by.
DIMENSIONS: tuple[str, ...] = ("channel", "source", "medium", "campaign")
#: The key of conversions with an empty path, and of empty values.
DIRECT = "(direct)"
NOT_SET = "(not set)"
#: Fewest null paths the data-driven model needs; below, it falls back to :data:`FALLBACK`.
MIN_NULL_PATHS = 100
FALLBACK = "linear"
#: Defaults of the configuration keys read here.
LOOKBACK_DAYS = 90
HALF_LIFE_DAYS = 7.0


# -- one conversion -----------------------------------------------------------------------------


class Touch(t.NamedTuple):
    """What a model needs of a ``LeadSource`` row."""

    key: str
    timestamp: datetime


def credits(
    model: str, path: t.Sequence[Touch], at: datetime, half_life_days: float
) -> dict[str, float]:
    """The credit of one conversion at ``at`` per key under a positional ``model``.

    :param path: the conversion's touches, oldest first (already cut to the lookback window).
    :param half_life_days: the half-life of ``time_decay``.
    :return: key -> credit, summing to 1 (``{"(direct)": 1}`` for an empty path).
    """
    n = len(path)
    if n == 0:
        return {DIRECT: 1.0}
    weights: list[float]
    if model == "first":
        weights = [1.0] + [0.0] * (n - 1)
    elif model == "last":
        weights = [0.0] * (n - 1) + [1.0]
    elif model == "linear":
        weights = [1.0 / n] * n
    elif model == "position":
        if n == 1:
            weights = [1.0]
        elif n == 2:
            weights = [0.5, 0.5]
        else:
            weights = [0.4] + [0.2 / (n - 2)] * (n - 2) + [0.4]
    elif model == "time_decay":
        half_life = half_life_days * 86400.0
        raw = [
            2.0 ** (-max((at - touch.timestamp).total_seconds(), 0.0) / half_life) for touch in path
        ]
        total = sum(raw)
        weights = [w / total for w in raw]
    else:
        raise ValueError(f"Unknown positional model {model!r}; use one of {POSITIONAL}.")
    out: dict[str, float] = {}
    for touch, weight in zip(path, weights, strict=True):
        if weight:
            out[touch.key] = out.get(touch.key, 0.0) + weight
    return out


def window(rows: t.Iterable[Touch], at: datetime, lookback_days: int) -> list[Touch]:
    """The touches of ``rows`` (oldest first) at or before ``at`` and within the lookback."""
    earliest = at - timedelta(days=lookback_days)
    return [row for row in rows if earliest <= row.timestamp <= at]


def collapse(keys: t.Iterable[str]) -> list[str]:
    """``keys`` with consecutive repeats collapsed into one."""
    out: list[str] = []
    for key in keys:
        if not out or out[-1] != key:
            out.append(key)
    return out


# -- the Markov chain ---------------------------------------------------------------------------


#: The chain's own states, beside the values (which are never empty strings).
START, CONVERSION, NULL = "", "\x00conversion", "\x00null"


def add_transitions(
    transitions: dict[tuple[str, str], float], path: t.Sequence[str], n: float, converted: bool
) -> None:
    """Count the transitions of a collapsed, non-empty ``path`` that occurred ``n`` times."""
    previous = START
    for key in path:
        pair = (previous, key)
        transitions[pair] = transitions.get(pair, 0.0) + n
        previous = key
    pair = (previous, CONVERSION if converted else NULL)
    transitions[pair] = transitions.get(pair, 0.0) + n


def removal_effects(
    converting: t.Mapping[tuple[str, ...], float], null: t.Mapping[tuple[str, ...], float]
) -> dict[str, float]:
    """The removal effect of every value of a first-order Markov chain (see the module's
    docstring for the formula).

    :param converting: collapsed non-empty converting paths and how many times each occurred.
    :param null: collapsed non-empty null paths and how many times each occurred.
    :return: value -> ``RE``; empty when nothing converts.
    """
    transitions: dict[tuple[str, str], float] = {}
    for paths, converted in ((converting, True), (null, False)):
        for path, n in paths.items():
            if path and n > 0:
                add_transitions(transitions, path, n, converted)
    return removal_effects_of(transitions)


def removal_effects_of(transitions: t.Mapping[tuple[str, str], float]) -> dict[str, float]:
    """:func:`removal_effects` from the transition counts (:func:`add_transitions`)."""
    import numpy as np

    states = sorted({key for pair in transitions for key in pair} - {START, CONVERSION, NULL})
    if not states or not any(
        n > 0 for (_, target), n in transitions.items() if target == CONVERSION
    ):
        return {}
    index = {key: i + 1 for i, key in enumerate(states)}  # 0 is start
    size = len(states) + 1
    index[START] = 0
    index[CONVERSION] = size
    index[NULL] = size + 1
    counts = np.zeros((size, size + 2))
    for (source, target), n in transitions.items():
        counts[index[source], index[target]] += n
    out_of = counts.sum(axis=1, keepdims=True)
    probabilities = np.divide(counts, out_of, out=np.zeros_like(counts), where=out_of > 0)
    q = probabilities[:, :size]
    fundamental = np.linalg.inv(np.eye(size) - q)
    absorbed = fundamental @ probabilities[:, size]
    converts = absorbed[0]
    if converts <= 0:
        return {}
    diagonal = np.diag(fundamental)
    return {
        key: max(float(fundamental[0, i] * absorbed[i] / (diagonal[i] * converts)), 0.0)
        for key, i in ((k, index[k]) for k in states)
    }


# -- the report ---------------------------------------------------------------------------------
