"""record_conversion: validation, idempotency on (name, order_id), concurrency, the signal."""

from __future__ import annotations

import threading
import typing as t
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask_utm_tracker import conversion_recorded, conversions

from .builders import T0, add_lead
from .conftest import HostApp, make_app


@pytest.fixture
def ctx(env: HostApp) -> t.Iterator[HostApp]:
    with env.app.app_context():
        yield env


def count(env: HostApp) -> int:
    table = env.tracker.Conversion.__table__
    with env.db.engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


def test_record_returns_the_row_and_sends_the_signal(ctx: HostApp) -> None:
    user = add_lead(ctx, [("google", "cpc", "x", T0 - timedelta(days=1))])
    seen: list[t.Any] = []

    def receiver(sender: t.Any, conversion: t.Any) -> None:
        seen.append((sender, conversion))

    conversion_recorded.connect(receiver)
    try:
        row = ctx.tracker.record_conversion(
            user, "purchase", value=49.90, currency="eur", order_id="A-1001", occurred_at=T0
        )
    finally:
        conversion_recorded.disconnect(receiver)
    assert row.id and row.user_id == user and row.name == "purchase"
    assert row.value == Decimal("49.9000") and row.currency == "EUR"
    assert row.order_id == "A-1001" and row.occurred_at == T0
    assert seen == [(ctx.app, row)]
    stored = ctx.db.session.get(ctx.tracker.Conversion, row.id)
    assert stored.value == Decimal("49.9000") and stored.user_id == user
    # Detached, not in the host's session: merging it does not insert it again.
    ctx.db.session.merge(row)
    ctx.db.session.commit()
    assert count(ctx) == 1


def test_user_instance_or_key_and_defaults(ctx: HostApp) -> None:
    user_id = add_lead(ctx)
    user = ctx.db.session.get(ctx.User, user_id)
    before = datetime.now(timezone.utc)
    one = ctx.tracker.record_conversion(user, "sign_up")
    two = ctx.tracker.record_conversion(user_id, "sign_up")
    assert one.id != two.id and one.user_id == two.user_id == user_id
    assert one.value is None and one.currency == "USD" and one.order_id is None
    assert before <= one.occurred_at <= datetime.now(timezone.utc)


def test_the_default_currency_comes_from_the_config(ctx: HostApp) -> None:
    ctx.app.config["UTM_TRACKER_CURRENCY"] = "EUR"
    assert ctx.tracker.record_conversion(add_lead(ctx), "purchase", value=1).currency == "EUR"


def test_occurred_at_aware_or_naive_utc(ctx: HostApp) -> None:
    user = add_lead(ctx)
    paris = timezone(timedelta(hours=1))
    aware = ctx.tracker.record_conversion(
        user, "a", occurred_at=datetime(2025, 3, 1, 13, tzinfo=paris)
    )
    naive = ctx.tracker.record_conversion(user, "b", occurred_at=datetime(2025, 3, 1, 12))
    assert aware.occurred_at == naive.occurred_at == datetime(2025, 3, 1, 12, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "conversion name"),
        ({"name": "x" * 65}, "conversion name"),
        ({"name": "buy now"}, "conversion name"),
        ({"name": "kauf€"}, "conversion name"),
        ({"value": float("nan")}, "finite"),
        ({"value": float("inf")}, "finite"),
        ({"value": Decimal("-Infinity")}, "finite"),
        ({"value": Decimal("NaN")}, "finite"),
        ({"value": "49.90"}, "number"),
        ({"value": True}, "number"),
        ({"value": 10**20}, "too large"),
        ({"currency": "EURO"}, "ISO 4217"),
        ({"currency": "ABC"}, "ISO 4217"),
        ({"currency": 978}, "ISO 4217"),
        ({"order_id": ""}, "order id"),
        ({"order_id": "x" * 256}, "order id"),
        ({"occurred_at": "2025-03-01"}, "datetime"),
        ({"user": 10_000}, "No User has the primary key 10000"),
        ({"user": "1"}, "primary key"),
        ({"user": None}, "primary key"),
    ],
)
def test_bad_input_raises_and_writes_nothing(
    ctx: HostApp, kwargs: dict[str, t.Any], message: str
) -> None:
    args = {"user": add_lead(ctx), "name": "purchase", "value": 1, "order_id": "o-1", **kwargs}
    with pytest.raises(ValueError, match=message):
        ctx.tracker.record_conversion(args.pop("user"), args.pop("name"), **args)
    assert count(ctx) == 0
    assert ctx.tracker.attribute() == []


def test_a_user_without_a_primary_key(ctx: HostApp) -> None:
    with pytest.raises(ValueError, match="commit it"):
        ctx.tracker.record_conversion(ctx.User(email="new@example.com"), "sign_up")


