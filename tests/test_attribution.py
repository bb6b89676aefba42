"""The six attribution models: worked examples computed by hand, and the Markov removal effects
against a brute-force exact computation."""

from __future__ import annotations

import typing as t
from datetime import date, timedelta
from fractions import Fraction

import pytest
from flask_utm_tracker import attribution, conversion_reports
from flask_utm_tracker.attribution import Touch, collapse, credits, removal_effects
from hypothesis import given, settings
from hypothesis import strategies as st

from .builders import DAY, T0, add_lead
from .conftest import HostApp, make_app


def path(*keys: str, ages: t.Sequence[float] | None = None) -> list[Touch]:
    """Touches with the given keys, ``ages`` days before T0 (default: one day apart)."""
    ages = ages if ages is not None else [len(keys) - i for i in range(len(keys))]
    return [Touch(key, T0 - timedelta(days=age)) for key, age in zip(keys, ages, strict=True)]


# -- one conversion ------------------------------------------------------------------------------


def test_first_last_linear() -> None:
    touches = path("a", "b", "c", "b")
    assert credits("first", touches, T0, 7) == {"a": 1.0}
    assert credits("last", touches, T0, 7) == {"b": 1.0}
    assert credits("linear", touches, T0, 7) == pytest.approx({"a": 0.25, "b": 0.5, "c": 0.25})


def test_position() -> None:
    assert credits("position", path("a"), T0, 7) == {"a": 1.0}
    assert credits("position", path("a", "b"), T0, 7) == {"a": 0.5, "b": 0.5}
    # n = 4: 0.4 first, 0.4 last, 0.2 / 2 = 0.1 to each of the two between.
    four = credits("position", path("a", "b", "c", "d"), T0, 7)
    assert four == pytest.approx({"a": 0.4, "b": 0.1, "c": 0.1, "d": 0.4})
    # n = 5, the last touch's key also between: d gets 0.4 + 0.2 / 3.
    five = credits("position", path("a", "d", "b", "c", "d"), T0, 7)
    assert five == pytest.approx({"a": 0.4, "b": 0.2 / 3, "c": 0.2 / 3, "d": 0.4 + 0.2 / 3})


def test_time_decay() -> None:
    # Ages 14, 7 and 0 days with a 7-day half-life weigh 1/4, 1/2 and 1: sum 7/4.
    got = credits("time_decay", path("a", "b", "c", ages=[14, 7, 0]), T0, 7)
    assert got == pytest.approx({"a": (1 / 4) / (7 / 4), "b": (1 / 2) / (7 / 4), "c": 1 / (7 / 4)})
    # A 1-day half-life: ages 2 and 1 weigh 1/4 and 1/2.
    got = credits("time_decay", path("a", "b", ages=[2, 1]), T0, 1)
    assert got == pytest.approx({"a": 1 / 3, "b": 2 / 3})


def test_empty_path_is_direct() -> None:
    for model in attribution.POSITIONAL:
        assert credits(model, [], T0, 7) == {"(direct)": 1.0}


def test_collapse() -> None:
    assert collapse(["a", "a", "b", "a", "a"]) == ["a", "b", "a"]


# -- the Markov chain, by hand ------------------------------------------------------------------


def test_removal_effects_worked_example() -> None:
    # Converting: (a, b) once, (a) once; null: (b) once.
    # Transitions: start->a 2, start->b 1; a->b 1, a->conv 1; b->conv 1, b->null 1.
    # P(conv) = 2/3 * (1/2 + 1/2 * 1/2) + 1/3 * 1/2 = 2/3.
    # Without a: only start->b->conv: 1/3 * 1/2 = 1/6, RE(a) = 1 - (1/6) / (2/3) = 3/4.
    # Without b: start->a->conv: 2/3 * 1/2 = 1/3, RE(b) = 1 - (1/3) / (2/3) = 1/2.
    effects = removal_effects({("a", "b"): 1, ("a",): 1}, {("b",): 1})
    assert effects == pytest.approx({"a": 3 / 4, "b": 1 / 2})


