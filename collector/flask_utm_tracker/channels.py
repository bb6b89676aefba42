"""The channel of a touch: GA4's default channel grouping, plus "AI Assistants".

:func:`channel_for` evaluates GA4's rules in GA4's order, the first that matches wins. Which
sources are search, social, video or shopping sites comes from the vendored lists through
:func:`~flask_utm_tracker.classify.source_category`. :func:`click_id_source` is the one place
that says which source and medium an ad click ID stands for.
"""

from __future__ import annotations

import re
import typing as t

from .classify import source_category

#: Click IDs, in the order they decide when a URL carries several, with the source and medium
#: they stand for when the URL has no utm_* parameters. Lower-case names, as params.json has them.
CLICK_ID_SOURCES: dict[str, tuple[str, str]] = {
    "gclid": ("google", "cpc"),
    "gbraid": ("google", "cpc"),
    "wbraid": ("google", "cpc"),
    "dclid": ("google", "display"),
    "msclkid": ("bing", "cpc"),
    "ttclid": ("tiktok", "cpc"),
    "li_fat_id": ("linkedin", "cpc"),
    "twclid": ("twitter", "cpc"),
    "sccid": ("snapchat", "cpc"),
    "rdt_cid": ("reddit", "cpc"),
    "epik": ("pinterest", "cpc"),
    "qclid": ("quora", "cpc"),
    "ndclid": ("nextdoor", "cpc"),
    "yclid": ("yandex", "cpc"),
    "aclk": ("bing", "cpc"),
    "irclickid": ("impact", "affiliate"),
    "irclid": ("impact", "affiliate"),
    "fbclid": ("facebook", "social"),
    "igshid": ("instagram", "social"),
    "mc_cid": ("mailchimp", "email"),
    "mc_eid": ("mailchimp", "email"),
    "_kx": ("klaviyo", "email"),
}

#: Click IDs that platforms add to links nobody paid for (a shared post, a newsletter): they
#: never override a medium, where an ad platform's click ID does.
_UNPAID_CLICK_IDS = frozenset({"fbclid", "igshid", "mc_cid", "mc_eid", "_kx"})
#: The mediums :func:`~flask_utm_tracker.classify.classify_referrer` gives. An ad click ID
#: overrides them: the collector only falls back on the referrer when no utm_* was present.
_REFERRER_MEDIUMS = frozenset({"organic", "social", "email", "ai", "paid", "referral"})

# GA4's conditions (support.google.com/analytics/answer/9756891), lower-case.
_PAID = re.compile(r"^(.*cp.*|ppc|retargeting|paid.*)$")
_SHOPPING_CAMPAIGN = re.compile(r"^(.*(([^a-df-z]|^)shop|shopping).*)$")
_VIDEO_MEDIUM = re.compile(r"^(.*video.*)$")
_DIRECT_SOURCES = frozenset({"", "(direct)", "(not set)"})
_DIRECT_MEDIUMS = frozenset({"", "(none)", "(not set)"})
_DISPLAY_MEDIUMS = frozenset({"display", "banner", "expandable", "interstitial", "cpm"})
_SOCIAL_MEDIUMS = frozenset(
    {"social", "social-network", "social-media", "sm", "social network", "social media"}
)
_EMAIL = frozenset({"email", "e-mail", "e_mail", "e mail"})
_REFERRAL_MEDIUMS = frozenset({"referral", "app", "link"})

#: Every channel :func:`channel_for` returns, in the order its rules are evaluated.
CHANNELS = (
    "Direct",
    "Cross-network",
    "Paid Shopping",
    "Paid Search",
    "Paid Social",
    "Paid Video",
    "Display",
    "Paid Other",
    "AI Assistants",
    "Organic Shopping",
    "Organic Social",
    "Organic Video",
    "Organic Search",
    "Email",
    "Affiliates",
    "Referral",
    "Audio",
    "SMS",
    "Mobile Push Notifications",
    "Unassigned",
)


