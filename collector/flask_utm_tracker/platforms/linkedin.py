"""LinkedIn Conversions API: ``POST {api_url}/conversionEvents`` as a batch create.

Headers: ``Authorization: Bearer``, ``LinkedIn-Version`` (``YYYYMM``),
``X-Restli-Protocol-Version: 2.0.0`` and ``X-RestLi-Method: BATCH_CREATE``; the body is
``{"elements": [...]}``, each with ``conversion`` (``urn:lla:llaPartnerConversion:<rule id>``),
``conversionHappenedAt`` (epoch milliseconds), ``conversionValue`` (``currencyCode``, ``amount``
as a decimal string), ``eventId`` and ``user.userIds`` (``LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID``
from the path's li_fat_id; ``SHA256_EMAIL`` only when allowed). LinkedIn refuses events older
than 90 days; the answer gives a status per element.
"""

from __future__ import annotations

import typing as t
from datetime import timedelta

from . import identity
from .base import Event, Outcome, Platform, Request, Response, amount, http_outcome

#: LinkedIn-Version sent unless the destination sets ``version``.
VERSION = "202601"


class LinkedIn(Platform):
    name = "linkedin"
    title = "LinkedIn Conversions API"
    max_batch = 1000  # LinkedIn takes up to 5,000; smaller batches fail smaller
    max_age = timedelta(days=90)
    required = ("access_token",)
    api_url = "https://api.linkedin.com/rest"
    restatement = "not supported: the Conversions API has no way to change a sent event's value"

    def event(self, event: Event) -> dict[str, t.Any] | str:
        ids = []
        email = identity.hashed_email(event.user_data.get("email"))
        if email:
            ids.append({"idType": "SHA256_EMAIL", "idValue": email})
        click = event.clicks.get("li_fat_id")
        if click is not None:
            ids.append({"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": click.value})
        if not ids:
            return "no li_fat_id in its path and no email to match it"
        data: dict[str, t.Any] = {
            "conversion": f"urn:lla:llaPartnerConversion:{event.platform_event}",
            "conversionHappenedAt": int(event.occurred_at.timestamp() * 1000),
            "eventId": event.event_id,
            "user": {"userIds": ids},
        }
        if event.value is not None and event.currency:
            data["conversionValue"] = {
                "currencyCode": event.currency,
                "amount": amount(event.value),
            }
        return data

    def request(self, events: list[dict[str, t.Any]]) -> Request:
        return Request(
            f"{self.base_url}/conversionEvents",
            {
                "Authorization": f"Bearer {self.config['access_token']}",
                "LinkedIn-Version": str(self.config.get("version") or VERSION),
                "X-Restli-Protocol-Version": "2.0.0",
                "X-RestLi-Method": "BATCH_CREATE",
            },
            {"elements": events},
            secrets=("Authorization",),
        )

    def outcomes(self, response: Response, count: int) -> list[Outcome]:
        answer = response.json()
        elements = answer.get("elements") if isinstance(answer, dict) else None
        if not (200 <= response.status < 300) or not isinstance(elements, list):
            message = answer.get("message") if isinstance(answer, dict) else None
            return [http_outcome(response, message)] * count
        outcomes = []
        for i in range(count):
            element = elements[i] if i < len(elements) and isinstance(elements[i], dict) else {}
            status = element.get("status", 201)
            if isinstance(status, int) and status >= 400:
                text = f"HTTP {status}: {element.get('message') or element.get('error') or ''}"
                retry = status == 429 or status >= 500
                outcomes.append(Outcome(False, retry=retry, message=text.strip()))
            else:
                outcomes.append(Outcome(True))
        return outcomes