def test_removal_effects_with_a_loop() -> None:
    # Converting: (a, b, a) once; null: (b) once.
    # start->a 1, start->b 1; a->b 1, a->conv 1; b->a 1, b->null 1.
    # From a: x_a = 1/2 + 1/2 x_b, x_b = 1/2 x_a  =>  x_a = 2/3, x_b = 1/3.
    # P(conv) = 1/2 x_a + 1/2 x_b = 1/2.
    # Without a: from b only null or a (removed): 0, RE(a) = 1.
    # Without b: start->a->conv = 1/2 * 1/2 = 1/4, RE(b) = 1 - (1/4) / (1/2) = 1/2.
    effects = removal_effects({("a", "b", "a"): 1}, {("b",): 1})
    assert effects == pytest.approx({"a": 1.0, "b": 0.5})


def test_nothing_converts() -> None:
    assert removal_effects({}, {("a",): 3}) == {}


# -- the Markov chain, by brute force -----------------------------------------------------------


def exact_removal_effects(
    converting: dict[tuple[str, ...], int], null: dict[tuple[str, ...], int]
) -> dict[str, Fraction]:
    """Build the chain with every value removed in turn and solve each absorbing chain
    exactly (Fractions, Gaussian elimination), as the definition says."""
    counts: dict[str, dict[str, int]] = {}
    for paths, end in ((converting, "<conv>"), (null, "<null>")):
        for keys, n in paths.items():
            steps = ["<start>", *keys, end]
            for a, b in zip(steps, steps[1:], strict=False):
                counts.setdefault(a, {}).setdefault(b, 0)
                counts[a][b] += n
    values = sorted({k for paths in (converting, null) for keys in paths for k in keys})

    def p_conversion(removed: str | None) -> Fraction:
        states = ["<start>", *(v for v in values if v != removed)]
        index = {s: i for i, s in enumerate(states)}
        size = len(states)
        # (I - Q) x = r
        matrix = [[Fraction(int(i == j)) for j in range(size)] + [Fraction(0)] for i in range(size)]
        for state in states:
            out = counts.get(state, {})
            total = sum(out.values())
            for target, n in out.items():
                p = Fraction(n, total)
                if target == "<conv>":
                    matrix[index[state]][size] += p
                elif target in index:
                    matrix[index[state]][index[target]] -= p
                # the removed value and null absorb into null
        for col in range(size):
            pivot = next(r for r in range(col, size) if matrix[r][col] != 0)
            matrix[col], matrix[pivot] = matrix[pivot], matrix[col]
            for r in range(size):
                if r != col and matrix[r][col] != 0:
                    f = matrix[r][col] / matrix[col][col]
                    matrix[r] = [a - f * b for a, b in zip(matrix[r], matrix[col], strict=True)]
        return matrix[0][size] / matrix[0][0]

    base = p_conversion(None)
    return {v: 1 - p_conversion(v) / base for v in values}


def paths_strategy(min_size: int) -> st.SearchStrategy[dict[tuple[str, ...], int]]:
    keys = st.lists(st.sampled_from("abcd"), min_size=1, max_size=5).map(
        lambda ks: tuple(collapse(ks))
    )
    return st.dictionaries(keys, st.integers(1, 5), min_size=min_size, max_size=6)


@settings(deadline=None, max_examples=200)
@given(converting=paths_strategy(1), null=paths_strategy(0))
def test_removal_effects_match_brute_force(
    converting: dict[tuple[str, ...], int], null: dict[tuple[str, ...], int]
) -> None:
    got = removal_effects(converting, null)
    expected = exact_removal_effects(converting, null)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(float(value), abs=1e-9)


# -- attribute() on a database ------------------------------------------------------------------


@pytest.fixture
def example(db_url: str) -> t.Iterator[HostApp]:
    """Two purchasers:

    - user 1: google/cpc "spring" 10 days before, newsletter/email "spring" 3 days before,
      google/cpc "summer" 1 day before a 100 EUR purchase (3 touches);
    - user 2: newsletter/email "spring" 2 days before a 50 USD purchase, and a touch 200 days
      before it (outside the 90-day lookback) and one after it (not on its path);
    - user 3: no touch, a 30 EUR purchase: (direct).
    """
    env = make_app(db_url)
    with env.app.app_context():
        yield build_example(env)