def test_restatement_updates_the_same_row(ctx: HostApp) -> None:
    user = add_lead(ctx, [("google", "cpc", "x", T0 - timedelta(days=1))])
    first = ctx.tracker.record_conversion(
        user, "purchase", value=100, currency="EUR", order_id="A-1", occurred_at=T0
    )
    refund = ctx.tracker.record_conversion(
        user, "purchase", value=0, currency="EUR", order_id="A-1", occurred_at=T0
    )
    assert refund.id == first.id and refund.value == Decimal("0.0000")
    assert count(ctx) == 1
    assert ctx.tracker.attribute(name="purchase", model="first") == [
        {"key": "Paid Search", "conversions": 1.0, "revenue": {"EUR": 0.0}, "spend": {},
         "roas": None, "cpa": None}
    ]  # fmt: skip
    restated = ctx.tracker.record_conversion(
        user, "purchase", value=80, currency="USD", order_id="A-1"
    )
    assert restated.id == first.id and restated.currency == "USD"
    rows = ctx.tracker.attribute(name="purchase", model="linear")
    assert rows[0]["conversions"] == 1.0 and rows[0]["revenue"] == {"USD": 80.0}
    # The same order id under another name is another conversion.
    other = ctx.tracker.record_conversion(user, "refund", value=5, order_id="A-1")
    assert other.id != first.id and count(ctx) == 2


def test_concurrent_calls_record_once(db_url: str) -> None:
    env = make_app(db_url)
    with env.app.app_context():
        user = add_lead(env, [("google", "cpc", "x", T0 - timedelta(days=1))])
    ids: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(value: int) -> None:
        try:
            with env.app.app_context():
                barrier.wait()
                row = env.tracker.record_conversion(
                    user, "purchase", value=value, order_id="race", occurred_at=T0
                )
                ids.append(row.id)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(v,)) for v in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(ids)) == 1 and len(ids) == 8
    with env.app.app_context():
        assert count(env) == 1
        for model in ("first", "linear", "time_decay"):
            rows = env.tracker.attribute(name="purchase", model=model)
            assert [r["conversions"] for r in rows] == [1.0]
            # The credit follows the value the last writer left.
            value = float(env.db.session.get(env.tracker.Conversion, ids[0]).value)
            assert rows[0]["revenue"] == {"USD": value}


def test_commits_on_its_own_in_and_out_of_a_request(ctx: HostApp) -> None:
    user = add_lead(ctx)
    ctx.db.session.add(ctx.User(email="pending@example.com"))  # the host's unit of work
    ctx.tracker.record_conversion(user, "outside")
    ctx.db.session.rollback()
    with ctx.app.test_request_context("/checkout"):
        ctx.tracker.record_conversion(user, "inside")
    assert count(ctx) == 2


def test_credits_follow_touches_written_later(ctx: HostApp) -> None:
    """A touch recorded after the conversion (another device's login) joins its path."""
    user = add_lead(ctx)
    ctx.tracker.record_conversion(user, "purchase", value=10, occurred_at=T0)
    assert ctx.tracker.attribute(name="purchase", model="last")[0]["key"] == "(direct)"
    lead = ctx.tracker.LeadSource.__table__
    row = {
        "user_id": user,
        "touch_id": "late",
        "source": "google",
        "medium": "cpc",
        "campaign": "",
        "term": "",
        "content": "",
        "channel": "Paid Search",
        "click_ids": {},
        "custom_tags": {},
        "timestamp": T0 - timedelta(days=1),
        "created_at": datetime.now(timezone.utc),
    }
    with ctx.db.engine.begin() as conn:
        conn.execute(sa.insert(lead), [row])
        conversions.lead_sources_written(conn, ctx.tracker, user, [row])
    assert ctx.tracker.attribute(name="purchase", model="last") == [
        {"key": "Paid Search", "conversions": 1.0, "revenue": {"USD": 10.0}, "spend": {},
         "roas": None, "cpa": None}
    ]  # fmt: skip


def test_deleting_a_user_through_the_orm_takes_the_credit_back(ctx: HostApp) -> None:
    keep = add_lead(ctx, [("google", "cpc", "", T0 - timedelta(days=1))])
    gone = add_lead(ctx, [("google", "cpc", "", T0 - timedelta(days=1))])
    ctx.tracker.record_conversion(keep, "purchase", value=1, occurred_at=T0)
    ctx.tracker.record_conversion(gone, "purchase", value=2, occurred_at=T0)
    assert ctx.tracker.attribute()[0]["conversions"] == 2.0
    ctx.db.session.delete(ctx.db.session.get(ctx.User, gone))
    ctx.db.session.commit()
    assert count(ctx) == 1
    assert ctx.tracker.attribute()[0]["conversions"] == 1.0
    assert ctx.tracker.attribute()[0]["revenue"] == {"USD": 1.0}


def test_the_demo_records_a_purchase(
    db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: t.Any
) -> None:
    import importlib

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'imported.db'}")
    demo = importlib.import_module("demo")
    app = demo.create_app({"SQLALCHEMY_DATABASE_URI": db_url, "TESTING": True})
    try:
        client = app.test_client()
        client.get("/?utm_source=newsletter&utm_medium=email&utm_campaign=november")
        client.post("/signup", data={"email": "ann@example.com", "password": "secret"})
        page = client.post("/buy", follow_redirects=True).text
        assert "Thank you for your order" in page
        table = page.split('id="purchases"')[1].split("</table>")[0]
        assert "purchase" in table and "49.90 USD" in table
        with app.app_context():
            assert demo.tracker.attribute(name="purchase", model="last") == [
                {"key": "Email", "conversions": 1.0, "revenue": {"USD": 49.9}, "spend": {},
                 "roas": None, "cpa": None}
            ]  # fmt: skip
    finally:
        with app.app_context():
            demo.db.engine.dispose()
