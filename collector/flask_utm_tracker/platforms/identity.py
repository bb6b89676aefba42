"""Contact data for matching: normalised as each platform documents it, then SHA-256 hashed.

Only what the host's ``@tracker.user_data`` callback returns is ever hashed, and only for a
destination whose configuration has ``"send_user_data": True``.

- Meta (Conversions API, customer information parameters): email trimmed and lower-cased; phone
  as digits only, with its country code and without symbols, letters or leading zeros
  (``+1 (616) 954-78 88`` -> ``16169547888``).
- Google (Data Manager API, "format user data"): email trimmed and lower-cased, and for
  ``gmail.com``/``googlemail.com`` addresses the dots of the local part removed; phone in E.164
  (``+16169547888``).
- TikTok (Events API): email trimmed and lower-cased; phone in E.164.
- LinkedIn (Conversions API): ``SHA256_EMAIL``, the email trimmed and lower-cased.

A phone number is used only when it is international (it starts with ``+`` or ``00``): a
national number cannot be given its country code here, and a wrong one would match someone else.
"""

from __future__ import annotations

import hashlib
import re

_HASHED = re.compile(r"[0-9a-f]{64}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_GMAIL = ("gmail.com", "googlemail.com")


def sha256(value: str) -> str:
    """The lower-case hex SHA-256 of ``value`` (UTF-8)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def normal_email(value: object, *, google: bool = False) -> str | None:
    """``value`` trimmed and lower-cased, or ``None`` when it is not an email address.

    :param google: also remove the dots before the ``@`` of gmail.com and googlemail.com
        addresses, as Google's normalisation rules ask.
    """
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    if not _EMAIL.fullmatch(email):
        return None
    if google:
        local, _, domain = email.rpartition("@")
        if domain in _GMAIL:
            email = local.replace(".", "") + "@" + domain
    return email


def phone_digits(value: object) -> str | None:
    """The digits of an international phone number, country code first (``16169547888``), or
    ``None`` when ``value`` is not one (no ``+``/``00`` prefix, or too few or many digits).
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith("+"):
        rest = text[1:]
    elif text.startswith("00"):
        rest = text[2:]
    else:
        return None
    if re.search(r"[^\d\s().\-/]", rest):
        return None
    digits = re.sub(r"\D", "", rest).lstrip("0")
    # E.164: at most 15 digits; the shortest numbers in use have 8 with the country code.
    return digits if 8 <= len(digits) <= 15 else None


def hashed_email(value: object, *, google: bool = False) -> str | None:
    """The SHA-256 of the normalised email, or ``value`` itself when it is already a SHA-256."""
    if isinstance(value, str) and _HASHED.fullmatch(value.strip()):
        return value.strip()
    email = normal_email(value, google=google)
    return sha256(email) if email else None


def hashed_phone(value: object, *, plus: bool = False) -> str | None:
    """The SHA-256 of the normalised phone number, or ``value`` when it is already a SHA-256.

    :param plus: hash the E.164 form with its ``+`` (Google, TikTok); without it, the digits
        alone (Meta).
    """
    if isinstance(value, str) and _HASHED.fullmatch(value.strip()):
        return value.strip()
    digits = phone_digits(value)
    if digits is None:
        return None
    return sha256("+" + digits if plus else digits)