def click_id_source(click_ids: t.Mapping[str, str] | None) -> tuple[str, str] | None:
    """Return the ``(source, medium)`` the first known click ID of ``click_ids`` stands for.

    ``{"gclid": "..."}`` gives ``("google", "cpc")``, ``{"fbclid": "..."}`` gives
    ``("facebook", "social")`` (Facebook adds it to unpaid links too). Empty values are ignored.

    :param click_ids: click ID names (any case) and their values.
    """
    if not click_ids:
        return None
    present = {str(name).lower() for name, value in click_ids.items() if value}
    for name, pair in CLICK_ID_SOURCES.items():
        if name in present:
            return pair
    return None


def _paid_click_source(click_ids: t.Mapping[str, str] | None) -> tuple[str, str] | None:
    if not click_ids:
        return None
    paid = {
        name: value
        for name, value in click_ids.items()
        if str(name).lower() not in _UNPAID_CLICK_IDS
    }
    return click_id_source(paid)


def channel_for(
    source: str | None,
    medium: str | None,
    campaign: str | None = None,
    click_ids: t.Mapping[str, str] | None = None,
) -> str:
    """Return the default channel of a touch, by GA4's rules in GA4's order.

    Empty values and ``"(not set)"`` (the collector's filler) count as missing. A click ID
    decides the source and medium when both are missing; an ad platform's click ID (gclid,
    dclid, msclkid, ...) also when only the medium is missing or it came from the referrer
    (``"organic"``, ``"referral"``, ...), as GA4's auto-tagging does: ``gclid`` gives Paid
    Search, ``dclid`` Display, ``ttclid`` Paid Social; ``fbclid`` alone gives Organic Social.

    :param source: ``utm_source``, or what the click ID or the referrer said.
    :param medium: ``utm_medium``, or what the click ID or the referrer said (``"ai"`` for AI
        assistants).
    :param campaign: ``utm_campaign``.
    :param click_ids: the touch's click IDs, by name.
    :return: one of :data:`CHANNELS`.
    """
    source = (source or "").strip().lower()
    medium = (medium or "").strip().lower()
    campaign = (campaign or "").strip().lower()
    pair = None
    if source in _DIRECT_SOURCES and medium in _DIRECT_MEDIUMS:
        pair = click_id_source(click_ids)
    elif medium in _DIRECT_MEDIUMS or medium in _REFERRER_MEDIUMS:
        pair = _paid_click_source(click_ids)
    if pair is not None:
        source, medium = pair

    if source in _DIRECT_SOURCES and medium in _DIRECT_MEDIUMS and campaign in _DIRECT_MEDIUMS:
        return "Direct"
    if "cross-network" in campaign:
        return "Cross-network"
    category = source_category(source)
    paid = bool(_PAID.match(medium))
    shopping_campaign = bool(_SHOPPING_CAMPAIGN.match(campaign))
    if paid:
        if category == "shopping" or shopping_campaign:
            return "Paid Shopping"
        if category == "search":
            return "Paid Search"
        if category == "social":
            return "Paid Social"
        if category == "video":
            return "Paid Video"
    if medium in _DISPLAY_MEDIUMS:
        return "Display"
    if paid:
        return "Paid Other"
    if medium == "ai" or category == "ai":
        return "AI Assistants"
    if category == "shopping" or shopping_campaign:
        return "Organic Shopping"
    if category == "social" or medium in _SOCIAL_MEDIUMS:
        return "Organic Social"
    if category == "video" or _VIDEO_MEDIUM.match(medium):
        return "Organic Video"
    if category == "search" or medium == "organic":
        return "Organic Search"
    if source in _EMAIL or medium in _EMAIL:
        return "Email"
    if medium == "affiliate":
        return "Affiliates"
    if medium in _REFERRAL_MEDIUMS:
        return "Referral"
    if medium == "audio":
        return "Audio"
    if source == "sms" or medium == "sms":
        return "SMS"
    if (
        medium.endswith("push")
        or "mobile" in medium
        or "notification" in medium
        or source == "firebase"
    ):
        return "Mobile Push Notifications"
    return "Unassigned"