def build_example(env: HostApp) -> HostApp:
    at = T0
    u1 = add_lead(
        env,
        [
            ("google", "cpc", "spring", at - 10 * DAY),
            ("newsletter", "email", "spring", at - 3 * DAY),
            ("google", "cpc", "summer", at - 1 * DAY),
        ],
    )
    u2 = add_lead(
        env,
        [
            ("bing", "cpc", "old", at - 200 * DAY),
            ("newsletter", "email", "spring", at - 2 * DAY),
            ("google", "cpc", "later", at + 1 * DAY),
        ],
    )
    u3 = add_lead(env)
    env.tracker.record_conversion(u1, "purchase", value=100, currency="EUR", occurred_at=at)
    env.tracker.record_conversion(u2, "purchase", value=50, currency="USD", occurred_at=at)
    env.tracker.record_conversion(u3, "purchase", value=30, currency="EUR", occurred_at=at)
    env.tracker.record_conversion(u1, "sign_up", occurred_at=at - 20 * DAY)
    return env


def by_key(rows: list[dict[str, t.Any]]) -> dict[str, dict[str, t.Any]]:
    return {row["key"]: row for row in rows}


def test_worked_example_first_and_last(example: HostApp) -> None:
    rows = example.tracker.attribute(name="purchase", model="first", by="source")
    assert rows == [
        {"key": "(direct)", "conversions": 1.0, "revenue": {"EUR": 30.0}, "spend": {},
         "roas": None, "cpa": None},
        {"key": "google", "conversions": 1.0, "revenue": {"EUR": 100.0}, "spend": {},
         "roas": None, "cpa": None},
        {"key": "newsletter", "conversions": 1.0, "revenue": {"USD": 50.0}, "spend": {},
         "roas": None, "cpa": None},
    ]  # fmt: skip
    last = by_key(example.tracker.attribute(name="purchase", model="last", by="campaign"))
    assert {k: r["conversions"] for k, r in last.items()} == {
        "(direct)": 1.0, "summer": 1.0, "spring": 1.0,
    }  # fmt: skip
    assert last["summer"]["revenue"] == {"EUR": 100.0}


def test_worked_example_linear_position_time_decay(example: HostApp) -> None:
    tracker = example.tracker
    linear = by_key(tracker.attribute(name="purchase", model="linear", by="source"))
    # User 1: google 2/3, newsletter 1/3 of 100 EUR; user 2: newsletter 1 of 50 USD.
    assert linear["google"]["conversions"] == pytest.approx(2 / 3, abs=1e-6)
    assert linear["newsletter"]["conversions"] == pytest.approx(1 + 1 / 3, abs=1e-6)
    assert linear["newsletter"]["revenue"] == pytest.approx({"EUR": 100 / 3, "USD": 50.0}, abs=1e-5)
    position = by_key(tracker.attribute(name="purchase", model="position", by="campaign"))
    # User 1's three touches: spring 0.4 + spring 0.2 (between), summer 0.4.
    assert position["spring"]["conversions"] == pytest.approx(0.6 + 1.0)
    assert position["summer"]["revenue"] == pytest.approx({"EUR": 40.0})
    decay = by_key(tracker.attribute(name="purchase", model="time_decay", by="medium"))
    # Ages 10, 3, 1 days, half-life 7: weights 2^(-10/7), 2^(-3/7), 2^(-1/7).
    w = [2 ** (-10 / 7), 2 ** (-3 / 7), 2 ** (-1 / 7)]
    cpc = (w[0] + w[2]) / sum(w)
    assert decay["cpc"]["conversions"] == pytest.approx(cpc, abs=1e-6)
    assert decay["email"]["conversions"] == pytest.approx(1 + w[1] / sum(w), abs=1e-6)
    assert decay["cpc"]["revenue"] == pytest.approx({"EUR": 100 * cpc}, abs=1e-4)


def test_channels_and_names(example: HostApp) -> None:
    rows = by_key(example.tracker.attribute(name="purchase", model="last", by="channel"))
    assert set(rows) == {"(direct)", "Paid Search", "Email"}
    signups = example.tracker.attribute(name="sign_up", model="first", by="channel")
    # 20 days before T0 user 1 had no touch yet.
    assert signups == [
        {"key": "(direct)", "conversions": 1.0, "revenue": {}, "spend": {}, "roas": None,
         "cpa": None}
    ]  # fmt: skip
    every = example.tracker.attribute(model="first", by="channel")
    assert sum(row["conversions"] for row in every) == pytest.approx(4.0)


def test_date_range(example: HostApp) -> None:
    tracker = example.tracker
    day = T0.date()
    assert tracker.attribute(name="purchase", start=day + DAY) == []
    assert tracker.attribute(name="purchase", end=day - DAY) == []
    rows = tracker.attribute(name="purchase", start=day, end=day)
    assert sum(r["conversions"] for r in rows) == pytest.approx(3.0)
    assert tracker.attribute(name="purchase", start="2025-03-01", end="2025-03-01") == rows


