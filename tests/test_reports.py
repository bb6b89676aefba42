"""Attribution queries against hand-built data with known answers, on SQLite and PostgreSQL."""

from __future__ import annotations

import typing as t
from datetime import date, datetime

import pytest
import sqlalchemy as sa
from flask_utm_tracker import reports

from .builders import MARCH, add_user, at, build, by_key, make_app_with_signup, touch
from .conftest import HostApp, make_app


@pytest.fixture
def data(env: HostApp) -> t.Iterator[HostApp]:
    with env.app.app_context():
        build(env)
        yield env


def test_first_touch(data: HostApp) -> None:
    got = reports.leads(data.tracker, "channel", model="first", **MARCH)
    assert by_key(got) == {"Paid Search": 1, "Email": 1, "Referral": 1}


def test_last_touch_is_the_latest_before_sign_up(data: HostApp) -> None:
    got = reports.leads(data.tracker, "channel", model="last", **MARCH)
    assert by_key(got) == {"Organic Social": 1, "Email": 1, "Referral": 1}


def test_linear_splits_each_lead_over_its_touches(data: HostApp) -> None:
    got = by_key(reports.leads(data.tracker, "channel", model="linear", **MARCH))
    assert got == pytest.approx(
        {"Paid Search": 1 / 3, "Email": 4 / 3, "Organic Social": 1 / 3, "Referral": 1}
    )
    assert sum(got.values()) == pytest.approx(3)


def test_any_touch_counts_distinct_users_per_group(data: HostApp) -> None:
    got = reports.leads(data.tracker, "channel", model="any", **MARCH)
    assert by_key(got) == {"Email": 2, "Paid Search": 1, "Organic Social": 1, "Referral": 1}
    assert [c.key for c in got][0] == "Email"


def test_every_model_has_the_same_total(data: HostApp) -> None:
    for model in ("first", "last", "linear"):
        got = reports.leads(data.tracker, "channel", model=model)
        assert sum(c.leads for c in got) == pytest.approx(4), model
    assert reports.totals(data.tracker) == reports.Totals(leads=4, touches=7, unclaimed=0)


def test_other_dimensions(data: HostApp) -> None:
    tracker = data.tracker
    assert by_key(reports.leads(tracker, "source", model="first")) == {
        "google": 2,
        "newsletter": 1,
        "example.org": 1,
    }
    assert by_key(reports.leads(tracker, "medium", model="last")) == {
        "social": 1,
        "email": 1,
        "referral": 1,
        "cpc": 1,
    }
    assert by_key(reports.leads(tracker, "campaign", model="first", **MARCH)) == {
        "spring": 1,
        "": 2,
    }
    got = reports.leads(tracker, "campaign", model="linear", **MARCH)
    assert by_key(got) == pytest.approx({"": 1 + 1 + 1 / 3, "spring": 1 / 3, "march-news": 1 / 3})


def test_limit_keeps_the_largest(data: HostApp) -> None:
    got = reports.leads(data.tracker, "source", model="first", limit=1)
    assert got == [reports.Count("google", 2)]


def test_date_range_is_inclusive_and_by_sign_up(data: HostApp) -> None:
    tracker = data.tracker
    april = reports.leads(tracker, model="first", start=date(2024, 4, 1), end=date(2024, 4, 2))
    # dan's first touch was in February, but he signed up in April.
    assert by_key(april) == {"Organic Search": 1}
    assert reports.leads(tracker, start=date(2024, 4, 3)) == []
    one_day = reports.leads(tracker, start=date(2024, 3, 10), end=date(2024, 3, 10))
    assert by_key(one_day) == {"Email": 1}
    assert reports.totals(tracker, **MARCH) == reports.Totals(leads=3, touches=5, unclaimed=0)


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        (
            "day",
            {
                (date(2024, 3, 5), "Paid Search"): 1,
                (date(2024, 3, 10), "Email"): 1,
                (date(2024, 3, 15), "Referral"): 1,
                (date(2024, 4, 2), "Organic Search"): 1,
            },
        ),
        (
            "week",
            {
                (date(2024, 3, 4), "Paid Search"): 1,
                (date(2024, 3, 4), "Email"): 1,  # Sunday the 10th is in Monday the 4th's week
                (date(2024, 3, 11), "Referral"): 1,
                (date(2024, 4, 1), "Organic Search"): 1,
            },
        ),
        (
            "month",
            {
                (date(2024, 3, 1), "Paid Search"): 1,
                (date(2024, 3, 1), "Email"): 1,
                (date(2024, 3, 1), "Referral"): 1,
                (date(2024, 4, 1), "Organic Search"): 1,
            },
        ),
    ],
)
def test_buckets(data: HostApp, interval: str, expected: dict[tuple[date, str], float]) -> None:
    got = reports.leads(data.tracker, "channel", model="first", interval=interval)
    assert {(c.bucket, c.key): c.leads for c in got} == expected
    assert [c.bucket for c in got] == sorted(c.bucket for c in got)  # type: ignore[type-var]


