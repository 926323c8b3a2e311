"""The one place a phone number is masked for screens and logs (UU 27/2022: show the least)."""

from __future__ import annotations

import re


def mask_phone(e164: str) -> str:
    """`+6281234567890` -> `+6281******890`: enough for a citizen to recognise, no more."""
    return e164[:5] + "*" * max(len(e164) - 8, 0) + e164[-3:]


# An Indonesian mobile number as people and gateways write it: 0812…, +62 812…, 62812…, (+62)…,
# URL-encoded %2B62…, digits grouped by spaces, dashes or dots. Not inside a longer digit run
# (a message id or an amount is left alone).
_PHONE = re.compile(r"(?<!\d)(?:%2[bB]|\+)?(?:\(\+?62\)|62|0)[\s.\-]?8(?:[\s.\-]?\d){7,11}(?!\d)")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# A citizen's status link, `/s/<token>` (URL-encoded `%2Fs%2F<token>` in a quoted request).
_STATUS_LINK = re.compile(r"((?:/|%2[fF])s(?:/|%2[fF]))[A-Za-z0-9_-]+")


def _masked(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", re.sub(r"^%2[bB]", "", match.group(0)))
    if digits.startswith("0"):
        digits = "62" + digits[1:]
    return mask_phone("+" + digits)


def _masked_email(match: re.Match[str]) -> str:
    user, _, domain = match.group(0).partition("@")
    return f"{user[:1]}***@{domain}"


def without_status_link(text: str) -> str:
    """A message as logs and operators see it: the citizen's status link opens their request
    (check-in, survey), so only the citizen's own phone or mailbox shows it whole."""
    return _STATUS_LINK.sub(r"\1…", text)


def scrub(text: str) -> str:
    """Text that came from outside (a gateway's answer or error) with every phone number,
    e-mail address and status-link token in it masked: gateways echo the destination and the
    message, and what they say ends up in logs, stores, events and pages."""
    # A gateway that refuses a message often quotes it back, status link included.
    return _EMAIL.sub(_masked_email, _PHONE.sub(_masked, without_status_link(text)))
