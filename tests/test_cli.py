"""``flask utm report|export|purge|erase|conversions|rebuild`` through ``app.test_cli_runner()``."""

from __future__ import annotations

import csv
import io
import json
import typing as t
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask_utm_tracker.cli import neutralise, printable
from flask_utm_tracker.models import utcnow

from .builders import add_user, at, build, touch
from .conftest import HostApp, make_app


@pytest.fixture
def runner(env: HostApp) -> t.Any:
    return env.app.test_cli_runner()


@pytest.fixture
def data(env: HostApp) -> HostApp:
    with env.app.app_context():
        build(env)
    return env


def count(env: HostApp, model: t.Any, *where: t.Any) -> int:
    with env.app.app_context():
        query = sa.select(sa.func.count()).select_from(model).where(*where)
        return int(env.db.session.scalar(query) or 0)


def test_report(data: HostApp, runner: t.Any) -> None:
    result = runner.invoke(args=["utm", "report", "--start", "2024-03-01", "--end", "2024-03-31"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Leads from 2024-03-01 to 2024-03-31: 3"
    assert "Touches per lead: 1.67" in lines[1]
    header = lines[3].split()
    assert header == ["Channel", "First", "touch", "Last", "touch", "Linear", "Touches"]
    table = {line[:16].strip(): line[16:].split() for line in lines[5:]}
    assert table["Email"] == ["1", "1", "1.33", "2"]
    assert table["Paid Search"] == ["1", "0", "0.33", "1"]
    assert table["Organic Social"] == ["0", "1", "0.33", "1"]
    assert list(table) == ["Email", "Paid Search", "Referral", "Organic Social"]


def test_report_sorts_by_model_and_limits(data: HostApp, runner: t.Any) -> None:
    result = runner.invoke(
        args=["utm", "report", "--by", "source", "--model", "first", "--limit", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "google" in result.stdout.splitlines()[5]
    assert "... and 3 more (--limit)." in result.stdout


def test_report_empty_and_bad_option(env: HostApp, runner: t.Any) -> None:
    result = runner.invoke(args=["utm", "report"])
    assert result.exit_code == 0
    assert "No leads in this period." in result.stdout
    result = runner.invoke(args=["utm", "report", "--model", "middle"])
    assert result.exit_code == 2
    assert "'first', 'last', 'linear'" in result.output


def test_report_escapes_terminal_control_characters(env: HostApp, runner: t.Any) -> None:
    with env.app.app_context():
        evil = "\x1b]0;pwned\x07\x1b[2J" + "x" * 60
        add_user(env, "m@example.com", touch("Email", evil, "email", at(1), at(2)))
    result = runner.invoke(args=["utm", "report", "--by", "source"])
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "?]0;pwned??[2J" in result.stdout and "…" in result.stdout


def test_export_csv(data: HostApp, runner: t.Any) -> None:
    result = runner.invoke(args=["utm", "export", "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 9
    assert {r["user_id"] for r in rows} == {"1", "2", "4", "5"}
    first = rows[0]
    assert (first["source"], first["medium"], first["channel"]) == ("google", "cpc", "Paid Search")
    assert first["timestamp"].startswith("2024-03-01T12:00:00")
    assert json.loads(first["click_ids"]) == {}
    assert "Exporting 9 lead sources" in result.stderr


def test_export_csv_neutralises_formulas(env: HostApp, runner: t.Any) -> None:
    with env.app.app_context():
        add_user(
            env,
            "x@example.com",
            touch("Referral", '=HYPERLINK("http://evil")', "+cmd", at(1), at(2), "@sum(a1)"),
            touch("Referral", "-2+3", "\tx", at(1), at(2), "\x1b[31mred\x1b]0;title\x07"),
        )
    result = runner.invoke(args=["utm", "export"])
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["source"], r["medium"], r["campaign"]) for r in rows] == [
        ('\'=HYPERLINK("http://evil")', "'+cmd", "'@sum(a1)"),
        ("'-2+3", "?x", "?[31mred?]0;title?"),  # no terminal escape sequence gets through
    ]
    assert neutralise(-5) == -5 and neutralise("a=b") == "a=b"


def test_export_json(data: HostApp, runner: t.Any, tmp_path: t.Any) -> None:
    target = tmp_path / "leads.json"
    result = runner.invoke(args=["utm", "export", "--format", "json", "-o", str(target)])
    assert result.exit_code == 0, result.output
    items = json.loads(target.read_text("utf-8"))
    assert len(items) == 9
    assert items[0]["user_id"] == 1 and items[0]["campaign"] == "spring"
    assert items[0]["custom_tags"] == {} and items[0]["created_at"].startswith("2024-03-05")


def test_export_empty(env: HostApp, runner: t.Any) -> None:
    result = runner.invoke(args=["utm", "export", "--format", "json"])
    assert json.loads(result.stdout) == []
    result = runner.invoke(args=["utm", "export"])
    assert result.stdout.startswith("id,user_id,")
    assert len(result.stdout.splitlines()) == 1


def add_touches(env: HostApp, *ages: float, claimed_by: t.Any = None, visitor: str = "v") -> None:
    now = utcnow()
    with env.app.app_context():
        for age in ages:
            n = count(env, env.tracker.Touch)
            row = env.tracker.Touch(
                visitor_id=visitor,
                touch_id=f"{visitor}{n}",
                received_at=now - timedelta(days=age),
                claimed_by=claimed_by,
                claimed_at=now if claimed_by is not None else None,
            )
            env.db.session.add(row)
            env.db.session.commit()


def test_purge(env: HostApp, runner: t.Any) -> None:
    with env.app.app_context():
        user = add_user(env, "p@example.com")
    add_touches(env, 1, 10, 100, 200)
    add_touches(env, 300, claimed_by=user, visitor="w")
    result = runner.invoke(args=["utm", "purge", "--older-than", "30", "--dry-run"])
    assert result.stdout == "2 unclaimed touches are older than 30 days.\n"
    assert count(env, env.tracker.Touch) == 5
    result = runner.invoke(args=["utm", "purge", "--older-than", "30"])
    assert result.exit_code == 0, result.output
    assert "Deleted 2 unclaimed touches older than 30 days." in result.stdout
    assert "Purging 2 unclaimed touches" in result.stderr
    assert count(env, env.tracker.Touch) == 3  # the recent ones and the claimed one
    result = runner.invoke(args=["utm", "purge", "--older-than", "5"])
    assert "Deleted 1 " in result.stdout


def test_purge_default_is_the_retention_setting(db_url: str) -> None:
    env = make_app(db_url, UTM_TRACKER_RETENTION_DAYS=7)
    add_touches(env, 1, 8, 9)
    result = env.app.test_cli_runner().invoke(args=["utm", "purge"])
    assert "Deleted 2 unclaimed touches older than 7 days." in result.stdout


def test_purge_in_batches(env: HostApp, runner: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flask_utm_tracker.cli.BATCH", 2)
    add_touches(env, 40, 50, 60, 70, 80)
    result = runner.invoke(args=["utm", "purge", "--older-than", "30"])
    assert "Deleted 5 " in result.stdout
    assert count(env, env.tracker.Touch) == 0


def test_erase(env: HostApp, runner: t.Any) -> None:
    lead, touch_model = env.tracker.LeadSource, env.tracker.Touch
    with env.app.app_context():
        ann = add_user(env, "ann@example.com", touch("Email", "n", "email", at(1), at(2)))
        bob = add_user(env, "bob@example.com", touch("Email", "n", "email", at(1), at(2)))
        env.db.session.execute(
            sa.update(lead).values(visitor_id="ann-browser").where(lead.user_id == ann)
        )
        env.db.session.commit()
    add_touches(env, 1, claimed_by=ann, visitor="ann-browser")
    add_touches(env, 1, visitor="ann-browser")  # after a logout: her next login would claim it
    add_touches(env, 1, claimed_by=bob, visitor="bob-browser")
    add_touches(env, 1, visitor="stranger")
    with env.app.app_context():
        env.tracker.record_conversion(ann, "purchase", value=10, order_id="ann-1")
        env.tracker.record_conversion(ann, "sign_up")
        env.tracker.record_conversion(bob, "purchase", value=20, order_id="bob-1")

    result = runner.invoke(args=["utm", "erase", "--user", str(ann)], input="n\n")
    assert result.exit_code == 1 and "Aborted" in result.output
    assert count(env, lead) == 2

    result = runner.invoke(args=["utm", "erase", "--user", str(ann)], input="y\n")
    assert result.exit_code == 0, result.output
    assert (
        f"Erased user {ann}: 1 lead sources, 1 claimed and 1 unclaimed touches, 2 conversions."
        in result.stdout
    )
    assert count(env, lead, lead.user_id == ann) == 0
    conversion = env.tracker.Conversion
    assert count(env, conversion, conversion.user_id == ann) == 0
    assert count(env, conversion, conversion.user_id == bob) == 1
    with env.app.app_context():  # the reports forget her conversions too
        rows = env.tracker.attribute(model="linear")
        assert sum(r["conversions"] for r in rows) == 1.0
        assert rows[0]["revenue"] == {"USD": 20.0}
    assert count(env, lead, lead.user_id == bob) == 1
    assert count(env, touch_model) == 2  # bob's and the stranger's

    result = runner.invoke(args=["utm", "erase", "--user", str(ann), "--yes"])
    assert "0 lead sources, 0 claimed and 0 unclaimed touches, 0 conversions" in result.stdout


def test_erase_rejects_a_bad_id(env: HostApp, runner: t.Any) -> None:
    result = runner.invoke(args=["utm", "erase", "--user", "abc", "--yes"])
    assert result.exit_code == 2
    assert "'abc' is not a valid user id." in result.output


def test_printable() -> None:
    assert printable("") == "(not set)"
    assert printable("a\nb") == "a?b"
    assert printable("abcdef", width=4) == "abc…"


# -- conversions ---------------------------------------------------------------------------------


@pytest.fixture
def sales(env: HostApp) -> HostApp:
    from .builders import T0
    from .builders import add_lead as add_buyer

    day = timedelta(days=1)
    with env.app.app_context():
        one = add_buyer(env, [("google", "cpc", "=cmd|' /C calc'!A0", T0 - day)])
        two = add_buyer(env, [("news\x1b[31mletter", "email", "spring", T0 - day)])
        env.tracker.record_conversion(one, "purchase", value=100, currency="EUR", occurred_at=T0)
        env.tracker.record_conversion(two, "purchase", value=50, currency="EUR", occurred_at=T0)
        env.tracker.record_conversion(two, "purchase", value=25, currency="EUR", occurred_at=T0)
    return env


def test_conversions_json_is_what_attribute_returns(sales: HostApp, runner: t.Any) -> None:
    args = ["utm", "conversions", "--name", "purchase", "--model", "position", "--by", "source"]
    result = runner.invoke(args=[*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    with sales.app.app_context():
        expected = sales.tracker.attribute(name="purchase", model="position", by="source")
    assert json.loads(result.stdout) == expected
    assert [row["conversions"] for row in expected] == [2.0, 1.0]


def test_conversions_table(sales: HostApp, runner: t.Any) -> None:
    result = runner.invoke(
        args=[
            "utm",
            "conversions",
            "--by",
            "source",
            "--start",
            "2025-03-01",
            "--end",
            "2025-03-01",
        ]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Every conversion, last touch, 2025-03-01 to 2025-03-01"
    assert lines[2].split() == ["Source", "Conversions", "Revenue", "Spend", "ROAS", "CPA"]
    assert lines[4].split() == ["news?[31mletter", "2", "75.00", "EUR", "-", "-", "-"]
    assert "\x1b" not in result.stdout
    empty = runner.invoke(args=["utm", "conversions", "--start", "2030-01-01"])
    assert "No conversions in this period." in empty.stdout


def test_conversions_csv_neutralises_formulas(sales: HostApp, runner: t.Any) -> None:
    result = runner.invoke(args=["utm", "conversions", "--by", "campaign", "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["campaign", "conversions", "revenue", "spend", "roas", "cpa"]
    assert rows[1][:3] == ["spring", "2.0", "75.00 EUR"]
    assert rows[2][0] == "'=cmd|' /C calc'!A0"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "u_shaped"], "Invalid value for '--model'"),
        (["--by", "term"], "Invalid value for '--by'"),
        (["--name", "buy now"], "conversion name"),
        (["--start", "2025-02-01", "--end", "2025-01-01"], "must not be after"),
        (["--format", "xml"], "Invalid value for '--format'"),
    ],
)
def test_conversions_bad_options(
    env: HostApp, runner: t.Any, args: list[str], message: str
) -> None:
    result = runner.invoke(args=["utm", "conversions", *args])
    assert result.exit_code == 2 and message in result.output


def test_data_driven_fallback_is_said_on_stderr(sales: HostApp, runner: t.Any) -> None:
    result = runner.invoke(
        args=["utm", "conversions", "--model", "data_driven", "--format", "json"]
    )
    assert result.exit_code == 0
    assert "Showing linear instead" in result.stderr
    assert json.loads(result.stdout) == json.loads(
        runner.invoke(args=["utm", "conversions", "--model", "linear", "--format", "json"]).stdout
    )


def test_rebuild_makes_the_same_credits(sales: HostApp, runner: t.Any) -> None:
    with sales.app.app_context():
        before = {m: sales.tracker.attribute(model=m, by="source") for m in ("first", "time_decay")}
    result = runner.invoke(args=["utm", "rebuild"])
    assert result.exit_code == 0, result.output
    assert "Rebuilt the attribution tables: 3 conversions, 2 users' paths." in result.stdout
    with sales.app.app_context():
        after = {m: sales.tracker.attribute(model=m, by="source") for m in ("first", "time_decay")}
    assert after == before
