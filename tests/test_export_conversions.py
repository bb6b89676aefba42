"""``flask utm export-conversions``: Google Ads' and Microsoft Advertising's upload files."""

from __future__ import annotations

import typing as t
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from .conftest import HostApp

HEADER = "{},Conversion Name,Conversion Time,Conversion Value,Conversion Currency"
#: A Monday in winter (Paris is UTC+1) and one in summer (UTC+2).
WINTER = datetime(2026, 1, 12, 9, 30, 5, tzinfo=timezone.utc)
SUMMER = datetime(2026, 7, 13, 23, 15, 0, tzinfo=timezone.utc)


class Data:
    """Users, their touches and their conversions, written straight to the host's tables."""

    def __init__(self, env: HostApp) -> None:
        self.env = env
        self.touches = 0

    def user(self, email: str) -> int:
        with self.env.app.app_context():
            user = self.env.User(email=email)
            self.env.db.session.add(user)
            self.env.db.session.commit()
            return int(user.id)

    def touch(self, user: int, at: datetime, **clicks: str) -> None:
        self.touches += 1
        columns = {k: v for k, v in clicks.items() if k in ("gclid", "msclkid", "fbclid")}
        with self.env.app.app_context():
            self.env.db.session.add(
                self.env.tracker.LeadSource(
                    user_id=user,
                    touch_id=f"touch-{self.touches}",
                    timestamp=at,
                    click_ids=clicks,
                    **columns,
                )
            )
            self.env.db.session.commit()

    def conversion(
        self,
        user: int,
        at: datetime,
        *,
        name: str = "purchase",
        value: str | None = "49.90",
        currency: str | None = "EUR",
    ) -> None:
        with self.env.app.app_context():
            self.env.db.session.add(
                self.env.tracker.Conversion(
                    user_id=user,
                    name=name,
                    value=Decimal(value) if value is not None else None,
                    currency=currency,
                    occurred_at=at,
                )
            )
            self.env.db.session.commit()


def export(env: HostApp, *args: str, platform: str = "google-ads") -> t.Any:
    return env.app.test_cli_runner().invoke(
        args=["utm", "export-conversions", "--platform", platform, "--name", "purchase", *args]
    )


def lines(result: t.Any) -> list[str]:
    assert result.exit_code == 0, (result.output, result.exception)
    return t.cast(list[str], result.stdout.splitlines())


def test_google_ads_file_has_the_upload_layout(env: HostApp) -> None:
    data = Data(env)
    ann, bob, cat, dan = (data.user(f"{n}@example.com") for n in ("ann", "bob", "cat", "dan"))
    data.touch(ann, WINTER - timedelta(days=3), gclid="Cj0KCQiA-gclid_Ann")
    data.conversion(ann, WINTER)
    data.touch(bob, WINTER - timedelta(days=1), gbraid="0AAAAA-gbraid")
    data.conversion(bob, WINTER, value="100.0000", currency="USD")
    data.touch(cat, WINTER - timedelta(hours=1), wbraid="1BBBB-wbraid")
    data.conversion(cat, WINTER, value=None, currency=None)
    data.touch(dan, WINTER - timedelta(hours=1), fbclid="IwAR-not-google")
    data.conversion(dan, WINTER)
    assert lines(export(env)) == [
        "Parameters:TimeZone=UTC",
        HEADER.format("Google Click ID"),
        "Cj0KCQiA-gclid_Ann,purchase,2026-01-12 09:30:05,49.9,EUR",
        "0AAAAA-gbraid,purchase,2026-01-12 09:30:05,100,USD",
        "1BBBB-wbraid,purchase,2026-01-12 09:30:05,,",
    ]


def test_one_google_click_per_conversion_by_the_last_touch(env: HostApp) -> None:
    data = Data(env)
    ann, bob = data.user("ann@example.com"), data.user("bob@example.com")
    # The same touch holding two: gclid wins over gbraid, and only one is written.
    data.touch(ann, WINTER - timedelta(days=2), gclid="G-ann", gbraid="B-ann")
    # Bob's last Google click is a wbraid, later than his gclid: the last touch wins.
    data.touch(bob, WINTER - timedelta(days=5), gclid="G-bob-old")
    data.touch(bob, WINTER - timedelta(days=1), wbraid="W-bob")
    data.touch(bob, WINTER + timedelta(minutes=1), gclid="G-bob-after")  # after: not in path
    data.conversion(ann, WINTER)
    data.conversion(bob, WINTER)
    assert lines(export(env))[2:] == [
        "G-ann,purchase,2026-01-12 09:30:05,49.9,EUR",
        "W-bob,purchase,2026-01-12 09:30:05,49.9,EUR",
    ]


def test_clicks_outside_the_window_are_not_used(env: HostApp) -> None:
    data = Data(env)
    ann = data.user("ann@example.com")
    data.touch(ann, WINTER - timedelta(days=91), gclid="G-too-old")
    data.conversion(ann, WINTER)
    assert lines(export(env))[2:] == []
    assert lines(export(env, "--window-days", "92"))[2:] == [
        "G-too-old,purchase,2026-01-12 09:30:05,49.9,EUR"
    ]


