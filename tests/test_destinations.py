"""The delivery outbox and the platforms' payloads, against a local stand-in server."""

from __future__ import annotations

import hashlib
import json
import threading
import typing as t
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask_utm_tracker.destinations import Outbox, configured
from flask_utm_tracker.platforms import identity
from flask_utm_tracker.platforms.base import Click, Event
from flask_utm_tracker.platforms.meta import Meta, fbc

from .conftest import HostApp, make_app
from .platform_server import PlatformServer
from .servers import free_port

NOW = datetime.now(timezone.utc).replace(microsecond=0)
FBCLID = "IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- payload builders on the documented examples ---------------------------------------------


def test_fbc_is_fb_1_the_click_time_in_ms_and_the_fbclid_as_it_came() -> None:
    # Meta's "fbp and fbc parameters": fb.<subdomainIndex>.<creationTime ms>.<fbclid>, case kept.
    assert fbc("AbCdEfGhIjKlMnOpQrStUvWxYz1234567890", 1554763741205) == (
        "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890"
    )


def test_emails_are_trimmed_lowercased_and_hashed() -> None:
    # The platforms' example: " Person@Example.com " -> person@example.com -> 542d2401...
    assert identity.hashed_email(" Person@Example.com ") == (
        "542d240129883c019e106e3b1b2d3f3cb3537c43c425364de8e951d5a3083345"
    )
    assert identity.hashed_email("not an email") is None
    already = sha("joe@example.com")
    assert identity.hashed_email(already) == already


def test_google_also_drops_the_dots_of_gmail_addresses() -> None:
    assert identity.normal_email("Jane.Doe@GMail.com ", google=True) == "janedoe@gmail.com"
    assert identity.normal_email("jane.doe@example.com", google=True) == "jane.doe@example.com"
    assert identity.normal_email("Jane.Doe@gmail.com") == "jane.doe@gmail.com"


def test_phones_keep_digits_with_country_code_meta_without_plus_google_with() -> None:
    # Meta: "+1 (616) 954-78 88" -> 16169547888; "+44 844 412 4653" -> 448444124653 (dc008f..).
    assert identity.phone_digits("+1 (616) 954-78 88") == "16169547888"
    assert identity.hashed_phone("+44 844 412 4653") == (
        "dc008fda46e2e64002cf2f82a4906236282d431c4f75e5b60bfe79fc48546383"
    )
    assert identity.hashed_phone("0044 844 412 4653") == identity.hashed_phone("+448444124653")
    assert identity.hashed_phone("+1 616 954 7888", plus=True) == sha("+16169547888")
    # A national number has no country code to add: not sent rather than sent wrong.
    assert identity.hashed_phone("0616 954 7888") is None
    assert identity.hashed_phone("+1 call me") is None


def test_meta_event_has_the_documented_fields() -> None:
    clicked = datetime(2026, 11, 20, 10, 0, 0, 123000, tzinfo=timezone.utc)
    event = Event(
        conversion_id=1,
        name="purchase",
        platform_event="Purchase",
        event_id="A-1001",
        occurred_at=datetime(2026, 11, 21, 9, 30, tzinfo=timezone.utc),
        value=Decimal("49.9000"),
        currency="EUR",
        clicks={"fbclid": Click(FBCLID, clicked, None)},
        landing_url="https://shop.example/landing?fbclid=x&utm_source=fb#top",
        user_data={"email": "Person@Example.com", "phone": "+1 (616) 954-78 88"},
    )
    meta = Meta("meta", {"pixel_id": "123", "access_token": "t"})
    assert meta.event(event) == {
        "event_name": "Purchase",
        "event_time": int(event.occurred_at.timestamp()),
        "action_source": "website",
        "event_id": "A-1001",
        "event_source_url": "https://shop.example/landing",
        "user_data": {
            "fbc": f"fb.1.{int(clicked.timestamp() * 1000)}.{FBCLID}",
            "em": [sha("person@example.com")],
            "ph": [sha("16169547888")],
        },
        "custom_data": {"value": 49.9, "currency": "EUR"},
    }


# -- a host app with conversions -------------------------------------------------------------


