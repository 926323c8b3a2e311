"""The console channel: writes each message to the log (the embedded default and demo channel)."""

from __future__ import annotations

import logging

from giliran.privacy import mask_phone, without_status_link
from services.notify.channels.base import Contact, Handed, Outgoing, Recipient
from services.notify.config import ConsoleConfig

log = logging.getLogger("giliran.notify.console")


class ConsoleChannel:
    """Reaches nobody, so it needs no consent; never logs a full phone number."""

    medium = "console"

    def __init__(self, config: ConsoleConfig) -> None:
        self.name = config.name

    def recipient(self, contact: Contact | None) -> Recipient | None:
        if contact is not None and contact.phone:
            return Recipient(address=contact.phone, masked=mask_phone(contact.phone))
        return Recipient(address="console", masked="console")

    async def send(self, recipient: Recipient, outgoing: Outgoing) -> Handed:
        # The log outlives any retention: the masked number, and the text without its link.
        text = without_status_link(outgoing.text)
        log.info("[%s -> %s] %s", outgoing.template, recipient.masked, text)
        return Handed(0)

    async def close(self) -> None:
        return None