def test_series_fills_every_bucket(data: HostApp) -> None:
    got = reports.series(data.tracker, model="last", interval="week", **MARCH)
    assert got.buckets == [date(2024, 2, 26), date(2024, 3, 4), date(2024, 3, 11),
                           date(2024, 3, 18), date(2024, 3, 25)]  # fmt: skip
    assert got.values == {
        "Email": [0, 1, 0, 0, 0],
        "Organic Social": [0, 1, 0, 0, 0],
        "Referral": [0, 0, 1, 0, 0],
    }
    assert got.totals == [0, 2, 1, 0, 0]
    linear = reports.series(data.tracker, model="linear", interval="month")
    assert linear.buckets == [date(2024, 3, 1), date(2024, 4, 1)]
    assert sum(linear.values["Paid Search"]) == pytest.approx(1 / 3 + 1 / 2)


def test_compare(data: HostApp) -> None:
    got = {c.key: c for c in reports.compare(data.tracker, "channel", **MARCH)}
    assert got["Paid Search"] == reports.Comparison(
        "Paid Search", first=1, last=0, linear=pytest.approx(1 / 3), touches=1
    )
    assert got["Organic Social"].first == 0 and got["Organic Social"].last == 1


@pytest.mark.parametrize("interval", ["day", "week", "month"])
def test_summary_agrees_with_the_single_queries(data: HostApp, interval: str) -> None:
    tracker = data.tracker
    span = {"start": date(2024, 2, 20), "end": date(2024, 4, 10)}
    got = reports.summary(
        tracker, interval=interval, dimensions=("channel", "source", "medium", "campaign"), **span
    )
    assert got.totals == reports.totals(tracker, **span)
    for by in reports.DIMENSIONS:
        assert got.by[by] == reports.compare(tracker, by, **span)
    for model in reports.MODELS:
        assert got.series(model) == reports.series(tracker, model=model, interval=interval, **span)
        for by in ("source", "campaign"):
            assert got.top(by, model, 2) == reports.leads(tracker, by, model=model, limit=2, **span)


def test_summary_without_interval_or_data(env: HostApp) -> None:
    with env.app.app_context():
        got = reports.summary(env.tracker)
        assert got == reports.Summary(reports.Totals(0, 0, 0), {"channel": [], "source": [],
                                      "campaign": []}, [], {})  # fmt: skip
        with pytest.raises(ValueError, match="needs both a start and an end"):
            reports.summary(env.tracker, interval="day")
        empty = reports.summary(
            env.tracker, start=date(2024, 3, 1), end=date(2024, 3, 2), interval="day"
        )
        assert empty.series("linear") == reports.Series([date(2024, 3, 1), date(2024, 3, 2)])
        assert empty.top("source") == []


def test_ties_on_timestamp_go_by_row_id(env: HostApp) -> None:
    with env.app.app_context():
        same = at(1)
        add_user(
            env,
            "tie@example.com",
            touch("Email", "newsletter", "email", same, at(2)),
            touch("Referral", "example.org", "referral", same, at(2)),
        )
        assert by_key(reports.leads(env.tracker, model="first")) == {"Email": 1}
        assert by_key(reports.leads(env.tracker, model="last")) == {"Referral": 1}


