"""GA4's default channel grouping, one table row (at least) per rule, in GA4's order."""

from __future__ import annotations

import pytest
from flask_utm_tracker.channels import CHANNELS, channel_for, click_id_source
from flask_utm_tracker.classify import classify_referrer

Row = tuple[str | None, str | None, str | None, dict[str, str] | None, str]

RULES: list[Row] = [
    # Direct: no source, no medium (nor anything else).
    (None, None, None, None, "Direct"),
    ("", "", "", {}, "Direct"),
    ("(direct)", "(none)", None, None, "Direct"),
    ("(not set)", "(not set)", None, None, "Direct"),
    # Cross-network: the campaign name says so, whatever source and medium say.
    ("google", "cpc", "pmax-cross-network-q3", None, "Cross-network"),
    ("(not set)", "(not set)", "cross-network", None, "Cross-network"),
    # Paid Shopping: a shopping site or a shopping campaign, and a paid medium.
    ("amazon", "cpc", None, None, "Paid Shopping"),
    ("google", "cpc", "summer-shopping", None, "Paid Shopping"),
    ("google", "ppc", "shop-spring", None, "Paid Shopping"),
    ("facebook", "paid", "2024 shop", None, "Paid Shopping"),
    ("igshopping", "paid_social", None, None, "Paid Shopping"),
    # Paid Search: a search site and a paid medium ("cp" anywhere, ppc, retargeting, paid*).
    ("google", "cpc", None, None, "Paid Search"),
    ("bing", "ppc", None, None, "Paid Search"),
    ("yahoo", "retargeting", None, None, "Paid Search"),
    ("duckduckgo", "paidsearch", None, None, "Paid Search"),
    ("google.co.uk", "cpc", "workshop", None, "Paid Search"),  # "workshop" is no shop campaign
    ("google", "paid", None, None, "Paid Search"),  # an ad-serving referrer (classify: paid)
    # Paid Social.
    ("facebook", "cpc", None, None, "Paid Social"),
    ("fb", "paid", None, None, "Paid Social"),
    ("linkedin", "cpc", None, None, "Paid Social"),
    ("tiktok", "cpc", None, None, "Paid Social"),
    ("m.facebook.com", "paid-social", None, None, "Paid Social"),
    # Paid Video.
    ("youtube", "cpc", None, None, "Paid Video"),
    ("vimeo.com", "cpv", None, None, "Paid Video"),
    # Display: by medium only.
    ("google", "display", None, None, "Display"),
    ("dv360", "banner", None, None, "Display"),
    ("publisher", "expandable", None, None, "Display"),
    ("publisher", "interstitial", None, None, "Display"),
    ("publisher", "cpm", None, None, "Display"),
    # Paid Other: a paid medium and no category.
    ("newsletter-sponsor", "cpc", None, None, "Paid Other"),
    ("partner", "paid", None, None, "Paid Other"),
    # AI Assistants: the "ai" medium of classify_referrer, or an AI assistant's name or host.
    ("chatgpt", "ai", None, None, "AI Assistants"),
    ("chatgpt.com", "(not set)", None, None, "AI Assistants"),  # ChatGPT's own utm_source
    ("perplexity", "referral", None, None, "AI Assistants"),
    ("claude", "ai", None, None, "AI Assistants"),
    # Organic Shopping.
    ("amazon", "referral", None, None, "Organic Shopping"),
    ("ebay.de", None, None, None, "Organic Shopping"),
    ("blog", "referral", "black-friday-shop", None, "Organic Shopping"),
    # Organic Social: a social site, or a social medium.
    ("facebook", "social", None, None, "Organic Social"),
    ("t.co", "referral", None, None, "Organic Social"),
    ("linkedin", "(not set)", None, None, "Organic Social"),
    ("mastodon", "social-network", None, None, "Organic Social"),
    ("club", "social-media", None, None, "Organic Social"),
    ("club", "sm", None, None, "Organic Social"),
    ("club", "social network", None, None, "Organic Social"),
    ("club", "social media", None, None, "Organic Social"),
    # Organic Video: a video site, or "video" in the medium.
    ("youtube", "social", None, None, "Organic Social"),  # GA4: the social medium comes first
    ("youtube", "referral", None, None, "Organic Video"),
    ("m.youtube.com", None, None, None, "Organic Video"),
    ("partner", "video-embed", None, None, "Organic Video"),
    # Organic Search: a search site, or the medium "organic".
    ("google", "organic", None, None, "Organic Search"),
    ("duckduckgo", "referral", None, None, "Organic Search"),
    ("startpage", "organic", None, None, "Organic Search"),
    ("wiki", "organic", None, None, "Organic Search"),
    # Email: source or medium.
    ("newsletter", "email", None, None, "Email"),
    ("gmail", "email", None, None, "Email"),
    ("email", "(not set)", None, None, "Email"),
    ("crm", "e-mail", None, None, "Email"),
    ("crm", "e_mail", None, None, "Email"),
    ("crm", "e mail", None, None, "Email"),
    # Affiliates.
    ("partner", "affiliate", None, None, "Affiliates"),
    # Referral.
    ("news.ycombinator.com", "referral", None, None, "Organic Social"),  # a social site
    ("example.org", "referral", None, None, "Referral"),
    ("ios", "app", None, None, "Referral"),
    ("bio", "link", None, None, "Referral"),
    # Audio.
    ("spotify", "audio", None, None, "Audio"),
    # SMS.
    ("sms", None, None, None, "SMS"),
    ("twilio", "sms", None, None, "SMS"),
    # Mobile Push Notifications.
    ("app", "web-push", None, None, "Mobile Push Notifications"),
    ("app", "mobile", None, None, "Mobile Push Notifications"),
    ("app", "notification", None, None, "Mobile Push Notifications"),
    ("firebase", None, None, None, "Mobile Push Notifications"),
    # Unassigned: anything else.
    ("foo", "bar", None, None, "Unassigned"),
    ("(not set)", "(not set)", "spring", None, "Unassigned"),
    # Click IDs with no utm_*: their paid channel (fbclid is on unpaid posts too).
    (None, None, None, {"gclid": "x"}, "Paid Search"),
    (None, None, None, {"gbraid": "x"}, "Paid Search"),
    (None, None, None, {"wbraid": "x"}, "Paid Search"),
    (None, None, None, {"msclkid": "x"}, "Paid Search"),
    (None, None, None, {"yclid": "x"}, "Paid Search"),
    (None, None, None, {"dclid": "x"}, "Display"),
    (None, None, None, {"ttclid": "x"}, "Paid Social"),
    (None, None, None, {"li_fat_id": "x"}, "Paid Social"),
    (None, None, None, {"twclid": "x"}, "Paid Social"),
    (None, None, None, {"ScCid": "x"}, "Paid Social"),
    (None, None, None, {"rdt_cid": "x"}, "Paid Social"),
    (None, None, None, {"epik": "x"}, "Paid Social"),
    (None, None, None, {"fbclid": "x"}, "Organic Social"),
    (None, None, None, {"irclickid": "x"}, "Affiliates"),
    (None, None, None, {"mc_cid": "x"}, "Email"),
    (None, None, None, {"unknown": "x"}, "Direct"),
    (None, None, None, {"gclid": ""}, "Direct"),
    # What the collector passes: the click ID's own pair, or a referrer's pair it overrides.
    ("google", "cpc", None, {"gclid": "x"}, "Paid Search"),
    ("facebook", "social", None, {"fbclid": "x"}, "Organic Social"),
    ("google", "organic", None, {"dclid": "x"}, "Display"),
    ("snapchat", "social", None, {"sccid": "x"}, "Paid Social"),
    ("example.org", "referral", None, {"gclid": "x", "fbclid": "y"}, "Paid Search"),
    # utm_* wins over a click ID that is on unpaid links too.
    ("newsletter", "email", None, {"fbclid": "x"}, "Email"),
    ("facebook", "paid", None, {"fbclid": "x"}, "Paid Social"),
    # utm_source alone: an ad click ID decides, one on unpaid links too does not.
    ("spring-sale", "(not set)", None, {"gclid": "x"}, "Paid Search"),
    ("newsletter", "(not set)", None, {"fbclid": "x"}, "Unassigned"),
]


