"""Meta Conversions API: ``POST {api_url}/{pixel_id}/events``.

Each event is a website server event: ``event_name``, ``event_time`` (unix seconds),
``action_source`` ``"website"``, ``event_id`` (Meta deduplicates it with the pixel's event of the
same name within 48 hours), ``event_source_url`` (the last touch's landing URL without its query
string), ``user_data`` (``fbc`` built from the path's fbclid; hashed ``em``/``ph`` only from the
host's callback when allowed) and ``custom_data`` (``value``, ``currency``). Meta takes at most
1,000 events per request and refuses a whole request holding an event older than 7 days, so
those are marked expired instead of sent.
"""

from __future__ import annotations

import typing as t
from datetime import timedelta

from . import identity
from .base import Event, Outcome, Platform, Request, Response, http_outcome, without_query

#: Graph API error codes that mean "too many calls" or "try again": retried with backoff.
RETRY_CODES = frozenset({1, 2, 4, 17, 32, 341, 613, 80004})


def fbc(fbclid: str, clicked_at_ms: int) -> str:
    """Meta's click ID parameter: ``fb.1.<ms of the click>.<fbclid>``, the fbclid unchanged."""
    return f"fb.1.{clicked_at_ms}.{fbclid}"


class Meta(Platform):
    name = "meta"
    title = "Meta Conversions API"
    max_batch = 1000
    max_age = timedelta(days=7)
    required = ("pixel_id", "access_token")
    api_url = "https://graph.facebook.com/v25.0"
    restatement = (
        "not supported: Meta's Conversions API keeps the first event of an event_id, so a"
        " changed value (a refund) cannot be sent again"
    )

    def event(self, event: Event) -> dict[str, t.Any] | str:
        user: dict[str, t.Any] = {}
        click = event.clicks.get("fbclid")
        if click is not None:
            user["fbc"] = fbc(click.value, int(click.at.timestamp() * 1000))
        email = identity.hashed_email(event.user_data.get("email"))
        if email:
            user["em"] = [email]
        phone = identity.hashed_phone(event.user_data.get("phone"))
        if phone:
            user["ph"] = [phone]
        if not user:
            return "no fbclid in its path and no contact data to match it"
        agent = event.user_data.get("user_agent")
        if isinstance(agent, str) and agent:
            user["client_user_agent"] = agent
        data: dict[str, t.Any] = {
            "event_name": event.platform_event,
            "event_time": int(event.occurred_at.timestamp()),
            "action_source": "website",
            "event_id": event.event_id,
        }
        url = without_query(event.landing_url)
        if url:
            data["event_source_url"] = url
        data["user_data"] = user
        if event.value is not None:
            data["custom_data"] = {"value": float(event.value), "currency": event.currency}
        return data

    def request(self, events: list[dict[str, t.Any]]) -> Request:
        body: dict[str, t.Any] = {"data": events, "access_token": str(self.config["access_token"])}
        if self.config.get("test_event_code"):
            body["test_event_code"] = str(self.config["test_event_code"])
        return Request(
            f"{self.base_url}/{self.config['pixel_id']}/events",
            {},
            body,
            secrets=("access_token",),
        )

    def outcomes(self, response: Response, count: int) -> list[Outcome]:
        answer = response.json()
        error = answer.get("error") if isinstance(answer, dict) else None
        if 200 <= response.status < 300 or not isinstance(error, dict):
            return [http_outcome(response)] * count
        message = str(error.get("error_user_msg") or error.get("message") or "")
        outcome = http_outcome(response, message or None)
        if error.get("code") in RETRY_CODES and not outcome.retry:
            outcome = Outcome(False, retry=True, message=outcome.message)
        return [outcome] * count
