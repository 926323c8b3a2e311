"""The contact book: the contact a request's messages go to, read from the store once and kept in
memory no longer than its retention."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol

from cachetools import TLRUCache, TTLCache

from giliran.contracts import utcnow
from giliran.store import Document, from_instant
from services.notify.channels import Contact
from services.notify.store import ContactRecord, Filing

# A request whose contact was purged (or never given): a tombstone, known for good.
PURGED: Final = None
# How long a contact with no purge instant (records from before ADR 0115) is kept in memory.
UNDATED_SECONDS = 60.0
# A cached contact goes this long before its purge instant: the store's purge may run on another
# notify instance whose clock is a little ahead of this one's.
CLOCK_MARGIN_SECONDS = 60.0
TOMBSTONE_SECONDS = 24 * 3600.0
# How long this process remembers the `request.submitted` events it filed without a write (the
# request's contact was filed first): long enough for any redelivery (JetStream's ack wait and
# the consumer's retries), and only ever a metric's label if it forgets (ADR 0185).
FILED_REQUESTS_SECONDS = 3600.0
# A ticket event can overtake its contact by milliseconds (two streams, two consumers): it waits
# this long for this process's contact-book consumer before it is retried (then 0.4-0.6 s
# later, by which time a fast counter may have called the ticket and the message is stale).
CONTACT_WAIT_SECONDS = 0.5


class ContactStore(Protocol):
    """Where contacts are kept durably (`services.notify.store.DeliveryStore`; an in-memory fake
    in the unit tests)."""

    on_purge: list[Callable[[datetime], None]]

    async def save_contact(self, request_id: str, contact: Document, event_id: str) -> bool: ...

    async def learn_contact(
        self, request_id: str, contact: Document, first: Document, event_id: str
    ) -> Filing: ...

    async def contact_record(self, request_id: str) -> ContactRecord | None: ...


class ContactUnknown(Exception):
    """A ticket event arrived before its request: retried until the request is seen."""


@dataclass
class ContactBook:
    """Every channel worker of a process asks this one book; the store stays the durable copy.

    Why the cache is safe (issue #17: one `find contacts` per message before):
    - What is cached never changes in the store except by the purge: a contact is cached only
      once it is complete (`contact_seen`; a record still waiting for its `citizen.contact` is
      never cached and is read again), and after that only the purge writes to it. A redelivered
      `citizen.contact` writes the same values again (its fields and `keep_until` are the
      event's); `request.submitted` only ever inserts (`$setOnInsert`).
    - The purge: an entry expires a minute before its own `purge_after`, the instant from which
      the store's purge may blank it (the minute covers another instance's clock running a
      little ahead), and this process's purge drops at once whatever it purged: nothing
      personal outlives its retention in memory (ADR 0115, 0166;
      `tests/unit/test_notify_contact_book.py`). A purged record is remembered as a tombstone,
      which is final in the store as well.
    - Two notify instances on the same durable consumers each see a share of the events: an
      instance that did not file a contact misses its cache and reads the store, which the
      other instance wrote before it acked the contact; neither can hold a value the store no
      longer has, since the only later change (the purge) is the expiry itself.
    - Bounded: at most `maxsize` requests (least recently used go first)."""

    store: ContactStore
    clock: Callable[[], datetime] = utcnow
    maxsize: int = 20_000
    wait_seconds: float = CONTACT_WAIT_SECONDS
    _known: TLRUCache[str, Contact | None] = field(init=False, repr=False)
    _awaited: dict[str, asyncio.Event] = field(init=False, repr=False, default_factory=dict)
    # `request.submitted` events this process filed without a write (event ids only, nothing
    # personal): a redelivery to this process is then told apart from a first handling.
    _filed_requests: TTLCache[str, bool] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._known = TLRUCache(maxsize=self.maxsize, ttu=self._until, timer=self._now)
        self._filed_requests = TTLCache(
            maxsize=self.maxsize, ttl=FILED_REQUESTS_SECONDS, timer=self._now
        )
        self.store.on_purge.append(self.forget_purged)

    def forget_purged(self, up_to: datetime) -> None:
        """The store purged every contact due before `up_to`: so does this book, whatever its
        own clock says (a purge run for a later instant, a clock behind the purging one's)."""
        due = [
            request_id
            for request_id, contact in list(self._known.items())
            if contact is not None
            and (contact.purge_after is None or from_instant(contact.purge_after) < up_to)
        ]
        for request_id in due:
            self._known.pop(request_id, None)

    def _now(self) -> float:
        return self.clock().timestamp()

    @staticmethod
    def _until(_request_id: str, contact: Contact | None, now: float) -> float:
        if contact is None:  # PURGED
            return now + TOMBSTONE_SECONDS
        if contact.purge_after is None:
            return now + UNDATED_SECONDS
        return from_instant(contact.purge_after).timestamp() - CLOCK_MARGIN_SECONDS

    def _remember(self, request_id: str, contact: Contact | None) -> None:
        until = contact.purge_after if contact is not None else None
        if until is not None and self._until(request_id, contact, 0.0) <= self._now():
            self._known.pop(request_id, None)
            return  # its time is up: not even for a moment
        self._known[request_id] = contact

    async def _arrives(self, request_id: str) -> bool:
        """Whether this process learns the request's contact within the wait."""
        arrived = self._awaited.setdefault(request_id, asyncio.Event())
        if request_id not in self._known:  # not filed in the meantime
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.wait_seconds):
                    await arrived.wait()
        if self._awaited.get(request_id) is arrived:
            del self._awaited[request_id]
        return request_id in self._known

    async def file_request(self, request_id: str, record: Document, event_id: str) -> bool:
        """`request.submitted`'s record, first writer wins: when this process already filed
        the request's contact (or its tombstone), the record exists and an insert-only write
        would change nothing, so none is sent. True when this very event was filed before (a
        redelivery: the consumer keeps no inbox, ADR 0185)."""
        if request_id in self._known:
            # Only this process's memory can tell a repeat here (a redelivery to an instance
            # that did not file it counts as handled: the filing is insert-only either way).
            repeat = event_id in self._filed_requests
        else:
            repeat = await self.store.save_contact(request_id, record, event_id)
        self._filed_requests[event_id] = True
        return repeat

    async def learn(
        self, request_id: str, contact: Contact, first: Document, event_id: str
    ) -> bool:
        """`citizen.contact`: filed in the store, then known here as what was just written.
        True when this very event had been filed before (a redelivery)."""
        filed = await self.store.learn_contact(
            request_id,
            {
                "consent": True,
                "contact_seen": True,
                "phone": contact.phone,
                "email": contact.email,
                "status_token": contact.status_token,
                "language": contact.language,
                "purge_after": contact.purge_after,
            },
            first,
            event_id,
        )
        self._remember(request_id, PURGED if filed is Filing.PURGED else contact)
        if (arrived := self._awaited.pop(request_id, None)) is not None:
            arrived.set()
        return filed is Filing.REPEAT

    async def contact(self, request_id: str) -> Contact | None:
        """The request's contact; None once purged; ContactUnknown until it is seen."""
        if request_id in self._known:
            return self._known[request_id]
        record = await self.store.contact_record(request_id)
        # Not seen yet: filed by this process's contact-book consumer any moment now (or by
        # another instance's, or never: then the store's answer stands, after the wait).
        unseen = record is None or not record.seen
        if unseen and await self._arrives(request_id):
            return self._known[request_id]
        if record is None:
            raise ContactUnknown(f"request {request_id} not seen yet")
        if record.purged:
            self._remember(request_id, PURGED)
            return None
        if not record.seen:
            # Its citizen.contact is still on its way on the other stream (or expired, and then
            # the purge marks the record and this returns None). Not cached: it will change.
            raise ContactUnknown(f"contact of request {request_id} not seen yet")
        self._remember(request_id, record.contact)
        return record.contact
