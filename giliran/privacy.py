"""The one place a phone number is masked for screens and logs (UU 27/2022: show the least)."""

from __future__ import annotations


def mask_phone(e164: str) -> str:
    """`+6281234567890` -> `+6281******890`: enough for a citizen to recognise, no more."""
    return e164[:5] + "*" * max(len(e164) - 8, 0) + e164[-3:]
