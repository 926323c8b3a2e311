"""E-mail over SMTP (async, STARTTLS by default) for citizens who gave an address and consent."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from giliran.privacy import scrub
from services.notify.channels.base import (
    Contact,
    Guard,
    Handed,
    Outgoing,
    Recipient,
    Refused,
    TransientFailure,
)
from services.notify.config import EmailConfig


def _mask(address: str) -> str:
    user, _, domain = address.partition("@")
    return f"{user[:1]}***@{domain}"


class EmailChannel:
    medium = "email"

    def __init__(self, config: EmailConfig) -> None:
        self.name = config.name
        self._config = config
        self._guard = Guard(config)

    def recipient(self, contact: Contact | None) -> Recipient | None:
        if contact is None or not contact.email:
            return None
        return Recipient(address=contact.email, masked=_mask(contact.email))

    async def send(self, recipient: Recipient, outgoing: Outgoing) -> Handed:
        return await self._guard.call(lambda: self._send(recipient, outgoing))

    async def _send(self, recipient: Recipient, outgoing: Outgoing) -> Handed:
        config = self._config
        message = EmailMessage()
        message["From"] = config.sender
        message["To"] = recipient.address
        message["Subject"] = outgoing.subject or "Giliran"
        message["Message-ID"] = f"<{outgoing.delivery_id.replace(':', '.')}@giliran>"
        message.set_content(outgoing.text)
        try:
            await aiosmtplib.send(
                message,
                hostname=config.host,
                port=config.port,
                username=config.username,
                password=config.password,
                start_tls=config.starttls,
                timeout=config.timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # The server's words quote the address: masked before they are kept anywhere.
            raise Refused(scrub(f"recipient refused: {exc}")[:200]) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientFailure(scrub(f"{type(exc).__name__}: {exc}")[:200]) from exc
        return Handed(1)

    async def close(self) -> None:
        return None