@pytest.mark.parametrize(("source", "medium", "campaign", "click_ids", "channel"), RULES)
def test_channel(
    source: str | None,
    medium: str | None,
    campaign: str | None,
    click_ids: dict[str, str] | None,
    channel: str,
) -> None:
    assert channel_for(source, medium, campaign, click_ids) == channel


def test_every_channel_covered() -> None:
    assert {row[-1] for row in RULES} == set(CHANNELS)


def test_case_and_spaces_ignored() -> None:
    assert channel_for(" Google ", "CPC") == "Paid Search"


@pytest.mark.parametrize(
    ("url", "channel"),
    [
        ("https://www.google.com/", "Organic Search"),
        ("https://www.bing.com/search?q=x", "Organic Search"),
        ("https://l.facebook.com/l.php", "Organic Social"),
        ("https://t.co/x", "Organic Social"),
        ("https://mail.google.com/mail/u/0/", "Email"),
        ("https://chatgpt.com/", "AI Assistants"),
        ("https://www.perplexity.ai/", "AI Assistants"),
        ("https://pagead2.googlesyndication.com/", "Paid Search"),
        ("https://trc.taboola.com/", "Paid Other"),
        ("https://www.youtube.com/", "Organic Social"),
        ("https://www.amazon.de/dp/1", "Organic Shopping"),
        ("https://example.org/blog", "Referral"),
    ],
)
def test_channel_of_classified_referrer(url: str, channel: str) -> None:
    referrer = classify_referrer(url)
    assert referrer is not None
    assert channel_for(referrer.source, referrer.medium) == channel


@pytest.mark.parametrize(
    ("click_ids", "expected"),
    [
        ({"gclid": "a"}, ("google", "cpc")),
        ({"GCLID": "a"}, ("google", "cpc")),
        ({"wbraid": "a"}, ("google", "cpc")),
        ({"msclkid": "a"}, ("bing", "cpc")),
        ({"ttclid": "a"}, ("tiktok", "cpc")),
        ({"li_fat_id": "a"}, ("linkedin", "cpc")),
        ({"twclid": "a"}, ("twitter", "cpc")),
        ({"fbclid": "a"}, ("facebook", "social")),
        ({"fbclid": "a", "gclid": "b"}, ("google", "cpc")),
        ({"gclid": ""}, None),
        ({"utm_source": "a"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_click_id_source(
    click_ids: dict[str, str] | None, expected: tuple[str, str] | None
) -> None:
    assert click_id_source(click_ids) == expected
