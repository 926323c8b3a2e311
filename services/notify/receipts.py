"""Delivery reports coming in from gateways: who may report (signature or keyed URL), how often
(a per-address window), and the WhatsApp Cloud API's subscription handshake."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from giliran.errors import DomainError, NotFound
from services.notify.channels import HttpGatewayChannel, WhatsAppCloudChannel
from services.notify.gateways import receipt_key, signature_valid
from services.notify.handlers import ChannelWorker, ReceiptTally

# One report may carry many statuses (Infobip sends up to 100 per call by default); more than
# this in one body is not a gateway's report.
MAX_RECEIPTS_PER_REPORT = 500


class ReceiptsRefused(DomainError):
    code = "receipt_unauthenticated"
    http_status = 401

    def __init__(self) -> None:
        super().__init__(
            "Laporan pengiriman ditolak: tanda tangan atau kunci tidak sah.",
            "Delivery report refused: the signature or key is not valid.",
        )


class ReceiptsFlooded(DomainError):
    code = "receipts_rate_limited"
    http_status = 429

    def __init__(self) -> None:
        super().__init__(
            "Terlalu banyak laporan pengiriman dari alamat ini; coba lagi sebentar lagi.",
            "Too many delivery reports from this address; try again shortly.",
        )


class ReceiptsUnreadable(DomainError):
    code = "receipt_unreadable"
    http_status = 400

    def __init__(self, why: str) -> None:
        super().__init__(
            f"Laporan pengiriman tidak dapat dibaca ({why}).",
            f"The delivery report cannot be read ({why}).",
        )


class NoReceiptsHere(NotFound):
    code = "receipts_not_taken"

    def __init__(self, channel: str) -> None:
        super().__init__(
            f"Kanal '{channel}' tidak menerima laporan pengiriman.",
            f"Channel '{channel}' takes no delivery reports.",
        )


class AddressWindow:
    """At most `limit` reports per client address per minute, counted in this process: a
    flood is turned away before its body is read or verified. (The gateways documented here
    retry a report that was not answered 2xx, so a 429 delays a genuine report, never loses it.)
    """

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._window = -1
        self._counts: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        window = int(self._clock() // 60)
        if window != self._window:  # a new minute: forget the last one's counts
            self._window, self._counts = window, {}
        count = self._counts.get(address, 0) + 1
        self._counts[address] = count
        return count <= self.limit


def _worker_for(workers: dict[str, ChannelWorker], channel: str) -> ChannelWorker:
    worker = workers.get(channel)
    if worker is None or not getattr(worker.channel, "receipts", False):
        raise NoReceiptsHere(channel)
    return worker


def authenticate(
    worker: ChannelWorker, site: str, body: bytes, signature: str | None, key: str | None
) -> None:
    """WhatsApp Cloud: `X-Hub-Signature-256` over the raw body with the app secret. The other
    gateways sign nothing, so their report URL carries a key made for this channel and site."""
    channel = worker.channel
    if isinstance(channel, WhatsAppCloudChannel):
        if not signature_valid(channel.config.app_secret, body, signature):
            raise ReceiptsRefused()
        return
    assert isinstance(channel, HttpGatewayChannel)
    secret = channel.config.receipt_secret
    if secret is None or key is None:
        raise ReceiptsRefused()
    if not hmac.compare_digest(receipt_key(secret, channel.name, site).encode(), key.encode()):
        raise ReceiptsRefused()


async def take_report(
    workers: dict[str, ChannelWorker],
    channel: str,
    site: str,
    body: bytes,
    *,
    signature: str | None,
    key: str | None,
) -> ReceiptTally:
    worker = _worker_for(workers, channel)
    authenticate(worker, site, body, signature, key)
    try:
        doc: Any = json.loads(body)
    except ValueError as exc:
        raise ReceiptsUnreadable("JSON") from exc
    reader = worker.channel
    assert isinstance(reader, HttpGatewayChannel | WhatsAppCloudChannel)
    receipts = reader.read_receipts(doc)
    if len(receipts) > MAX_RECEIPTS_PER_REPORT:
        raise ReceiptsUnreadable(f"more than {MAX_RECEIPTS_PER_REPORT} statuses")
    # A Meta-signed report vouches for the whole app, whose one callback URL serves every site
    # of this notify: it may settle any site's message of this business number. A keyed URL
    # vouches only for its own site.
    scope = None if isinstance(reader, WhatsAppCloudChannel) else site
    return await worker.on_receipts(scope, receipts)


def verify_subscription(
    workers: dict[str, ChannelWorker], channel: str, mode: str | None, token: str | None
) -> bool:
    """Meta's webhook set-up: `hub.mode=subscribe` with our verify token is answered with the
    challenge; anything else is refused."""
    worker = _worker_for(workers, channel)
    if not isinstance(worker.channel, WhatsAppCloudChannel) or mode != "subscribe" or not token:
        return False
    return hmac.compare_digest(worker.channel.config.verify_token.encode(), token.encode())
