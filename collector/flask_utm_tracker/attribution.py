"""Attribution of conversions to touches by six models (placeholder)."""

from __future__ import annotations

import typing as t


def attribute(
    tracker: t.Any,
    *,
    name: str | None = None,
    model: str = "last",
    by: str = "channel",
    start: t.Any = None,
    end: t.Any = None,
) -> list[dict[str, t.Any]]:
    raise NotImplementedError
