"""Ad spend from CSV files in GA4's cost-data layout, plus a currency.

The header names ``date,utm_source,utm_medium,utm_campaign,utm_id,cost,currency`` (any order),
and may add ``clicks`` and ``impressions``; one row is what one campaign cost on one day. Source,
medium, campaign and id are lower-cased, as the collector lower-cases utm values, so that they
match the touches. Importing a row again with the same date, source, medium, campaign and id
replaces it (a corrected export). The whole file is checked before anything is written, and
written in one transaction: a malformed file is refused with the line at fault, and nothing of
it is imported.
"""

from __future__ import annotations

import csv
import typing as t
from datetime import date
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa

from .models import SHORT

if t.TYPE_CHECKING:
    from sqlalchemy.engine import Connection

#: The columns every file has, and the optional ones.
REQUIRED = ("date", "utm_source", "utm_medium", "utm_campaign", "utm_id", "cost", "currency")
OPTIONAL = ("clicks", "impressions")
#: Largest cost ``Numeric(18, 4)`` holds.
MAX_COST = Decimal("99999999999999.9999")


class SpendFileError(ValueError):
    """A malformed spend file; the message names the line."""


def read(lines: t.Iterable[str]) -> list[dict[str, t.Any]]:
    """Check and parse a spend file.

    :param lines: the file's lines (text).
    :return: the rows, ready for :func:`store`.
    :raises SpendFileError: naming the line and what is wrong with it.
    """
    from .conversions import check_currency

    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise SpendFileError(
            f"The file is empty; its first line must be {','.join(REQUIRED)}."
        ) from None
    except csv.Error as err:
        raise SpendFileError(f"line 1: {err}.") from None
    names = [name.strip().lower() for name in header]
    missing = [name for name in REQUIRED if name not in names]
    unknown = [name for name in names if name not in REQUIRED + OPTIONAL]
    if missing or unknown or len(set(names)) != len(names):
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown {', '.join(repr(n) for n in unknown)}")
        if len(set(names)) != len(names):
            problems.append("a column named twice")
        raise SpendFileError(
            f"line 1: the header must be {','.join(REQUIRED)} (and optionally clicks,impressions):"
            f" {'; '.join(problems)}."
        )
    rows: list[dict[str, t.Any]] = []
    seen: dict[tuple[t.Any, ...], int] = {}
    line = 1
    try:
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue  # a blank line
            if len(record) != len(names):
                raise SpendFileError(f"line {line}: {len(record)} values for {len(names)} columns.")
            cells = dict(zip(names, (cell.strip() for cell in record), strict=True))
            row = _row(cells, line, check_currency)
            key = (row["date"], row["source"], row["medium"], row["campaign"], row["utm_id"])
            if key in seen:
                raise SpendFileError(
                    f"line {line}: the same date, source, medium, campaign and id as line"
                    f" {seen[key]}."
                )
            seen[key] = line
            rows.append(row)
    except csv.Error as err:
        raise SpendFileError(f"line {reader.line_num}: {err}.") from None
    return rows


def _row(
    cells: dict[str, str], line: int, check_currency: t.Callable[[t.Any], str]
) -> dict[str, t.Any]:
    def fail(message: str) -> t.NoReturn:
        raise SpendFileError(f"line {line}: {message}")

    try:
        day = date.fromisoformat(cells["date"])
    except ValueError:
        fail(f"the date must be YYYY-MM-DD, not {cells['date']!r}.")
    if len(cells["date"]) != 10:
        fail(f"the date must be YYYY-MM-DD, not {cells['date']!r}.")
    text: dict[str, str] = {}
    for column in ("utm_source", "utm_medium", "utm_campaign", "utm_id"):
        value = cells[column].lower()
        if len(value) > SHORT:
            fail(f"{column} is longer than {SHORT} characters.")
        if not all(ch.isprintable() for ch in value):
            fail(f"{column} holds a control character.")
        text[column] = value
    if not text["utm_source"] or not text["utm_medium"]:
        fail("utm_source and utm_medium must not be empty.")
    try:
        cost = Decimal(cells["cost"])
    except InvalidOperation:
        fail(f"the cost must be a number such as 12.50, not {cells['cost']!r}.")
    if not cost.is_finite() or cost < 0 or cost > MAX_COST:
        fail(f"the cost must be a finite number from 0 to {MAX_COST}, not {cells['cost']!r}.")
    try:
        currency = check_currency(cells["currency"])
    except ValueError as err:
        fail(str(err))
    counts: dict[str, int | None] = {}
    for column in OPTIONAL:
        value = cells.get(column, "")
        if not value:
            counts[column] = None
        elif value.isdigit() and int(value) < 2**31:
            counts[column] = int(value)
        else:
            fail(f"{column} must be a whole number, not {value!r}.")
    return {
        "date": day,
        "source": text["utm_source"],
        "medium": text["utm_medium"],
        "campaign": text["utm_campaign"],
        "utm_id": text["utm_id"],
        "cost": cost.quantize(Decimal("0.0001")),
        "currency": currency,
        **counts,
    }


def store(conn: Connection, table: sa.Table, rows: t.Sequence[dict[str, t.Any]]) -> int:
    """Insert ``rows``, replacing those with the same date, source, medium, campaign and id.

    :return: the number of rows written.
    """
    from .conversions import insert_for

    if not rows:
        return 0
    stmt = insert_for(conn, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["date", "source", "medium", "campaign", "utm_id"],
        set_={c: stmt.excluded[c] for c in ("cost", "currency", "clicks", "impressions")},
    )
    conn.execute(stmt, list(rows))
    return len(rows)
