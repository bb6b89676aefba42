"""Google Ads through Google's Data Manager API: ``POST {api_url}/events:ingest``.

Built from the API's published REST shape (``google.ads.datamanager.v1.IngestEventsRequest``):
``destinations`` (the Google Ads account as ``operatingAccount`` and the conversion action id
as ``productDestinationId``, one per mapped conversion name, referenced by each event's
``destinationReferences``), ``events`` (``transactionId``, ``eventTimestamp``, one of
``adIdentifiers.gclid``/``gbraid``/``wbraid``, ``conversionValue``, ``currency``,
``eventSource`` ``WEB``, hashed ``userData`` when allowed) and ``encoding`` ``HEX``; at most
2,000 events per request. The OAuth access token comes from the configuration
(``access_token``) or, with the ``google`` extra (``google-auth``), from a service-account file
(``credentials_file``) or the application default credentials.
"""

from __future__ import annotations

import typing as t
from datetime import timezone

from . import identity
from .base import ConfigurationError, Event, Platform, Request

SCOPE = "https://www.googleapis.com/auth/datamanager"
#: The Google click IDs, in the order one is chosen (one only per conversion).
GOOGLE_CLICKS = ("gclid", "gbraid", "wbraid")


def google_click(clicks: t.Mapping[str, t.Any]) -> tuple[str, t.Any] | None:
    """The Google click of a path: the latest touch holding one, its gclid, else gbraid, else
    wbraid.
    """
    found = [(clicks[k].at, -i, k) for i, k in enumerate(GOOGLE_CLICKS) if k in clicks]
    if not found:
        return None
    _, _, key = max(found)
    return key, clicks[key]


def _digits(value: t.Any) -> str:
    return str(value).replace("-", "").strip()


class GoogleAds(Platform):
    name = "google-ads"
    title = "Google Ads (Data Manager API)"
    max_batch = 2000
    required = ("customer_id",)
    api_url = "https://datamanager.googleapis.com/v1"
    restatement = (
        "not supported: the Data Manager API has no conversion adjustments; upload a"
        " restatement in Google Ads (conversion adjustments) by hand"
    )

    def __init__(self, destination: str, config: t.Mapping[str, t.Any]) -> None:
        super().__init__(destination, config)
        self._token: str | None = None

    def event(self, event: Event) -> dict[str, t.Any] | str:
        data: dict[str, t.Any] = {
            "destinationReferences": [event.platform_event],
            "transactionId": event.event_id,
            "eventTimestamp": event.occurred_at.astimezone(timezone.utc)
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z"),
            "eventSource": "WEB",
        }
        click = google_click(event.clicks)
        if click is not None:
            data["adIdentifiers"] = {click[0]: click[1].value}
        ids = []
        email = identity.hashed_email(event.user_data.get("email"), google=True)
        if email:
            ids.append({"emailAddress": email})
        phone = identity.hashed_phone(event.user_data.get("phone"), plus=True)
        if phone:
            ids.append({"phoneNumber": phone})
        if ids:
            data["userData"] = {"userIdentifiers": ids}
        if click is None and not ids:
            return "no gclid, gbraid or wbraid in its path and no contact data to match it"
        if event.value is not None:
            data["conversionValue"] = float(event.value)
            if event.currency:
                data["currency"] = event.currency
        if event.consent:
            data["consent"] = {"adUserData": "CONSENT_GRANTED"}
        return data

    def request(self, events: list[dict[str, t.Any]]) -> Request:
        account = {"accountType": "GOOGLE_ADS", "accountId": _digits(self.config["customer_id"])}
        login = self.config.get("login_customer_id")
        destinations = []
        for action in dict.fromkeys(e["destinationReferences"][0] for e in events):
            destination: dict[str, t.Any] = {
                "reference": action,
                "operatingAccount": account,
                "productDestinationId": str(action),
            }
            if login:
                destination["loginAccount"] = {
                    "accountType": "GOOGLE_ADS",
                    "accountId": _digits(login),
                }
            destinations.append(destination)
        body: dict[str, t.Any] = {"destinations": destinations, "events": events}
        if any("userData" in e for e in events):
            body["encoding"] = "HEX"
        if self.config.get("validate_only"):
            body["validateOnly"] = True
        return Request(
            f"{self.base_url}/events:ingest",
            {"Authorization": f"Bearer {self.token()}"},
            body,
            secrets=("Authorization",),
        )

    def token(self) -> str:
        """The OAuth access token: ``access_token``, else one from google-auth."""
        if self.config.get("access_token"):
            return str(self.config["access_token"])
        if self._token is None:
            self._token = _google_auth_token(self.destination, self.config)
        return self._token


def _google_auth_token(destination: str, config: t.Mapping[str, t.Any]) -> str:
    try:
        import google.auth  # type: ignore[import-not-found,unused-ignore]
        import google.auth.transport.requests  # type: ignore[import-not-found,unused-ignore]
        from google.oauth2 import service_account  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise ConfigurationError(
            f"Destination {destination!r} (Google Ads) has no 'access_token'. Set one, or install"
            " the google extra (pip install 'flask-utm-tracker[google]') to use"
            " 'credentials_file' or the application default credentials."
        ) from None
    path = config.get("credentials_file")
    if path:
        credentials = service_account.Credentials.from_service_account_file(
            str(path), scopes=[SCOPE]
        )
    else:
        credentials, _ = google.auth.default(scopes=[SCOPE])
    credentials.refresh(google.auth.transport.requests.Request())
    return str(credentials.token)
