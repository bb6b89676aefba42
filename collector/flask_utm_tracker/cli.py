"""``flask utm ...``: reports, exports and data-retention commands.

``report`` prints the dashboard's comparison table; ``export`` writes every ``LeadSource`` row as
CSV or JSON; ``purge`` removes unclaimed ``Touch`` rows past the retention period; ``erase``
removes everything stored about one user; ``rebuild`` computes the reports' derived tables
again (see :mod:`flask_utm_tracker.rollup` and :mod:`flask_utm_tracker.conversions`);
``conversions`` prints conversions, revenue, spend, ROAS and CPA under an attribution model (see
:mod:`flask_utm_tracker.attribution`); ``spend import`` reads ad spend from a CSV file (see
:mod:`flask_utm_tracker.spend`). Long runs show a progress bar on stderr, so standard
output stays clean for pipes.
"""

from __future__ import annotations

import csv
import json
import sys
import typing as t
from datetime import date, datetime, timedelta

import click
import sqlalchemy as sa
from flask.cli import AppGroup

from . import attribution, conversion_reports, conversions, reports, rollup, spend
from .models import utcnow

if t.TYPE_CHECKING:
    from .extension import UTMTracker

#: Rows read or deleted per round trip by ``export`` and ``purge``.
BATCH = 1000
#: Characters that make a spreadsheet read a cell as a formula (OWASP "CSV injection"), with the
#: tab and carriage return that some spreadsheets strip before looking.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: Widest value printed in a report column.
WIDTH = 40


def neutralise(value: t.Any) -> t.Any:
    """A CSV cell safe for a spreadsheet and a terminal: a string that a spreadsheet would run
    as a formula prefixed with ``'``, control characters (escape sequences) shown as ``?``."""
    if isinstance(value, str):
        value = visible(value)
        if value.startswith(FORMULA_START):
            return "'" + value
    return value


def visible(value: str) -> str:
    """``value`` with its control characters (terminal escape sequences) shown as ``?``."""
    return value if value.isprintable() else "".join(c if c.isprintable() else "?" for c in value)


def printable(value: str, width: int = WIDTH) -> str:
    """``value`` safe for a terminal: control characters (escape sequences) shown as ``?``,
    at most ``width`` characters.
    """
    text = visible(value) or "(not set)"
    return text if len(text) <= width else text[: width - 1] + "…"


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def _stderr() -> t.TextIO:
    return sys.stderr  # looked up at call time: the test runner swaps it