def test_no_data(env: HostApp) -> None:
    with env.app.app_context():
        add_user(env, "nobody@example.com")
        assert reports.leads(env.tracker, interval="day") == []
        assert reports.totals(env.tracker) == reports.Totals(0, 0, 0)
        assert reports.series(env.tracker) == reports.Series([])
        empty = reports.series(env.tracker, start=date(2024, 3, 1), end=date(2024, 3, 3))
        assert empty.buckets == [date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)]
        assert empty.totals == [0, 0, 0]
        assert reports.compare(env.tracker) == []


def test_unclaimed_touches_are_counted_by_received_at(env: HostApp) -> None:
    with env.app.app_context():
        touch_model = env.tracker.Touch
        for i, received in enumerate((at(1, hour=0), at(31, hour=23), at(1, month=4, hour=0))):
            env.db.session.add(touch_model(visitor_id="v1", touch_id=f"x{i}", received_at=received))
        claimed = touch_model(visitor_id="v1", touch_id="y", received_at=at(2), claimed_at=at(2))
        claimed.claimed_by = add_user(env, "claimer@example.com")
        env.db.session.add(claimed)
        env.db.session.commit()
        assert reports.totals(env.tracker, **MARCH).unclaimed == 2


def test_bad_arguments_name_the_choices(env: HostApp) -> None:
    with env.app.app_context(), pytest.raises(ValueError, match="first, last, linear, any"):
        reports.leads(env.tracker, model="middle")
    with env.app.app_context(), pytest.raises(ValueError, match="channel, source"):
        reports.leads(env.tracker, "country")


def test_helpers() -> None:
    assert reports.bucket_of(date(2024, 3, 10), "week") == date(2024, 3, 4)
    assert reports.buckets(date(2024, 1, 31), date(2024, 3, 1), "month") == [
        date(2024, 1, 1),
        date(2024, 2, 1),
        date(2024, 3, 1),
    ]
    lo, hi = reports.bounds(date(2024, 3, 1), date(2024, 3, 31))
    assert (lo, hi) == (at(1, hour=0), at(1, month=4, hour=0))


# -- a user model with its own sign-up time -----------------------------------------------------


def test_user_created_at_is_the_sign_up(db_url: str) -> None:
    env = make_app_with_signup(db_url)
    assert reports.signup_column(env.User) is not None
    assert reports.signup_column(make_app(db_url).User) is None
    with env.app.app_context():
        # Signed up on the 2nd: the touch on the 3rd (recorded at a later login) comes after.
        add_user(
            env,
            "fay@example.com",
            touch("Email", "newsletter", "email", at(1), at(3)),
            touch("Paid Search", "google", "cpc", at(3), at(3)),
            created_at=at(2),
        )
        # No created_at: the first LeadSource.created_at stands in (the 20th).
        add_user(
            env,
            "gus@example.com",
            touch("Referral", "example.org", "referral", at(19), at(20)),
            created_at=None,
        )
        assert by_key(reports.leads(env.tracker, model="last")) == {"Email": 1, "Referral": 1}
        got = reports.leads(env.tracker, model="first", interval="day")
        assert [(c.bucket, c.key) for c in got] == [
            (date(2024, 3, 2), "Email"),
            (date(2024, 3, 20), "Referral"),
        ]
        assert reports.totals(env.tracker, start=date(2024, 3, 3)).leads == 1


def test_a_naive_sign_up_time_is_utc(db_url: str) -> None:
    env = make_app_with_signup(db_url, aware=False)
    with env.app.app_context():
        if env.db.engine.dialect.name == "postgresql":
            # A session far from UTC must not move the sign-up to another day.
            sa.event.listen(
                env.db.engine,
                "connect",
                lambda conn, _: conn.execute("SET TIME ZONE 'Pacific/Kiritimati'"),
            )
            env.db.engine.dispose()
        add_user(
            env,
            "hal@example.com",
            touch("Email", "newsletter", "email", at(1), at(3)),
            created_at=datetime(2024, 3, 2, 0, 30),  # naive, UTC
        )
        got = reports.leads(env.tracker, model="first", interval="day")
        assert [(c.bucket, c.key) for c in got] == [(date(2024, 3, 2), "Email")]
        assert reports.totals(env.tracker, start=date(2024, 3, 2), end=date(2024, 3, 2)).leads == 1
