"""What every channel shares: recipients, outgoing messages, failures, and the guarded send."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import httpx
from aiolimiter import AsyncLimiter
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from giliran.privacy import scrub
from services.notify.config import ChannelBase

T = TypeVar("T")


@dataclass(frozen=True)
class Contact:
    """How a citizen agreed to be reached (from request.submitted, purged on schedule)."""

    phone: str | None = None
    email: str | None = None
    language: str = "id"
    status_token: str | None = None
    # When notify forgets it (an instant string), and with it the texts that named its link.
    purge_after: str | None = None
    # The site whose request it is: only that site's events send to it (None: records filed
    # before it was kept).
    site: str | None = None


@dataclass(frozen=True)
class Recipient:
    address: str = field(repr=False)  # full phone / e-mail / URL: used to send, never stored
    masked: str  # what records, logs and the operator view show

    @property
    def key(self) -> str:
        """Stable part of a delivery id, from the masked address only: the id travels in
        notification.sent, which the event stream keeps for ever, and a hash of a full phone
        number is undone by trying every number (ADR 0115)."""
        return hashlib.sha256(self.masked.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Outgoing:
    delivery_id: str
    template: str
    language: str
    text: str
    subject: str = ""
    event: dict[str, Any] | None = None  # webhooks send the event itself
    site: str = ""
    # What the text was made of (number, service, counter, cost...): WhatsApp templates take
    # these as parameters instead of the rendered text.
    variables: dict[str, str] = field(default_factory=dict)
    receipt_url: str | None = None  # where this site's delivery reports go, if the channel has


@dataclass(frozen=True)
class Handed:
    """A message the channel handed over: its cost and the gateway's id for it (what the
    gateway's delivery reports will name), when it gives one."""

    cost: int
    gateway_id: str | None = None


class TransientFailure(Exception):
    """Worth trying again later (timeouts, 5xx, 429, circuit open)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentFailure(Exception):
    """Trying again will not help (4xx other than 429, a refused recipient)."""


class Refused(PermanentFailure):
    """The gateway answered and said no (in its body or by status): the reason is its own
    words, phone numbers masked."""


class Channel(Protocol):
    name: str
    medium: str  # console | sms | whatsapp | email | webhook

    def recipient(self, contact: Contact | None) -> Recipient | None:
        """Who this channel would reach, or None (no consent, no address for this medium)."""

    async def send(self, recipient: Recipient, outgoing: Outgoing) -> Handed:
        """Send once through the guard. Raise Transient/PermanentFailure (Refused)."""

    async def close(self) -> None: ...


@contextmanager
def unanswered(timeout_seconds: float) -> Iterator[None]:
    """A gateway that gave no answer (timeout, refused connection, broken TLS) is worth another
    try. The error's text is scrubbed: it may quote the URL, and a gateway called with query
    parameters has the citizen's number in its URL."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise TransientFailure(f"timeout after {timeout_seconds}s") from exc
    except httpx.HTTPError as exc:
        raise TransientFailure(scrub(f"{type(exc).__name__}: {exc}")[:200]) from exc


class Guard:
    """Per-gateway rate limit (leaky bucket) and circuit breaker around one send."""

    def __init__(self, config: ChannelBase) -> None:
        self.name = config.name
        # Smooth pacing (a bucket of one): a gateway that allows N per second never sees more
        # than N in any second, not 2N at the edge of a burst.
        self._limiter = AsyncLimiter(max_rate=1, time_period=1.0 / config.rate_per_second)
        self._reset_seconds = config.breaker.reset_seconds
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=config.breaker.failures,
            default_ttl=config.breaker.reset_seconds,
            # A refused message says nothing about the gateway's health.
            exclude=[PermanentFailure],
        )

    async def call(self, send: Callable[[], Awaitable[T]]) -> T:
        breaker = await self._breakers.get_breaker(self.name)
        try:
            async with breaker, self._limiter:
                return await send()
        except OpenedState as exc:
            raise TransientFailure(
                f"circuit open for {self.name}", retry_after=self._reset_seconds
            ) from exc
