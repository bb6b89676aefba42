"""flask-utm-tracker: tie utm_* parameters, click IDs and referrers to the users they became."""

from __future__ import annotations

from .config import ConfigError as ConfigError
from .extension import UTMTracker as UTMTracker
from .extension import stash_touch as stash_touch
from .signals import lead_source_created as lead_source_created
from .signals import touch_recorded as touch_recorded

__all__ = ["ConfigError", "UTMTracker", "lead_source_created", "stash_touch", "touch_recorded"]
