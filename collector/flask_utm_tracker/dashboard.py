"""The dashboard at ``GET /utm/``: denied unless the host grants it."""

from __future__ import annotations

import typing as t

from flask import Blueprint, abort, render_template

if t.TYPE_CHECKING:
    from .extension import UTMTracker


def register(bp: Blueprint, tracker: UTMTracker) -> None:
    """Add the dashboard routes to the extension's blueprint."""

    @bp.route("/")
    def dashboard() -> str:
        check = tracker._dashboard_permission
        if check is None or not check():
            abort(403)
        lead = tracker.LeadSource
        rows = tracker.db.session.scalars(
            tracker.db.select(lead).order_by(lead.timestamp.desc()).limit(100)
        ).all()
        return render_template("utm_tracker/dashboard.html", rows=rows)
