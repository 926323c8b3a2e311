"""Signed webhooks: agencies receive Giliran's events, HMAC-SHA256 signed with a shared secret."""

from __future__ import annotations

import fnmatch
import json
import time
from urllib.parse import urlsplit

import httpx

from giliran.privacy import scrub
from services.notify.channels.base import (
    Contact,
    Guard,
    Handed,
    Outgoing,
    PermanentFailure,
    Recipient,
    TransientFailure,
)
from services.notify.config import WebhookConfig
from services.notify.domain import sign_webhook

SIGNATURE_HEADER = "X-Giliran-Signature"


class WebhookChannel:
    medium = "webhook"

    def __init__(self, config: WebhookConfig) -> None:
        self.name = config.name
        self._config = config
        self._guard = Guard(config)
        self._client = httpx.AsyncClient(timeout=config.timeout_seconds)

    def wants(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self._config.types)

    def recipient(self, contact: Contact | None) -> Recipient | None:
        return Recipient(address=self._config.url, masked=urlsplit(self._config.url).netloc)

    async def send(self, recipient: Recipient, outgoing: Outgoing) -> Handed:
        return await self._guard.call(lambda: self._post(outgoing))

    async def _post(self, outgoing: Outgoing) -> Handed:
        body = json.dumps(outgoing.event, separators=(",", ":"), sort_keys=True).encode()
        timestamp = int(time.time())
        headers = {
            "content-type": "application/cloudevents+json",
            "Idempotency-Key": outgoing.delivery_id,
            SIGNATURE_HEADER: sign_webhook(self._config.secret, timestamp, body),
        }
        try:
            response = await self._client.post(self._config.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TransientFailure(scrub(f"{type(exc).__name__}: {exc}")[:200]) from exc
        if 200 <= response.status_code < 300:
            return Handed(0)
        reason = f"HTTP {response.status_code}: {scrub(response.text[:4000])[:200]}"
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientFailure(reason)
        raise PermanentFailure(reason)

    async def close(self) -> None:
        await self._client.aclose()
