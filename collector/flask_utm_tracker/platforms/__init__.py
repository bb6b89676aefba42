"""The ad platforms conversions are sent to, one module each, and the offline upload files."""

from __future__ import annotations

from .base import ConfigurationError as ConfigurationError
from .base import Event as Event
from .base import Platform as Platform
from .google_ads import GoogleAds
from .linkedin import LinkedIn
from .meta import Meta
from .tiktok import TikTok

#: The platforms by the ``platform`` value of a destination.
PLATFORMS: dict[str, type[Platform]] = {p.name: p for p in (Meta, GoogleAds, TikTok, LinkedIn)}
