"""flask-utm-tracker: tie utm_* parameters, click IDs and referrers to the users they became."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .config import ConfigError as ConfigError
from .extension import UTMTracker as UTMTracker
from .extension import stash_touch as stash_touch
from .signals import conversion_recorded as conversion_recorded
from .signals import lead_source_created as lead_source_created
from .signals import touch_recorded as touch_recorded

try:
    __version__ = version("flask-utm-tracker")
except PackageNotFoundError:  # pragma: no cover - imported from a source tree, not installed
    __version__ = "0+unknown"

__all__ = [
    "ConfigError",
    "UTMTracker",
    "__version__",
    "conversion_recorded",
    "lead_source_created",
    "stash_touch",
    "touch_recorded",
]
