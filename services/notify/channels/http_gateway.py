"""Any HTTP SMS or WhatsApp gateway (Zenziva, Fonnte, Infobip, Wablas...): the request is
configuration, the answer is judged by the gateway's profile (its body, not only its status)."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from time import time
from typing import Any

import httpx

from giliran.privacy import mask_phone
from services.notify import gateways
from services.notify.channels.base import (
    Contact,
    Guard,
    Handed,
    Outgoing,
    Recipient,
    Refused,
    TransientFailure,
    unanswered,
)
from services.notify.config import HttpGatewayConfig
from services.notify.domain import sms_segments
from services.notify.gateways import Answer, Verdict


class HttpGatewayChannel:
    def __init__(self, config: HttpGatewayConfig) -> None:
        self.name = config.name
        self.medium: str = config.medium
        self.config = config
        self._guard = Guard(config)
        self._client = httpx.AsyncClient(timeout=config.timeout_seconds)
        self._accept = (
            gateways.BodyRule(**config.accept.model_dump()) if config.accept is not None else None
        )
        self._receipt = (
            gateways.ReceiptRule(**config.receipt.model_dump())
            if config.receipt is not None
            else None
        )

    @property
    def receipts(self) -> bool:
        return self.config.receipts

    def recipient(self, contact: Contact | None) -> Recipient | None:
        if contact is None or not contact.phone:
            return None
        return Recipient(address=contact.phone, masked=mask_phone(contact.phone))

    def request_fields(self, recipient: Recipient, outgoing: Outgoing) -> dict[str, Any]:
        phone = recipient.address
        values = {
            "phone": phone,
            "phone_digits": phone.lstrip("+"),
            "phone_local": "0" + phone[3:] if phone.startswith("+62") else phone,
            "text": outgoing.text,
            "ref": outgoing.delivery_id,
            "receipt_url": outgoing.receipt_url or "",
        }

        def fill(template: Any) -> Any:
            if isinstance(template, str):
                return template.format(**values)
            if isinstance(template, list):
                return [fill(item) for item in template]
            if isinstance(template, dict):
                return {key: fill(item) for key, item in template.items()}
            return template

        return {key: fill(template) for key, template in self.config.fields.items()}

    def judge(self, status: int, body: str) -> Verdict:
        profile = self.config.profile
        if profile == "fonnte":
            return gateways.judge_fonnte(status, body)
        if profile == "zenziva":
            return gateways.judge_zenziva(status, body)
        if profile == "infobip":
            return gateways.judge_infobip(status, body)
        return gateways.judge_generic(status, body, self.config.success_statuses, self._accept)

    def read_receipts(self, doc: Any) -> list[gateways.Receipt]:
        profile = self.config.profile
        if profile == "fonnte":
            return list(gateways.fonnte_receipts(doc))
        if profile == "infobip":
            return list(gateways.infobip_receipts(doc))
        if profile == "generic" and self._receipt is not None:
            return list(gateways.generic_receipts(doc, self._receipt))
        return []

    async def send(self, recipient: Recipient, outgoing: Outgoing) -> Handed:
        return await self._guard.call(lambda: self._post(recipient, outgoing))

    async def _post(self, recipient: Recipient, outgoing: Outgoing) -> Handed:
        config = self.config
        fields = self.request_fields(recipient, outgoing)
        headers = {**config.headers, "Idempotency-Key": outgoing.delivery_id}
        with unanswered(config.timeout_seconds):
            if config.encoding == "json":
                response = await self._client.request(
                    config.method, config.url, json=fields, headers=headers
                )
            elif config.encoding == "form":
                response = await self._client.request(
                    config.method, config.url, data=fields, headers=headers
                )
            else:
                response = await self._client.request(
                    config.method, config.url, params=fields, headers=headers
                )
        verdict = self.judge(response.status_code, response.text)
        if verdict.answer is Answer.RETRY:
            raise TransientFailure(verdict.reason, retry_after=_retry_after(response))
        if verdict.answer is Answer.REFUSED:
            raise Refused(verdict.reason)
        cost = sms_segments(outgoing.text) if config.cost == "segments" else 1
        return Handed(cost, verdict.gateway_id)

    async def close(self) -> None:
        await self._client.aclose()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time())
        except (TypeError, ValueError):
            return None
