"""Notification channels: each takes a rendered message to one recipient; console is default."""

from __future__ import annotations

import logging
from typing import Protocol

from giliran.privacy import mask_phone
from services.notify.domain import Message

log = logging.getLogger("giliran.notify.console")


class Channel(Protocol):
    name: str

    def recipient_for(self, phone: str | None) -> str | None:
        """Who this channel would send to, or None when it cannot reach this citizen."""

    async def send(self, recipient: str, message: Message) -> int:
        """Send; return cost units (SMS segments for metered channels). Raise on failure."""


class ConsoleChannel:
    """Writes each message to the log: the embedded default, and what an operator reads in a demo.
    Never logs a full phone number."""

    name = "console"

    def recipient_for(self, phone: str | None) -> str | None:
        return mask_phone(phone) if phone else "console"

    async def send(self, recipient: str, message: Message) -> int:
        log.info("[%s -> %s] %s", message.template, recipient, message.text)
        return 0
