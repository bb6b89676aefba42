"""What every ad-platform destination shares: the event handed to it, the request it builds,
how its answer is read, and the one HTTP call (stdlib ``urllib``, no extra dependency).
"""

from __future__ import annotations

import json
import typing as t
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

#: Seconds an HTTP request to a platform may take.
TIMEOUT = 30
#: Characters of a platform's answer kept as the error message.
MESSAGE = 500


class ConfigurationError(ValueError):
    """A destination's configuration is missing a key or has a wrong value."""


@dataclass(frozen=True)
class Click:
    """One click ID of a touch in a conversion's path, with the touch's time and landing URL."""

    value: str
    at: datetime
    landing_url: str | None


@dataclass(frozen=True)
class Event:
    """One conversion as a destination sees it.

    :param platform_event: the destination's name for it (``events[conversion name]``).
    :param clicks: the last touch of the path holding each click ID, by parameter name.
    :param user_data: what the host's ``@tracker.user_data`` callback returned, when the
        destination allows contact data; else empty.
    """

    conversion_id: int
    name: str
    platform_event: str
    event_id: str
    occurred_at: datetime
    value: Decimal | None
    currency: str | None
    clicks: t.Mapping[str, Click] = field(default_factory=dict)
    landing_url: str | None = None
    user_data: t.Mapping[str, t.Any] = field(default_factory=dict)
    consent: bool | None = None


@dataclass(frozen=True)
class Request:
    """An HTTP POST with a JSON body."""

    url: str
    headers: t.Mapping[str, str]
    body: t.Mapping[str, t.Any]
    #: Body keys and headers whose values are secrets, masked when printed.
    secrets: tuple[str, ...] = ()

    def printable(self) -> dict[str, t.Any]:
        """The request with its secrets masked, for ``--dry-run``."""
        mask = "***"
        return {
            "method": "POST",
            "url": self.url,
            "headers": {k: (mask if k in self.secrets else v) for k, v in self.headers.items()},
            "body": {k: (mask if k in self.secrets else v) for k, v in self.body.items()},
        }


@dataclass(frozen=True)
class Outcome:
    """What a platform's answer means for one event.

    ``retry`` outcomes (429, 5xx, network errors, rate-limit codes) are tried again later with
    backoff; other failures are final.
    """

    ok: bool
    retry: bool = False
    message: str = ""
    retry_after: float | None = None


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: t.Mapping[str, str]

    def json(self) -> t.Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")[:MESSAGE]

    def retry_after(self) -> float | None:
        value = self.headers.get("Retry-After") or self.headers.get("retry-after")
        try:
            return max(0.0, float(value)) if value else None
        except ValueError:
            return None


def post(request: Request) -> Response:
    """POST ``request``; an unreachable host or a timeout raises :class:`OSError`."""
    data = json.dumps(request.body, separators=(",", ":")).encode("utf-8")
    headers = {"Content-Type": "application/json", **request.headers}
    req = urllib.request.Request(request.url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as answer:  # noqa: S310 (http(s) URLs)
            return Response(answer.status, answer.read(), dict(answer.headers.items()))
    except urllib.error.HTTPError as err:
        with err:
            body = err.read()
        return Response(err.code, body, dict(err.headers.items()) if err.headers else {})
    except urllib.error.URLError as err:
        raise OSError(f"cannot reach {urlsplit(request.url).netloc}: {err.reason}") from None
    except TimeoutError:
        raise OSError(f"{urlsplit(request.url).netloc} did not answer in {TIMEOUT} s") from None


def http_outcome(response: Response, message: str | None = None) -> Outcome:
    """The usual reading of an HTTP status: 2xx sent, 429 and 5xx retried, other 4xx final."""
    if 200 <= response.status < 300:
        return Outcome(True)
    text = f"HTTP {response.status}: {message or response.text()}"
    if response.status == 429 or response.status >= 500:
        return Outcome(False, retry=True, message=text, retry_after=response.retry_after())
    return Outcome(False, message=text)


def without_query(url: str | None) -> str | None:
    """``url`` without its query string and fragment."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def amount(value: Decimal) -> str:
    """``value`` as a plain decimal string without trailing zeros (``49.9``, ``100``)."""
    text = f"{value.normalize():f}"
    return text


def utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime (a naive one is taken as UTC, as SQLite returns it)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


class Platform:
    """One ad platform's Conversions API. Subclasses set the class attributes and build the
    request; the outbox in :mod:`flask_utm_tracker.destinations` does the rest.
    """

    #: The ``platform`` value of a destination's configuration.
    name: t.ClassVar[str]
    #: Human name for messages.
    title: t.ClassVar[str]
    #: Most events in one request.
    max_batch: t.ClassVar[int] = 1000
    #: Events older than this are not sent (marked ``expired``); ``None``: no limit.
    max_age: t.ClassVar[timedelta | None] = None
    #: Configuration keys that must be set (besides ``platform`` and ``events``).
    required: t.ClassVar[tuple[str, ...]] = ()
    #: Default ``api_url``.
    api_url: t.ClassVar[str]
    #: What ``status`` says about a conversion whose value changed after it was sent.
    restatement: t.ClassVar[str] = "not supported"

    def __init__(self, destination: str, config: t.Mapping[str, t.Any]) -> None:
        self.destination = destination
        self.config = config
        for key in self.required:
            if not config.get(key):
                raise ConfigurationError(
                    f"Destination {destination!r} ({self.title}) needs {key!r} in"
                    " UTM_TRACKER_DESTINATIONS."
                )
        self.base_url = str(config.get("api_url") or self.api_url).rstrip("/")

    def event(self, event: Event) -> dict[str, t.Any] | str:
        """The platform's JSON for ``event``, or the reason it cannot be sent (a string)."""
        raise NotImplementedError

    def request(self, events: list[dict[str, t.Any]]) -> Request:
        """The request sending ``events`` (at most :attr:`max_batch`)."""
        raise NotImplementedError

    def outcomes(self, response: Response, count: int) -> list[Outcome]:
        """What ``response`` means for each of the ``count`` events sent (Google's error shape,
        ``{"error": {"message": ...}}``, by default).
        """
        answer = response.json()
        error = answer.get("error") if isinstance(answer, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        return [http_outcome(response, str(message) if message else None)] * count