def add_conversion(
    env: HostApp,
    email: str,
    *,
    ago: timedelta = timedelta(hours=1),
    clicks: dict[str, str] | None = None,
    value: str | None = "49.90",
    order_id: str | None = None,
    name: str = "purchase",
) -> int:
    """A user with one touch (``clicks``) an hour before a conversion ``ago`` ago."""
    with env.app.app_context():
        db = env.db
        user = db.session.scalar(sa.select(env.User).where(env.User.email == email))
        if user is None:
            user = env.User(email=email)
            db.session.add(user)
            db.session.flush()
        occurred = NOW - ago
        if clicks is not None:
            db.session.add(
                env.tracker.LeadSource(
                    user_id=user.id,
                    touch_id=f"t-{email}-{len(user.lead_sources)}",
                    timestamp=occurred - timedelta(hours=1),
                    click_ids=clicks,
                    landing_url="https://shop.example/landing?utm_source=ads",
                    **{k: v for k, v in clicks.items() if k in ("gclid", "fbclid", "msclkid")},
                )
            )
        conversion = env.tracker.Conversion(
            user_id=user.id,
            name=name,
            value=Decimal(value) if value is not None else None,
            currency="EUR" if value is not None else None,
            order_id=order_id,
            occurred_at=occurred,
        )
        db.session.add(conversion)
        db.session.commit()
        return int(conversion.id)


def destination(server: PlatformServer, platform: str = "meta", **extra: t.Any) -> dict[str, t.Any]:
    base: dict[str, dict[str, t.Any]] = {
        "meta": {
            "pixel_id": "1234567890",
            "access_token": "meta-token",
            "events": {"purchase": "Purchase"},
        },
        "google": {
            "platform": "google-ads",
            "customer_id": "123-456-7890",
            "access_token": "ya29.token",
            "events": {"purchase": "987654321"},
        },
        "tiktok": {
            "pixel_id": "CABC123",
            "access_token": "tt-token",
            "events": {"purchase": "CompletePayment"},
        },
        "linkedin": {"access_token": "li-token", "events": {"purchase": "104004"}},
    }
    config = {"platform": platform, **base[platform], "api_url": f"{server.url}/{platform}"}
    return {**config, **extra}


def configure(env: HostApp, **destinations: dict[str, t.Any]) -> None:
    # Set after init_app: the key is read by the commands, when they run.
    env.app.config["UTM_TRACKER_DESTINATIONS"] = destinations


