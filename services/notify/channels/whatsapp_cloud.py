"""The official WhatsApp Business Platform (Cloud API): pre-approved template messages with
parameters, and their delivery/read statuses from a signed webhook."""

from __future__ import annotations

from typing import Any

import httpx

from giliran.privacy import mask_phone
from services.notify import gateways
from services.notify.channels.base import (
    Contact,
    Guard,
    Handed,
    Outgoing,
    PermanentFailure,
    Recipient,
    Refused,
    TransientFailure,
    unanswered,
)
from services.notify.config import WhatsAppCloudConfig
from services.notify.gateways import Answer


class WhatsAppCloudChannel:
    medium = "whatsapp"
    receipts = True

    def __init__(self, config: WhatsAppCloudConfig) -> None:
        self.name = config.name
        self.config = config
        self._guard = Guard(config)
        self._client = httpx.AsyncClient(timeout=config.timeout_seconds)

    @property
    def url(self) -> str:
        return f"{self.config.api_url.rstrip('/')}/{self.config.phone_number_id}/messages"

    def recipient(self, contact: Contact | None) -> Recipient | None:
        if contact is None or not contact.phone:
            return None
        return Recipient(address=contact.phone, masked=mask_phone(contact.phone))

    def handles(self, template: str) -> bool:
        """Business-initiated WhatsApp messages must use an approved template: a message with
        no template configured here is not sent on this channel."""
        return template in self.config.templates

    def request_body(self, recipient: Recipient, outgoing: Outgoing) -> dict[str, Any]:
        template = self.config.templates[outgoing.template]
        language = self.config.languages.get(outgoing.language) or self.config.languages.get(
            "id", "id"
        )
        # Meta refuses an empty parameter: a value the message does not have is a dash.
        parameters = [
            {"type": "text", "text": outgoing.variables.get(name) or "-"}
            for name in template.parameters
        ]
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": recipient.address.lstrip("+"),
            "type": "template",
            "template": {"name": template.name, "language": {"code": language}},
        }
        if parameters:
            body["template"]["components"] = [{"type": "body", "parameters": parameters}]
        return body

    def read_receipts(self, doc: Any) -> list[gateways.Receipt]:
        return list(gateways.whatsapp_cloud_receipts(doc))

    async def send(self, recipient: Recipient, outgoing: Outgoing) -> Handed:
        if not self.handles(outgoing.template):
            raise PermanentFailure(f"no approved WhatsApp template for {outgoing.template}")
        return await self._guard.call(lambda: self._post(recipient, outgoing))

    async def _post(self, recipient: Recipient, outgoing: Outgoing) -> Handed:
        headers = {"Authorization": f"Bearer {self.config.access_token}"}
        with unanswered(self.config.timeout_seconds):
            response = await self._client.post(
                self.url, json=self.request_body(recipient, outgoing), headers=headers
            )
        verdict = gateways.judge_whatsapp_cloud(response.status_code, response.text)
        if verdict.answer is Answer.RETRY:
            raise TransientFailure(verdict.reason)
        if verdict.answer is Answer.REFUSED:
            raise Refused(verdict.reason)
        return Handed(1, verdict.gateway_id)

    async def close(self) -> None:
        await self._client.aclose()
