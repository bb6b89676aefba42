"""TikTok Events API: ``POST {api_url}/event/track/`` with the ``Access-Token`` header.

The body is ``{"event_source": "web", "event_source_id": <pixel code>, "data": [...]}``; each
event has ``event``, ``event_time`` (unix seconds), ``event_id`` (deduplicated with the pixel),
``user`` (``ttclid`` from the path; hashed ``email``/``phone`` only when allowed), ``page.url``
and ``properties`` (``value``, ``currency``); at most 1,000 events per request. TikTok answers
HTTP 200 with a non-zero ``code`` for a refused request.
"""

from __future__ import annotations

import typing as t

from . import identity
from .base import Event, Outcome, Platform, Request, Response, http_outcome, without_query

#: TikTok error codes meaning "too many requests" or a passing server error: retried.
RETRY_CODES = frozenset({40100, 50000, 50002})


class TikTok(Platform):
    name = "tiktok"
    title = "TikTok Events API"
    max_batch = 1000
    required = ("pixel_id", "access_token")
    api_url = "https://business-api.tiktok.com/open_api/v1.3"
    restatement = "not supported: the Events API has no way to change a sent event's value"

    def event(self, event: Event) -> dict[str, t.Any] | str:
        user: dict[str, t.Any] = {}
        click = event.clicks.get("ttclid")
        if click is not None:
            user["ttclid"] = click.value
        email = identity.hashed_email(event.user_data.get("email"))
        if email:
            user["email"] = email
        phone = identity.hashed_phone(event.user_data.get("phone"), plus=True)
        if phone:
            user["phone"] = phone
        if not user:
            return "no ttclid in its path and no contact data to match it"
        data: dict[str, t.Any] = {
            "event": event.platform_event,
            "event_time": int(event.occurred_at.timestamp()),
            "event_id": event.event_id,
            "user": user,
        }
        url = without_query(event.landing_url)
        if url:
            data["page"] = {"url": url}
        if event.value is not None:
            data["properties"] = {"value": float(event.value), "currency": event.currency}
        return data

    def request(self, events: list[dict[str, t.Any]]) -> Request:
        body: dict[str, t.Any] = {
            "event_source": "web",
            "event_source_id": str(self.config["pixel_id"]),
            "data": events,
        }
        if self.config.get("test_event_code"):
            body["test_event_code"] = str(self.config["test_event_code"])
        return Request(
            f"{self.base_url}/event/track/",
            {"Access-Token": str(self.config["access_token"])},
            body,
            secrets=("Access-Token",),
        )

    def outcomes(self, response: Response, count: int) -> list[Outcome]:
        answer = response.json()
        if not (200 <= response.status < 300) or not isinstance(answer, dict):
            return [http_outcome(response)] * count
        code = answer.get("code")
        if code == 0:
            return [Outcome(True)] * count
        message = f"TikTok code {code}: {answer.get('message') or ''}".strip()
        return [Outcome(False, retry=code in RETRY_CODES, message=message)] * count
