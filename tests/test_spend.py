"""``flask utm spend import``: GA4's cost-data layout, replacement, refusals; ROAS and CPA."""

from __future__ import annotations

import typing as t
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from .builders import T0, add_lead
from .conftest import HostApp

HEADER = "date,utm_source,utm_medium,utm_campaign,utm_id,cost,currency"


@pytest.fixture
def runner(env: HostApp) -> t.Any:
    return env.app.test_cli_runner()


def write(tmp_path: Path, text: str, name: str = "spend.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def spend_rows(env: HostApp) -> list[tuple[t.Any, ...]]:
    table = env.tracker.Spend.__table__
    with env.app.app_context(), env.db.engine.connect() as conn:
        query = sa.select(
            table.c.date, table.c.source, table.c.medium, table.c.campaign, table.c.utm_id,
            table.c.cost, table.c.currency, table.c.clicks,
        ).order_by(table.c.date, table.c.source)  # fmt: skip
        return [tuple(row) for row in conn.execute(query)]


def test_import_and_replace(env: HostApp, runner: t.Any, tmp_path: Path) -> None:
    first = write(
        tmp_path,
        f"{HEADER},clicks,impressions\n"
        "2025-03-01,Google,CPC,Spring,g-1,100.50,EUR,40,1000\n"
        "2025-03-01,newsletter,email,spring,,10,EUR,,\n",
    )
    result = runner.invoke(args=["utm", "spend", "import", first])
    assert result.exit_code == 0, result.output
    assert "Imported 2 spend rows" in result.stdout
    rows = spend_rows(env)
    assert [r[:5] for r in rows] == [
        (T0.date(), "google", "cpc", "spring", "g-1"),
        (T0.date(), "newsletter", "email", "spring", ""),
    ]
    assert float(rows[0][5]) == 100.5 and rows[0][6] == "EUR" and rows[0][7] == 40
    # A corrected export: the same date, source, medium, campaign and id replaces the row.
    again = write(tmp_path, f"{HEADER}\n2025-03-01,google,cpc,spring,g-1,90,EUR\n", "b.csv")
    assert runner.invoke(args=["utm", "spend", "import", again]).exit_code == 0
    rows = spend_rows(env)
    assert len(rows) == 2 and float(rows[0][5]) == 90.0 and rows[0][7] is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "The file is empty"),
        ("date,source,cost\n", "line 1: the header must be"),
        (f"{HEADER},color\n", "unknown 'color'"),
        (f"{HEADER}\n2025-03-01,g,cpc,s,,1,EUR\n2025-13-01,g,cpc,s,,1,EUR\n", "line 3: the date"),
        (f"{HEADER}\n2025-03-01,g,cpc,s,,abc,EUR\n", "line 2: the cost must be a number"),
        (f"{HEADER}\n2025-03-01,g,cpc,s,,NaN,EUR\n", "line 2: the cost must be a finite"),
        (f"{HEADER}\n2025-03-01,g,cpc,s,,-5,EUR\n", "line 2: the cost must be a finite"),
        (f"{HEADER}\n2025-03-01,g,cpc,s,,5,EURO\n", "line 2: 'EURO' is not an ISO 4217"),
        (f"{HEADER}\n2025-03-01,g,cpc,s,,5\n", "line 2: 6 values for 7 columns"),
        (f"{HEADER}\n2025-03-01,,cpc,s,,5,USD\n", "line 2: utm_source and utm_medium"),
        (f"{HEADER},clicks\n2025-03-01,g,cpc,s,,5,USD,many\n", "line 2: clicks must be"),
        (
            f"{HEADER}\n2025-03-01,g,cpc,s,,5,USD\n2025-03-02,g,cpc,s,,5,USD\n"
            "2025-03-01,G,CPC,S,,7,USD\n",
            "line 4: the same date, source, medium, campaign and id as line 2",
        ),
    ],
)
def test_a_malformed_file_imports_nothing(
    env: HostApp, runner: t.Any, tmp_path: Path, text: str, message: str
) -> None:
    result = runner.invoke(args=["utm", "spend", "import", write(tmp_path, text)])
    assert result.exit_code == 1
    assert message in result.output and "Nothing was imported." in result.output
    assert spend_rows(env) == []


def test_not_utf8(env: HostApp, runner: t.Any, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(f"{HEADER}\n2025-03-01,caf\xe9,cpc,s,,5,EUR\n".encode("latin-1"))
    result = runner.invoke(args=["utm", "spend", "import", str(path)])
    assert result.exit_code == 1 and "not UTF-8" in result.output
    assert spend_rows(env) == []


def test_roas_and_cpa(env: HostApp, runner: t.Any, tmp_path: Path) -> None:
    day = timedelta(days=1)
    with env.app.app_context():
        paid = add_lead(env, [("google", "cpc", "spring", T0 - day)])
        mail = add_lead(env, [("newsletter", "email", "spring", T0 - day)])
        env.tracker.record_conversion(paid, "purchase", value=300, currency="EUR", occurred_at=T0)
        env.tracker.record_conversion(paid, "purchase", value=100, currency="EUR", occurred_at=T0)
        env.tracker.record_conversion(mail, "purchase", value=50, currency="USD", occurred_at=T0)
    text = (
        f"{HEADER}\n"
        "2025-03-01,google,cpc,spring,,100,EUR\n"
        "2025-02-28,google,cpc,summer,,60,EUR\n"  # another campaign, same channel
        "2025-03-01,newsletter,email,spring,,20,EUR\n"  # spend in EUR, revenue in USD
        "2025-03-01,facebook,paid_social,spring,,30,EUR\n"  # spend, no conversion
        "2025-01-01,google,cpc,spring,,1000,EUR\n"  # outside the range
    )
    assert runner.invoke(args=["utm", "spend", "import", write(tmp_path, text)]).exit_code == 0
    with env.app.app_context():
        rows = env.tracker.attribute(
            name="purchase", model="last", by="channel", start="2025-02-01", end="2025-03-31"
        )
        by_campaign = {
            r["key"]: r
            for r in env.tracker.attribute(
                name="purchase", model="last", by="campaign", start="2025-02-01"
            )
        }
    assert rows == [
        # Revenue 400 EUR for 160 EUR of Paid Search spend (both campaigns): ROAS 2.5, CPA 80.
        {"key": "Paid Search", "conversions": 2.0, "revenue": {"EUR": 400.0},
         "spend": {"EUR": 160.0}, "roas": 2.5, "cpa": 80.0},
        # Revenue in USD, spend in EUR: no ROAS; CPA needs only the spend's currency.
        {"key": "Email", "conversions": 1.0, "revenue": {"USD": 50.0}, "spend": {"EUR": 20.0},
         "roas": None, "cpa": 20.0},
        {"key": "Paid Social", "conversions": 0.0, "revenue": {}, "spend": {"EUR": 30.0},
         "roas": 0.0, "cpa": None},
    ]  # fmt: skip
    # By campaign, "spring" gathers three sources' spend (100 + 20 + 30 EUR).
    assert by_campaign["spring"]["spend"] == {"EUR": 150.0}
    assert by_campaign["summer"]["conversions"] == 0.0
