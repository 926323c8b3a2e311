"""The credential epoch in a NATS key-value bucket: how an action knows no credential changed."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

log = logging.getLogger("giliran.auth")

# One key whose revision (the bucket stream's sequence of its last put) counts the changes.
BUCKET = "giliran_credentials"
KEY = "changed"
# An action waits this long for the epoch before it asks the store instead.
READ_WITHIN = 0.5


class KvEpochs:
    """`Epochs` over JetStream KV. The revision only grows while the bucket lives; a bucket
    made again starts over, which an action sees as a different epoch (it asks the store)."""

    def __init__(self, kv: KeyValue, connection: Client) -> None:
        self._kv = kv
        self._connection = connection

    @classmethod
    async def open(cls, connection: Client, js: JetStreamContext) -> KvEpochs:
        try:
            kv = await js.key_value(BUCKET)
        except BucketNotFoundError:
            kv = await js.create_key_value(
                bucket=BUCKET,
                history=1,
                direct=True,  # reads answered by any server holding it, without the leader
                description="Giliran: credential changes (ADR 0231)",
            )
        return cls(kv, connection)

    async def current(self) -> int | None:
        if not self._connection.is_connected:
            return None  # reconnecting: do not hold the action for a reply that cannot come
        try:
            async with asyncio.timeout(READ_WITHIN):
                entry = await self._kv.get(KEY)
        except KeyNotFoundError:
            return 0  # nothing changed since the bucket was made
        except Exception as exc:  # unknown: the caller asks the store
            log.debug("credential epoch unknown (%s)", exc)
            return None
        return entry.revision

    async def advance(self) -> None:
        async with asyncio.timeout(READ_WITHIN * 2):
            await self._kv.put(KEY, b"")