def run(env: HostApp, *args: str) -> t.Any:
    result = env.app.test_cli_runner().invoke(args=["utm", "destinations", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def deliveries(env: HostApp) -> dict[int, t.Any]:
    with env.app.app_context():
        rows = env.db.session.execute(sa.select(env.tracker.Delivery.__table__)).all()
    return {row.conversion_id: row for row in rows}


@pytest.fixture
def server() -> t.Iterator[PlatformServer]:
    with PlatformServer() as running:
        yield running
        assert running.violations == []


# -- delivery --------------------------------------------------------------------------------


def test_push_sends_each_conversion_once(env: HostApp, server: PlatformServer) -> None:
    first = add_conversion(env, "a@example.com", clicks={"fbclid": FBCLID}, order_id="A-1")
    add_conversion(env, "b@example.com", clicks={"fbclid": "IwAR-b"}, name="sign_up")
    configure(env, meta=destination(server))
    assert "meta: 1 sent" in run(env, "push").output
    second = add_conversion(env, "c@example.com", clicks={"fbclid": "IwAR-c"})
    assert "meta: 1 sent" in run(env, "push").output
    assert "meta: 0 sent" in run(env, "push", "--retry-now").output

    events = server.events("meta")
    assert [e["event_id"] for e in events] == ["A-1", f"utm-conversion-{second}"]
    assert events[0]["event_name"] == "Purchase"
    assert events[0]["user_data"]["fbc"].endswith(f".{FBCLID}")
    assert events[0]["event_source_url"] == "https://shop.example/landing"
    assert server.requests("meta")[0].body["access_token"] == "meta-token"
    assert deliveries(env)[first].status == "sent"
    assert deliveries(env)[first].sent_value == Decimal("49.90")
    status = run(env, "status").output
    assert "meta (Meta Conversions API)" in status
    assert "0 pending, 0 sending, 2 sent, 0 failed" in status


def test_two_concurrent_pushes_send_each_conversion_once(db_url: str) -> None:
    env = make_app(db_url)
    ids = [
        add_conversion(env, f"u{i}@example.com", clicks={"fbclid": f"IwAR-{i}"}) for i in range(40)
    ]
    with PlatformServer(delay=0.02) as server:
        configure(env, meta=destination(server, batch_size=3))
        config = env.app.config
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []
        sent_by_push: list[int] = []

        def push() -> None:
            try:
                with env.app.app_context():
                    (dest,) = configured(config)
                    barrier.wait()
                    sent_by_push.append(Outbox(env.tracker, config).push(dest).sent)
            except BaseException as err:  # reported below
                errors.append(err)

        threads = [threading.Thread(target=push) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert server.violations == []
        sent = sorted(int(e["event_id"].rsplit("-", 1)[1]) for e in server.events("meta"))
    assert sent == ids
    assert sum(sent_by_push) == len(ids)
    assert {row.status for row in deliveries(env).values()} == {"sent"}


@pytest.mark.parametrize(
    ("status", "headers", "first_wait"),
    [(500, {}, timedelta(minutes=1)), (429, {"Retry_After": "600"}, timedelta(minutes=10))],
)
def test_429_and_5xx_are_retried_later_with_backoff(
    env: HostApp,
    server: PlatformServer,
    status: int,
    headers: dict[str, str],
    first_wait: timedelta,
) -> None:
    conversion = add_conversion(env, "a@example.com", clicks={"fbclid": FBCLID})
    configure(env, meta=destination(server))
    server.script("meta", status, {"error": {"message": "try later", "code": 2}}, **headers)
    assert "1 to retry" in run(env, "push").output
    row = deliveries(env)[conversion]
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.next_attempt_at - row.updated_at == first_wait
    assert f"HTTP {status}" in row.last_error

    run(env, "push")  # not due yet: nothing sent
    assert len(server.requests("meta")) == 1
    assert "waiting for a retry" in run(env, "status").output

    server.script("meta", 503)
    run(env, "push", "--retry-now")
    row = deliveries(env)[conversion]
    assert row.attempts == 2
    assert row.next_attempt_at - row.updated_at == timedelta(minutes=2)

    assert "1 sent" in run(env, "push", "--retry-now").output
    assert deliveries(env)[conversion].status == "sent"
    assert len(server.requests("meta")) == 3


def test_meta_rate_limit_codes_are_retried(env: HostApp, server: PlatformServer) -> None:
    conversion = add_conversion(env, "a@example.com", clicks={"fbclid": FBCLID})
    configure(env, meta=destination(server))
    server.script(
        "meta", 400, {"error": {"message": "Application request limit reached", "code": 4}}
    )
    run(env, "push")
    assert deliveries(env)[conversion].status == "pending"


def test_network_errors_are_retried(env: HostApp) -> None:
    conversion = add_conversion(env, "a@example.com", clicks={"fbclid": FBCLID})
    closed = f"http://127.0.0.1:{free_port()}"
    configure(
        env,
        meta={
            "platform": "meta",
            "pixel_id": "1",
            "access_token": "t",
            "events": {"purchase": "Purchase"},
            "api_url": closed,
        },
    )
    assert "1 to retry" in run(env, "push").output
    row = deliveries(env)[conversion]
    assert row.status == "pending"
    assert "network error" in row.last_error


def test_retries_give_up_after_ten_attempts(env: HostApp, server: PlatformServer) -> None:
    conversion = add_conversion(env, "a@example.com", clicks={"fbclid": FBCLID})
    configure(env, meta=destination(server))
    server.script("meta", 500, times=10)
    for _ in range(11):
        run(env, "push", "--retry-now")
    row = deliveries(env)[conversion]
    assert (row.status, row.attempts) == ("failed", 10)
    assert "gave up after 10 attempts" in row.last_error
    assert len(server.requests("meta")) == 10


def test_4xx_is_recorded_as_failed_with_the_platforms_message(
    env: HostApp, server: PlatformServer
) -> None:
    conversion = add_conversion(env, "a@example.com", clicks={"fbclid": FBCLID})
    configure(env, meta=destination(server))
    server.script("meta", 400, {"error": {"message": "Invalid OAuth access token.", "code": 190}})
    assert "1 failed" in run(env, "push").output
    row = deliveries(env)[conversion]
    assert row.status == "failed"
    assert row.last_error == "HTTP 400: Invalid OAuth access token."
    run(env, "push", "--retry-now")  # a failure is final
    assert len(server.requests("meta")) == 1
    status = run(env, "status").output
    assert "1 failed" in status
    assert (
        f"conversion {conversion} (failed, attempt 1): HTTP 400: Invalid OAuth access token."
        in status
    )


def test_batches_hold_at_most_1000_events(env: HostApp, server: PlatformServer) -> None:
    with env.app.app_context():
        users = env.User.__table__
        env.db.session.execute(
            sa.insert(users), [{"email": f"u{i}@example.com"} for i in range(1001)]
        )
        ids = env.db.session.scalars(sa.select(users.c.id).order_by(users.c.id)).all()
        env.db.session.execute(
            sa.insert(env.tracker.LeadSource.__table__),
            [
                {
                    "user_id": uid,
                    "touch_id": f"t{uid}",
                    "timestamp": NOW - timedelta(hours=2),
                    "click_ids": {"fbclid": f"IwAR{uid}"},
                    "fbclid": f"IwAR{uid}",
                    "medium": "social",
                    "source": "facebook",
                    "campaign": "",
                    "term": "",
                    "content": "",
                    "custom_tags": {},
                    "channel": "Paid Social",
                    "created_at": NOW,
                }
                for uid in ids
            ],
        )
        env.db.session.execute(
            sa.insert(env.tracker.Conversion.__table__),
            [
                {
                    "user_id": uid,
                    "name": "purchase",
                    "occurred_at": NOW - timedelta(hours=1),
                    "created_at": NOW,
                }
                for uid in ids
            ],
        )
        env.db.session.commit()
    configure(env, meta=destination(server))
    assert "1001 sent" in run(env, "push").output
    assert [len(r.events) for r in server.requests("meta")] == [1000, 1]


def test_events_older_than_7_days_are_expired_not_sent(
    env: HostApp, server: PlatformServer
) -> None:
    old = add_conversion(env, "a@example.com", ago=timedelta(days=8), clicks={"fbclid": FBCLID})
    recent = add_conversion(env, "b@example.com", ago=timedelta(days=6), clicks={"fbclid": FBCLID})
    configure(env, meta=destination(server))
    assert "1 sent" in run(env, "push").output
    rows = deliveries(env)
    assert rows[old].status == "expired"
    assert "older than the 7 days" in rows[old].last_error
    assert rows[recent].status == "sent"
    assert len(server.events("meta")) == 1
    assert "1 expired" in run(env, "status").output


def test_dry_run_prints_the_requests_and_sends_or_records_nothing(
    env: HostApp, server: PlatformServer
) -> None:
    add_conversion(env, "a@example.com", clicks={"fbclid": FBCLID}, order_id="A-1")
    add_conversion(env, "b@example.com", clicks={"gclid": "only-google"})
    configure(env, meta=destination(server))
    result = run(env, "push", "--dry-run")
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("{")]
    request = json.loads(line)
    assert request["url"] == f"{server.url}/meta/1234567890/events"
    assert request["body"]["access_token"] == "***"
    assert [e["event_id"] for e in request["body"]["data"]] == ["A-1"]
    assert "would send 1, not send 1" in result.stderr
    assert "skipped: no fbclid in its path" in result.stderr
    assert server.received == []
    assert deliveries(env) == {}


def test_contact_data_only_from_the_callback_and_only_when_allowed(
    env: HostApp, server: PlatformServer
) -> None:
    @env.tracker.user_data
    def contact(user: t.Any) -> dict[str, str]:
        return {"email": f" {user.email.upper()} ", "phone": "+1 (616) 954-78 88"}

    add_conversion(env, "a@example.com", clicks={"fbclid": FBCLID})
    add_conversion(env, "b@example.com")  # no click: only the email can match it
    configure(
        env,
        meta=destination(server),
        meta_hashed=destination(server, send_user_data=True, pixel_id="999"),
    )
    assert "meta: 1 sent, 0 to retry, 0 failed, 0 expired, 1 skipped" in run(env, "push").output
    plain, hashed = server.requests("meta")
    assert "em" not in plain.events[0]["user_data"]
    users = [e["user_data"] for e in hashed.events]
    assert [u["em"] for u in users] == [[sha("a@example.com")], [sha("b@example.com")]]
    assert users[0]["ph"] == [sha("16169547888")]
    assert "fbc" not in users[1]


def test_no_consent_means_nothing_is_sent(env: HostApp, server: PlatformServer) -> None:
    @env.tracker.user_data
    def contact(user: t.Any) -> dict[str, t.Any]:
        return {"email": user.email, "ad_consent": user.email.startswith("yes")}

    add_conversion(env, "yes@example.com", clicks={"fbclid": FBCLID})
    refused = add_conversion(env, "no@example.com", clicks={"fbclid": FBCLID})
    configure(env, meta=destination(server))
    assert "1 sent" in run(env, "push").output
    assert deliveries(env)[refused].status == "skipped"
    assert "not consented" in deliveries(env)[refused].last_error
    assert len(server.events("meta")) == 1


def test_require_consent_sends_only_what_the_callback_allows(
    env: HostApp, server: PlatformServer
) -> None:
    conversion = add_conversion(env, "a@example.com", clicks={"fbclid": FBCLID})
    configure(env, meta=destination(server, require_consent=True))
    run(env, "push")
    assert deliveries(env)[conversion].status == "skipped"
    assert server.received == []


def test_a_restatement_after_sending_is_reported(env: HostApp, server: PlatformServer) -> None:
    conversion = add_conversion(env, "a@example.com", clicks={"fbclid": FBCLID}, order_id="A-1")
    configure(env, meta=destination(server))
    run(env, "push")
    with env.app.app_context():
        row = env.db.session.get(env.tracker.Conversion, conversion)
        row.value = Decimal("0")  # a refund
        env.db.session.commit()
    assert "0 sent" in run(env, "push").output
    status = run(env, "status").output
    assert "1 restated after they were sent" in status
    assert "not supported" in status


# -- the other platforms ---------------------------------------------------------------------


def test_google_data_manager_gets_one_google_click_per_conversion(
    env: HostApp, server: PlatformServer
) -> None:
    add_conversion(env, "a@example.com", clicks={"gclid": "Cj0KCQ", "gbraid": "0AAAA"})
    add_conversion(env, "b@example.com", clicks={"wbraid": "1BBBB"}, order_id="B-1")
    add_conversion(env, "c@example.com", clicks={"fbclid": FBCLID})
    configure(env, google=destination(server, "google"))
    assert "2 sent" in run(env, "push").output
    (request,) = server.requests("google")
    assert request.headers["Authorization"] == "Bearer ya29.token"
    assert request.body["destinations"] == [
        {
            "reference": "987654321",
            "operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
            "productDestinationId": "987654321",
        }
    ]
    ids = [e["adIdentifiers"] for e in request.events]
    assert ids == [{"gclid": "Cj0KCQ"}, {"wbraid": "1BBBB"}]
    assert request.events[1]["transactionId"] == "B-1"
    assert request.events[0]["conversionValue"] == 49.9
    assert request.events[0]["currency"] == "EUR"


def test_googles_400_is_recorded_with_its_message(env: HostApp, server: PlatformServer) -> None:
    first = add_conversion(env, "a@example.com", clicks={"gclid": "Cj0KCQ"})
    configure(env, google=destination(server, "google"))
    server.script(
        "google",
        400,
        {"error": {"code": 400, "message": "Bad conversion action", "status": "INVALID_ARGUMENT"}},
    )
    run(env, "push")
    assert deliveries(env)[first].last_error == "HTTP 400: Bad conversion action"


def test_tiktok_events_api(env: HostApp, server: PlatformServer) -> None:
    sent = add_conversion(env, "a@example.com", clicks={"ttclid": "E.C.P.abc"})
    refused = add_conversion(env, "b@example.com", clicks={"ttclid": "E.C.P.def"})
    configure(env, tiktok=destination(server, "tiktok", batch_size=1))
    server.script("tiktok", 200, {"code": 0, "message": "OK"})
    server.script("tiktok", 200, {"code": 40001, "message": "Invalid access token"})
    run(env, "push")
    rows = deliveries(env)
    assert rows[sent].status == "sent"
    assert rows[refused].status == "failed"
    assert rows[refused].last_error == "TikTok code 40001: Invalid access token"
    first = server.requests("tiktok")[0]
    assert first.headers["Access-Token"] == "tt-token"
    assert first.events[0]["user"] == {"ttclid": "E.C.P.abc"}
    assert first.events[0]["properties"] == {"value": 49.9, "currency": "EUR"}


def test_linkedin_conversions_api(env: HostApp, server: PlatformServer) -> None:
    @env.tracker.user_data
    def contact(user: t.Any) -> dict[str, str]:
        return {"email": user.email}

    add_conversion(env, "a@example.com", clicks={"li_fat_id": "li-uuid-1"})
    old = add_conversion(env, "b@example.com", ago=timedelta(days=91), clicks={"li_fat_id": "x"})
    configure(env, linkedin=destination(server, "linkedin", send_user_data=True))
    assert "1 sent" in run(env, "push").output
    (request,) = server.requests("linkedin")
    (element,) = request.events
    assert element["conversion"] == "urn:lla:llaPartnerConversion:104004"
    assert element["conversionValue"] == {"currencyCode": "EUR", "amount": "49.9"}
    assert element["user"]["userIds"] == [
        {"idType": "SHA256_EMAIL", "idValue": sha("a@example.com")},
        {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "li-uuid-1"},
    ]
    assert deliveries(env)[old].status == "expired"


def test_linkedin_partial_failures_are_per_event(env: HostApp, server: PlatformServer) -> None:
    good = add_conversion(env, "a@example.com", clicks={"li_fat_id": "one"})
    bad = add_conversion(env, "b@example.com", clicks={"li_fat_id": "two"})
    configure(env, linkedin=destination(server, "linkedin"))
    server.script(
        "linkedin", 200, {"elements": [{"status": 201}, {"status": 400, "message": "Bad rule"}]}
    )
    run(env, "push")
    rows = deliveries(env)
    assert (rows[good].status, rows[bad].status) == ("sent", "failed")
    assert rows[bad].last_error == "HTTP 400: Bad rule"


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"x": {"platform": "myspace", "events": {"a": "b"}}}, "use one of 'meta'"),
        (
            {"x": {"platform": "meta", "access_token": "t", "events": {"a": "b"}}},
            "needs 'pixel_id'",
        ),
        ({"x": {"platform": "meta", "pixel_id": "1", "access_token": "t"}}, "needs 'events'"),
        (
            {
                "x": {
                    "platform": "meta",
                    "pixel_id": "1",
                    "access_token": "t",
                    "events": {"a": "b"},
                    "batch_size": 5000,
                }
            },
            "'batch_size' must be 1 to 1000",
        ),
        ([1, 2], "must be a dict of destinations"),
    ],
)
def test_a_bad_destination_is_a_clear_error(env: HostApp, config: t.Any, message: str) -> None:
    env.app.config["UTM_TRACKER_DESTINATIONS"] = config
    for command in (["push"], ["status"]):
        result = env.app.test_cli_runner().invoke(args=["utm", "destinations", *command])
        assert result.exit_code == 2
        assert message in result.output


def test_no_destinations_says_how_to_add_one(env: HostApp) -> None:
    assert "No destinations: set UTM_TRACKER_DESTINATIONS" in run(env, "push").stderr