def test_conversion_time_is_in_the_files_time_zone(env: HostApp) -> None:
    data = Data(env)
    ann = data.user("ann@example.com")
    data.touch(ann, WINTER - timedelta(days=1), gclid="G-ann")
    data.conversion(ann, WINTER)
    data.conversion(ann, SUMMER)
    assert lines(
        export(env, "--timezone", "Europe/Paris", "--conversion-name", "Offline sale")
    ) == [
        "Parameters:TimeZone=Europe/Paris",
        HEADER.format("Google Click ID"),
        "G-ann,Offline sale,2026-01-12 10:30:05,49.9,EUR",
    ]
    # The summer conversion's click is older than the window.
    assert lines(export(env, "--timezone", "Europe/Paris", "--window-days", "365"))[3] == (
        "G-ann,purchase,2026-07-14 01:15:00,49.9,EUR"
    )


def test_start_and_end_are_days_in_the_time_zone(env: HostApp) -> None:
    data = Data(env)
    ann = data.user("ann@example.com")
    data.touch(ann, SUMMER - timedelta(days=1), gclid="G-ann")
    data.conversion(ann, SUMMER)  # 2026-07-13 in UTC, 2026-07-14 in Paris
    assert len(lines(export(env, "--start", "2026-07-14"))) == 2
    assert len(lines(export(env, "--start", "2026-07-14", "--timezone", "Europe/Paris"))) == 3
    assert len(lines(export(env, "--end", "2026-07-13", "--timezone", "Europe/Paris"))) == 2
    assert len(lines(export(env, "--start", "2026-07-13", "--end", "2026-07-13"))) == 3


def test_only_the_named_conversions(env: HostApp) -> None:
    data = Data(env)
    ann = data.user("ann@example.com")
    data.touch(ann, WINTER - timedelta(days=1), gclid="G-ann")
    data.conversion(ann, WINTER, name="sign_up")
    assert lines(export(env))[2:] == []


def test_microsoft_ads_file_uses_the_msclkid(env: HostApp) -> None:
    data = Data(env)
    ann, bob = data.user("ann@example.com"), data.user("bob@example.com")
    data.touch(ann, WINTER - timedelta(days=1), msclkid="f894f652ea334e739002f7167ab8f8e3")
    data.touch(bob, WINTER - timedelta(days=1), gclid="G-bob")
    data.conversion(ann, WINTER)
    data.conversion(bob, WINTER)
    assert lines(export(env, platform="microsoft-ads")) == [
        "Parameters:TimeZone=UTC",
        HEADER.format("Microsoft Click ID"),
        "f894f652ea334e739002f7167ab8f8e3,purchase,2026-01-12 09:30:05,49.9,EUR",
    ]


def test_many_conversions_across_batches(env: HostApp) -> None:
    with env.app.app_context():
        users = env.User.__table__
        env.db.session.execute(
            sa.insert(users), [{"email": f"u{i}@example.com"} for i in range(1205)]
        )
        ids = env.db.session.scalars(sa.select(users.c.id).order_by(users.c.id)).all()
        env.db.session.execute(
            sa.insert(env.tracker.LeadSource.__table__),
            [
                {
                    "user_id": uid,
                    "touch_id": "t",
                    "timestamp": WINTER - timedelta(days=1),
                    "click_ids": {"gclid": f"G{uid}"},
                    "gclid": f"G{uid}",
                    "medium": "cpc",
                    "source": "google",
                    "campaign": "",
                    "term": "",
                    "content": "",
                    "custom_tags": {},
                    "channel": "Paid Search",
                    "created_at": WINTER,
                }
                for uid in ids
            ],
        )
        env.db.session.execute(
            sa.insert(env.tracker.Conversion.__table__),
            [
                {"user_id": uid, "name": "purchase", "occurred_at": WINTER, "created_at": WINTER}
                for uid in ids
            ],
        )
        env.db.session.commit()
    rows = lines(export(env))[2:]
    assert sorted(row.split(",")[0] for row in rows) == sorted(f"G{uid}" for uid in ids)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timezone", "Mars/Olympus"], "'Mars/Olympus' is not a time zone name"),
        (["--timezone", "../etc/passwd"], "is not a time zone name"),
        (["--start", "2026-13-01"], "'2026-13-01' does not match the format"),
        (["--start", "2026-02-01", "--end", "2026-01-01"], "--start 2026-02-01 is after --end"),
        (["--window-days", "0"], "0 is not in the range"),
    ],
)
def test_bad_input_is_a_clear_error(env: HostApp, args: list[str], message: str) -> None:
    result = export(env, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Parameters:TimeZone" not in result.output


def test_platform_and_name_are_required(env: HostApp) -> None:
    result = env.app.test_cli_runner().invoke(args=["utm", "export-conversions", "--name", "x"])
    assert result.exit_code == 2
    assert "--platform" in result.output