def test_lookback_is_configurable(example: HostApp) -> None:
    from flask import current_app

    # A 2-day lookback keeps only user 1's "summer" touch (1 day before) and user 2's
    # newsletter (2 days before); the setting applies to credits computed from now on.
    current_app.config["UTM_TRACKER_LOOKBACK_DAYS"] = 2
    result = example.app.test_cli_runner().invoke(args=["utm", "rebuild"])
    assert result.exit_code == 0, result.output
    rows = by_key(example.tracker.attribute(name="purchase", model="linear", by="campaign"))
    assert {k: r["conversions"] for k, r in rows.items()} == {
        "(direct)": 1.0, "summer": 1.0, "spring": 1.0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "u_shaped"}, "Unknown attribution model"),
        ({"by": "term"}, "Unknown dimension"),
        ({"start": "yesterday"}, "start must be a date"),
        ({"start": date(2025, 2, 1), "end": date(2025, 1, 1)}, "start must not be after"),
    ],
)
def test_bad_arguments(env: HostApp, kwargs: dict[str, t.Any], message: str) -> None:
    with env.app.app_context(), pytest.raises(ValueError, match=message):
        env.tracker.attribute(**kwargs)


def test_data_driven_worked_example(db_url: str) -> None:
    """Converting: (a, b) and (a), 1 conversion each (10 and 20 EUR); null: 100 users (b).

    start->a 2, start->b 100; a->b 1, a->conv 1; b->conv 1, b->null 100.
    P(conv) = 2/102 (1/2 + 1/2 * 1/101) + 100/102 * 1/101.
    Without a: 100/102 * 1/101. Without b: 2/102 * 1/2.
    """
    p = Fraction(2, 102) * (Fraction(1, 2) + Fraction(1, 2) * Fraction(1, 101)) + Fraction(
        100, 102 * 101
    )
    re_a = 1 - Fraction(100, 102 * 101) / p
    re_b = 1 - Fraction(2, 102 * 2) / p
    share_a = re_a / (re_a + re_b)
    env = make_app(db_url)
    with env.app.app_context():
        one = add_lead(env, [("a", "x", "", T0 - 2 * DAY), ("b", "x", "", T0 - DAY)])
        two = add_lead(env, [("a", "x", "", T0 - DAY)])
        for _ in range(100):
            add_lead(env, [("b", "x", "", T0 - DAY)])
        env.tracker.record_conversion(one, "purchase", value=10, currency="EUR", occurred_at=T0)
        env.tracker.record_conversion(two, "purchase", value=20, currency="EUR", occurred_at=T0)
        # The null users' paths were written around the extension (ORM inserts): rebuild.
        assert env.app.test_cli_runner().invoke(args=["utm", "rebuild"]).exit_code == 0
        result = conversion_reports.report(
            env.tracker, name="purchase", model="data_driven", by="source"
        )
        assert result.used == "data_driven" and result.null_paths == 100
        rows = by_key(result.rows)
        assert rows["a"]["conversions"] == pytest.approx(float(2 * share_a))
        assert rows["b"]["conversions"] == pytest.approx(float(2 * (1 - share_a)))
        assert rows["a"]["revenue"] == pytest.approx({"EUR": float(30 * share_a)})
        # A conversion without a touch is (direct), outside the chain.
        three = add_lead(env)
        env.tracker.record_conversion(three, "purchase", value=5, currency="USD", occurred_at=T0)
        rows = by_key(env.tracker.attribute(name="purchase", model="data_driven", by="source"))
        assert rows["(direct)"]["conversions"] == 1.0
        assert rows["(direct)"]["revenue"] == {"USD": 5.0}
        assert rows["a"]["conversions"] == pytest.approx(float(2 * share_a))


def test_data_driven_falls_back_to_linear(example: HostApp) -> None:
    result = conversion_reports.report(
        example.tracker, name="purchase", model="data_driven", by="source"
    )
    assert result.used == "linear" and result.null_paths is not None
    assert result.null_paths < attribution.MIN_NULL_PATHS
    assert "linear" in result.notes[0]
    assert result.rows == example.tracker.attribute(name="purchase", model="linear", by="source")
