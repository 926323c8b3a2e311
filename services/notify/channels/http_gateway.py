"""Any HTTP SMS or WhatsApp gateway (Zenziva, Vonage, Infobip, Fonnte, Wablas): configuration."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from time import time

import httpx

from giliran.privacy import mask_phone
from services.notify.channels.base import (
    Contact,
    Guard,
    Outgoing,
    PermanentFailure,
    Recipient,
    TransientFailure,
)
from services.notify.config import HttpGatewayConfig
from services.notify.domain import sms_segments


class HttpGatewayChannel:
    def __init__(self, config: HttpGatewayConfig) -> None:
        self.name = config.name
        self.medium: str = config.medium
        self._config = config
        self._guard = Guard(config)
        self._client = httpx.AsyncClient(timeout=config.timeout_seconds)

    def recipient(self, contact: Contact | None) -> Recipient | None:
        if contact is None or not contact.phone:
            return None
        return Recipient(address=contact.phone, masked=mask_phone(contact.phone))

    def request_fields(self, recipient: Recipient, outgoing: Outgoing) -> dict[str, str]:
        phone = recipient.address
        values = {
            "phone": phone,
            "phone_digits": phone.lstrip("+"),
            "phone_local": "0" + phone[3:] if phone.startswith("+62") else phone,
            "text": outgoing.text,
            "ref": outgoing.delivery_id,
        }
        return {key: template.format(**values) for key, template in self._config.fields.items()}

    async def send(self, recipient: Recipient, outgoing: Outgoing) -> int:
        return await self._guard.call(lambda: self._post(recipient, outgoing))

    async def _post(self, recipient: Recipient, outgoing: Outgoing) -> int:
        config = self._config
        fields = self.request_fields(recipient, outgoing)
        headers = {**config.headers, "Idempotency-Key": outgoing.delivery_id}
        try:
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
        except httpx.TimeoutException as exc:
            raise TransientFailure(f"timeout after {config.timeout_seconds}s") from exc
        except httpx.HTTPError as exc:
            raise TransientFailure(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code in config.success_statuses:
            return sms_segments(outgoing.text) if config.cost == "segments" else 1
        reason = f"HTTP {response.status_code}: {response.text[:200]}"
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientFailure(reason, retry_after=_retry_after(response))
        raise PermanentFailure(reason)

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