def _jsonable(value: t.Any) -> t.Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def make_cli(tracker: UTMTracker) -> AppGroup:
    """The ``utm`` command group of ``tracker``."""
    group = AppGroup("utm", help="flask-utm-tracker: lead-source reports and data retention.")
    day = click.DateTime(["%Y-%m-%d"])

    @group.command("report")
    @click.option("--start", type=day, help="First sign-up day (YYYY-MM-DD); default: the first.")
    @click.option("--end", type=day, help="Last sign-up day (YYYY-MM-DD); default: the last.")
    @click.option(
        "--by",
        type=click.Choice(reports.DIMENSIONS),
        default="channel",
        show_default=True,
        help="Group leads by this field.",
    )
    @click.option(
        "--model",
        type=click.Choice(list(reports.MODELS)),
        default="first",
        show_default=True,
        help="Attribution model the rows are sorted by.",
    )
    @click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
    def report(
        start: datetime | None, end: datetime | None, by: str, model: str, limit: int
    ) -> None:
        """Leads by channel (or source, medium, campaign) under every attribution model.

        A lead is a user with at least one touch, dated by sign-up; see flask_utm_tracker.reports.
        """
        first, last = (start.date() if start else None), (end.date() if end else None)
        numbers = reports.summary(tracker, start=first, end=last, dimensions=(by,))
        totals = numbers.totals
        rows = sorted(numbers.by[by], key=lambda r: (-r.of(model), r.key))
        period = f"{first or 'the beginning'} to {last or 'today'}"
        click.echo(f"Leads from {period}: {totals.leads}")
        click.echo(
            f"Touches per lead: {totals.touches_per_lead:.2f}; "
            f"unclaimed anonymous touches: {totals.unclaimed}"
        )
        if not rows:
            click.echo("No leads in this period.")
            return
        header = [by.capitalize(), *reports.MODELS.values(), "Touches"]
        table = [
            [printable(r.key), *(_number(r.of(m)) for m in reports.MODELS), str(r.touches)]
            for r in rows[:limit]
        ]
        widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
        click.echo()
        for i, row in enumerate([header, *table]):
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
            click.echo("  ".join(cells).rstrip())
            if i == 0:
                click.echo("  ".join("-" * width for width in widths))
        if len(rows) > limit:
            click.echo(f"... and {len(rows) - limit} more (--limit).")

    @group.command("export")
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["csv", "json"]),
        default="csv",
        show_default=True,
        help="CSV (cells that start like a formula are prefixed with ') or a JSON array.",
    )
    @click.option(
        "--output",
        "-o",
        type=click.File("w", encoding="utf-8", lazy=True),
        default="-",
        help="File to write; default: standard output.",
    )
    def export(fmt: str, output: t.TextIO) -> None:
        """Every LeadSource row, with its user id, oldest first."""
        table = tracker.LeadSource.__table__
        names = [column.name for column in table.columns]
        with tracker.db.engine.connect() as conn:
            total = conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0
            result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(
                sa.select(table).order_by(table.c.id)
            )
            label = f"Exporting {total} lead sources"
            with click.progressbar(length=total, label=label, file=_stderr()) as bar:
                if fmt == "csv":
                    writer = csv.writer(output, lineterminator="\n")
                    writer.writerow(names)
                    for row in result:
                        writer.writerow(
                            [
                                neutralise(
                                    json.dumps(value, sort_keys=True)
                                    if isinstance(value, (dict, list))
                                    else _jsonable(value)
                                )
                                for value in row
                            ]
                        )
                        bar.update(1)
                else:
                    output.write("[")
                    for i, row in enumerate(result):
                        item = {
                            name: _jsonable(value) for name, value in zip(names, row, strict=True)
                        }
                        output.write(("," if i else "") + "\n" + json.dumps(item, sort_keys=True))
                        bar.update(1)
                    output.write("\n]\n" if total else "]\n")
        output.flush()

    @group.command("purge")
    @click.option(
        "--older-than",
        "days",
        type=click.IntRange(min=0),
        default=None,
        help="Age in days (by received_at); default: UTM_TRACKER_RETENTION_DAYS.",
    )
    @click.option("--dry-run", is_flag=True, help="Count the rows without deleting them.")
    def purge(days: int | None, dry_run: bool) -> None:
        """Delete anonymous Touch rows no login has claimed, past the retention period."""
        if days is None:
            days = tracker.settings().retention_days
        touch = tracker.Touch.__table__
        stale = sa.and_(
            touch.c.claimed_by.is_(None), touch.c.received_at < utcnow() - timedelta(days)
        )
        engine = tracker.db.engine
        with engine.connect() as conn:
            total = conn.scalar(sa.select(sa.func.count()).select_from(touch).where(stale)) or 0
        if dry_run:
            click.echo(f"{total} unclaimed touches are older than {days} days.")
            return
        deleted = 0
        label = f"Purging {total} unclaimed touches older than {days} days"
        with click.progressbar(length=total, label=label, file=_stderr()) as bar:
            while True:
                with engine.begin() as conn:
                    ids = conn.scalars(
                        sa.select(touch.c.id).where(stale).order_by(touch.c.id).limit(BATCH)
                    ).all()
                    if not ids:
                        break
                    # ``stale`` again: a login may have claimed one since the SELECT.
                    done = conn.execute(sa.delete(touch).where(touch.c.id.in_(ids), stale))
                deleted += done.rowcount
                bar.update(len(ids))
        click.echo(f"Deleted {deleted} unclaimed touches older than {days} days.")

    @group.command("erase")
    @click.option("--user", "user_id", required=True, help="The user's primary key.")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    def erase(user_id: str, yes: bool) -> None:
        """Delete everything stored about one user (an erasure request): their LeadSource rows,
        the Touch rows their logins claimed, the unclaimed Touch rows of their browsers'
        visitor ids (which their next login would otherwise claim again), and their conversions.
        """
        lead = tracker.LeadSource.__table__
        touch = tracker.Touch.__table__
        try:
            key = lead.c.user_id.type.python_type(user_id)
        except (TypeError, ValueError, NotImplementedError):
            message = f"{user_id!r} is not a valid user id."
            raise click.BadParameter(message, param_hint="--user") from None
        if not yes:
            click.confirm(
                f"Erase every lead source, touch and conversion of user {user_id}?", abort=True
            )
        with tracker.db.engine.begin() as conn:
            visitors = sa.union(
                sa.select(lead.c.visitor_id).where(lead.c.user_id == key),
                sa.select(touch.c.visitor_id).where(touch.c.claimed_by == key),
            ).subquery()
            unclaimed = conn.execute(
                sa.delete(touch).where(
                    touch.c.claimed_by.is_(None),
                    touch.c.visitor_id.in_(sa.select(visitors.c.visitor_id)),
                )
            ).rowcount
            claimed = conn.execute(sa.delete(touch).where(touch.c.claimed_by == key)).rowcount
            leads = conn.execute(sa.delete(lead).where(lead.c.user_id == key)).rowcount
            rollup.refresh(conn, tracker.LeadSource, [key])
            converted = conversions.erase_user(conn, tracker, key)
        click.echo(
            f"Erased user {user_id}: {leads} lead sources, {claimed} claimed and"
            f" {unclaimed} unclaimed touches, {converted} conversions."
        )

    @group.command("refresh")
    def refresh() -> None:
        """Store the report numbers of the sign-up days that changed since they were last
        stored (new touches, new or deleted users). Reports compute those days in their query
        until then, so run it from cron every few minutes on a busy site."""
        engine = tracker.db.engine
        with engine.begin() as conn:
            days = rollup.store_stale_days(conn, tracker.LeadSource)
        click.echo(f"Stored the report numbers of {days} sign-up days.")

    @group.command("rebuild")
    def rebuild() -> None:
        """Compute the reports' tables (per user and per sign-up day; conversions' paths and
        credits) again from every LeadSource and Conversion row: after upgrading, after
        changing UTM_TRACKER_LOOKBACK_DAYS or UTM_TRACKER_HALF_LIFE_DAYS, or after changing or
        deleting LeadSource rows, conversions, users or sign-up times outside the extension.
        Reports stay readable meanwhile; logins and conversions wait.
        """
        click.echo("Rebuilding the report tables from every lead source...", err=True)
        engine = tracker.db.engine
        with engine.begin() as conn:
            leads, days = rollup.rebuild(conn, tracker.LeadSource)
        rollup.vacuum(engine, tracker.LeadSource)
        click.echo(f"Rebuilt the report tables: {leads} leads over {days} sign-up days.")
        click.echo("Rebuilding the conversions' paths and credits...", err=True)
        with engine.begin() as conn:
            converted, users = conversions.rebuild(conn, tracker)
        click.echo(
            f"Rebuilt the attribution tables: {converted} conversions, {users} users' paths."
        )

    from .destinations import add_commands

    add_commands(group, tracker)  # export-conversions, destinations push|status

    @group.command("conversions")
    @click.option("--name", help="Conversion name (such as purchase); default: every conversion.")
    @click.option(
        "--model",
        type=click.Choice(list(attribution.MODELS)),
        default="last",
        show_default=True,
        help="Attribution model.",
    )
    @click.option(
        "--by",
        type=click.Choice(attribution.DIMENSIONS),
        default="channel",
        show_default=True,
        help="Credit conversions to this field of the touches.",
    )
    @click.option("--start", type=day, help="First day of the conversions (YYYY-MM-DD, UTC).")
    @click.option("--end", type=day, help="Last day of the conversions (YYYY-MM-DD, UTC).")
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json", "csv"]),
        default="table",
        show_default=True,
        help="A table, the JSON list tracker.attribute() returns, or CSV.",
    )
    def conversions_command(
        name: str | None,
        model: str,
        by: str,
        start: datetime | None,
        end: datetime | None,
        fmt: str,
    ) -> None:
        """Conversions, revenue, spend, ROAS and CPA by channel (or source, medium, campaign)
        under an attribution model; see flask_utm_tracker.attribution for the models.
        """
        first, last = (start.date() if start else None), (end.date() if end else None)
        if name is not None:
            try:
                conversions.check_name(name)
            except ValueError as err:
                raise click.BadParameter(str(err), param_hint="--name") from None
        if first and last and first > last:
            raise click.BadParameter("The start must not be after the end.", param_hint="--start")
        result = conversion_reports.report(
            tracker, name=name, model=model, by=by, start=first, end=last
        )
        for note in result.notes:
            click.echo(printable(note, width=10_000), err=True)
        rows = result.rows
        if fmt == "json":
            click.echo(json.dumps(rows, indent=2, sort_keys=True))
            return
        if fmt == "csv":
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow([by, "conversions", "revenue", "spend", "roas", "cpa"])
            for row in rows:
                writer.writerow(
                    [
                        neutralise(printable(row["key"], width=10_000)),
                        row["conversions"],
                        _money(row["revenue"]),
                        _money(row["spend"]),
                        "" if row["roas"] is None else row["roas"],
                        "" if row["cpa"] is None else row["cpa"],
                    ]
                )
            sys.stdout.flush()
            return
        label = f"{name or 'Every conversion'}, {attribution.MODELS[result.used].lower()}"
        period = f"{first or 'the beginning'} to {last or 'today'}"
        click.echo(f"{label}, {period}")
        if not rows:
            click.echo("No conversions in this period.")
            return
        header = [by.capitalize(), "Conversions", "Revenue", "Spend", "ROAS", "CPA"]
        table = [
            [
                printable(row["key"]),
                _number(row["conversions"]),
                printable(_money(row["revenue"]) or "-"),
                printable(_money(row["spend"]) or "-"),
                "-" if row["roas"] is None else f"{row['roas']:.2f}",
                "-" if row["cpa"] is None else f"{row['cpa']:.2f}",
            ]
            for row in rows
        ]
        widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
        click.echo()
        for i, line in enumerate([header, *table]):
            cells = [line[0].ljust(widths[0])]
            cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
            click.echo("  ".join(cells).rstrip())
            if i == 0:
                click.echo("  ".join("-" * width for width in widths))

    spend_group = AppGroup("spend", help="Ad spend, for ROAS and CPA beside conversions.")
    group.add_command(spend_group)

    @spend_group.command("import")
    @click.argument("path", type=click.Path(exists=True, dir_okay=False))
    def spend_import(path: str) -> None:
        """Import ad spend from a CSV file in GA4's cost-data layout plus a currency:
        date,utm_source,utm_medium,utm_campaign,utm_id,cost,currency[,clicks,impressions].
        A row with the same date, source, medium, campaign and id as one imported before
        replaces it. A malformed file is refused whole, naming the line.
        """
        try:
            with open(path, encoding="utf-8-sig", newline="") as file:
                rows = spend.read(file)
        except UnicodeDecodeError:
            raise click.ClickException(f"{path} is not UTF-8 text; save it as UTF-8 CSV.") from None
        except spend.SpendFileError as err:
            raise click.ClickException(
                f"{printable(path, 200)}, {printable(str(err), 10_000)} Nothing was imported."
            ) from None
        with tracker.db.engine.begin() as conn:
            written = spend.store(conn, tracker.Spend.__table__, rows)
        click.echo(f"Imported {written} spend rows from {printable(path, 200)}.")

    return group


def _money(amounts: t.Mapping[str, float]) -> str:
    """``{"EUR": 12.5, "USD": 3}`` as ``12.50 EUR; 3.00 USD``."""
    return "; ".join(f"{value:.2f} {currency}" for currency, value in sorted(amounts.items()))
