"""``flask utm ...``: reports, exports and data-retention commands.

``report`` prints the dashboard's comparison table; ``export`` writes every ``LeadSource`` row as
CSV or JSON; ``purge`` removes unclaimed ``Touch`` rows past the retention period; ``erase``
removes everything stored about one user; ``rebuild`` computes the reports' derived tables
again (see :mod:`flask_utm_tracker.rollup`). Long runs show a progress bar on stderr, so standard
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

from . import reports, rollup
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
    """Prefix a string cell that a spreadsheet would run as a formula with ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def printable(value: str, width: int = WIDTH) -> str:
    """``value`` safe for a terminal: control characters (escape sequences) shown as ``?``,
    at most ``width`` characters.
    """
    text = "".join(ch if ch.isprintable() else "?" for ch in value) or "(not set)"
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
        the Touch rows their logins claimed, and the unclaimed Touch rows of their browsers'
        visitor ids, which their next login would otherwise claim again.
        """
        lead = tracker.LeadSource.__table__
        touch = tracker.Touch.__table__
        try:
            key = lead.c.user_id.type.python_type(user_id)
        except (TypeError, ValueError, NotImplementedError):
            message = f"{user_id!r} is not a valid user id."
            raise click.BadParameter(message, param_hint="--user") from None
        if not yes:
            click.confirm(f"Erase every lead source and touch of user {user_id}?", abort=True)
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
        click.echo(
            f"Erased user {user_id}: {leads} lead sources, {claimed} claimed and"
            f" {unclaimed} unclaimed touches."
        )

    @group.command("rebuild")
    def rebuild() -> None:
        """Compute the reports' tables (per user and per sign-up day) again from every
        LeadSource row: after upgrading, or after changing or deleting LeadSource rows or
        sign-up times outside the extension. Reports stay readable meanwhile; logins wait.
        """
        click.echo("Rebuilding the report tables from every lead source...", err=True)
        engine = tracker.db.engine
        with engine.begin() as conn:
            leads, days = rollup.rebuild(conn, tracker.LeadSource)
        rollup.vacuum(engine, tracker.LeadSource)
        click.echo(f"Rebuilt the report tables: {leads} leads over {days} sign-up days.")

    from .destinations import add_commands

    add_commands(group, tracker)  # export-conversions, destinations push|status
    return group
