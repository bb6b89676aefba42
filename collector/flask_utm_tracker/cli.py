"""``flask utm ...``: reports, exports and data-retention commands."""

from __future__ import annotations

import typing as t

from flask.cli import AppGroup

if t.TYPE_CHECKING:
    from .extension import UTMTracker


def make_cli(tracker: UTMTracker) -> AppGroup:
    """The ``utm`` command group of ``tracker``."""
    group = AppGroup("utm", help="flask-utm-tracker: lead-source reports and data retention.")
    return group
