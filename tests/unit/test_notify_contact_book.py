"""The contact book's cache against an in-memory store: read once, never stale, never kept past
its retention, and two notify instances on one store never disagree with it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from giliran.store import Document, instant
from services.notify.channels import Contact
from services.notify.contacts import CLOCK_MARGIN_SECONDS, ContactBook, ContactUnknown
from services.notify.store import ContactRecord, Filing

T0 = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)


class FakeContactStore:
    """The contacts collection's rules (DeliveryStore): request records insert-only, contacts
    filled in unless purged, the purge blanks what is due and leaves a tombstone."""

    def __init__(self) -> None:
        self.records: dict[str, Document] = {}
        self.on_purge: list[Callable[[datetime], None]] = []
        self.calls: Counter[str] = Counter()

    async def save_contact(self, request_id: str, contact: Document, event_id: str) -> bool:
        self.calls["save_contact"] += 1
        record = self.records.setdefault(request_id, {**contact, "purged": False})
        repeat = record.get("request_event") == event_id
        record["request_event"] = event_id
        return repeat

    async def learn_contact(
        self, request_id: str, contact: Document, first: Document, event_id: str
    ) -> Filing:
        self.calls["learn_contact"] += 1
        record = self.records.get(request_id)
        if record is not None and record["purged"]:
            return Filing.PURGED
        if record is None:
            self.records[request_id] = {**first, "purged": False, **contact}
            record = self.records[request_id]
        elif record.get("contact_event") == event_id:
            return Filing.REPEAT
        record.update(contact, contact_event=event_id)
        return Filing.NEW

    async def contact_record(self, request_id: str) -> ContactRecord | None:
        self.calls["contact_record"] += 1
        doc = self.records.get(request_id)
        if doc is None:
            return None
        return ContactRecord(
            purged=doc["purged"],
            seen=doc.get("contact_seen", True),
            contact=Contact(
                phone=doc.get("phone"),
                email=doc.get("email"),
                language=doc.get("language", "id"),
                status_token=doc.get("status_token"),
                purge_after=doc.get("purge_after"),
            ),
        )

    def purge(self, now: datetime) -> int:
        due = [
            d for d in self.records.values() if not d["purged"] and d["purge_after"] < instant(now)
        ]
        for doc in due:
            doc.update(purged=True, phone=None, email=None, status_token=None)
        for forget in self.on_purge:
            forget(now)
        return len(due)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def contact(hours: float = 48, phone: str = "+6281234567890") -> Contact:
    return Contact(
        phone=phone, status_token="tok-secret", purge_after=instant(T0 + timedelta(hours=hours))
    )


def request_record(*, consent: bool = True, seen: bool = False) -> Document:
    return {
        "site": "cikarang-utara",
        "consent": consent,
        "contact_seen": seen,
        "phone": None,
        "email": None,
        "status_token": None,
        "language": "id",
        "purge_after": instant(T0 + timedelta(hours=48)),
    }


@pytest.fixture
def store() -> FakeContactStore:
    return FakeContactStore()


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_a_contact_filed_here_is_told_without_reading_the_store(
    store: FakeContactStore, clock: Clock
) -> None:
    book = ContactBook(store, clock=clock)
    await book.learn("r1", contact(), {"site": "s"}, "c-event")
    for _ in range(3):  # issued, called, completed
        assert (await book.contact("r1")) == contact()
    assert store.calls["contact_record"] == 0


async def test_a_contact_filed_elsewhere_is_read_once(
    store: FakeContactStore, clock: Clock
) -> None:
    other, book = ContactBook(store, clock=clock), ContactBook(store, clock=clock)
    await other.learn(
        "r1", contact(), {"site": "s"}, "c-event"
    )  # the other instance's contact-book consumer
    for _ in range(3):
        assert (await book.contact("r1")) == contact()
    assert store.calls["contact_record"] == 1


async def test_a_request_waiting_for_its_contact_is_never_cached(
    store: FakeContactStore, clock: Clock
) -> None:
    """Read again until the contact is there: a cached "not seen" would hold messages back, and
    a cached empty record would send them to nobody."""
    book = ContactBook(store, clock=clock, wait_seconds=0.01)
    other = ContactBook(store, clock=clock)
    await book.file_request("r1", request_record(), "r-event")
    with pytest.raises(ContactUnknown):
        await book.contact("r1")
    with pytest.raises(ContactUnknown):
        await book.contact("unknown-request")
    await other.learn("r1", contact(), {"site": "s"}, "c-event")
    assert (await book.contact("r1")) == contact()


async def test_the_request_record_is_not_written_again_once_the_contact_is_known(
    store: FakeContactStore, clock: Clock
) -> None:
    """request.submitted only inserts: after this process filed the contact (or its
    tombstone) the record exists, and the write would change nothing."""
    book = ContactBook(store, clock=clock)
    await book.learn("r1", contact(), {"site": "s"}, "c-event")
    await book.file_request("r1", request_record(), "r-event")
    assert store.calls["save_contact"] == 0
    await book.file_request("r2", request_record(consent=False, seen=True), "r-event")
    assert store.calls["save_contact"] == 1
    assert (await book.contact("r2")) == Contact(purge_after=instant(T0 + timedelta(hours=48)))


async def test_nothing_personal_is_served_from_memory_after_its_retention(
    store: FakeContactStore, clock: Clock
) -> None:
    book = ContactBook(store, clock=clock)
    await book.learn("r1", contact(hours=1), {"site": "s"}, "c-event")
    clock.now = T0 + timedelta(hours=1, seconds=-CLOCK_MARGIN_SECONDS - 1)
    assert (await book.contact("r1")) == contact(hours=1)  # still its time, from memory
    assert store.calls["contact_record"] == 0
    clock.now = T0 + timedelta(hours=1, seconds=-CLOCK_MARGIN_SECONDS)
    # Expired from memory: the store is asked, and the store is what the purge blanks.
    assert (await book.contact("r1")) == contact(hours=1)
    clock.now = T0 + timedelta(hours=1, seconds=1)
    assert store.purge(clock.now) == 1
    assert (await book.contact("r1")) is None


async def test_the_purge_empties_memory_at_once_even_run_for_a_later_instant(
    store: FakeContactStore, clock: Clock
) -> None:
    """The store's purge tells the book: a purge run for a later instant (or on a process whose
    clock is ahead) leaves no copy behind in memory."""
    book = ContactBook(store, clock=clock)
    await book.learn("r1", contact(hours=1), {"site": "s"}, "c-event")
    await book.learn("r2", contact(hours=5), {"site": "s"}, "c-event")
    assert store.purge(T0 + timedelta(hours=2)) == 1
    assert (await book.contact("r1")) is None
    assert (await book.contact("r2")) == contact(hours=5)


async def test_a_second_instance_never_serves_what_the_store_purged(
    store: FakeContactStore, clock: Clock
) -> None:
    """Two notify processes share the store, not memory: the one that did not run the purge
    still drops the contact no later than its purge instant (its own expiry)."""
    purging, other = ContactBook(store, clock=clock), ContactBook(store, clock=clock)
    await purging.learn("r1", contact(hours=1), {"site": "s"}, "c-event")
    assert (await other.contact("r1")) == contact(hours=1)
    store.on_purge.remove(other.forget_purged)  # the other process is not told
    clock.now = T0 + timedelta(hours=1, seconds=1)
    store.purge(clock.now)
    assert (await other.contact("r1")) is None
    assert (await purging.contact("r1")) is None


async def test_a_contact_that_arrives_purged_or_expired_is_not_kept(
    store: FakeContactStore, clock: Clock
) -> None:
    book = ContactBook(store, clock=clock)
    await book.learn("r1", contact(hours=1), {"site": "s"}, "c-event")
    store.purge(T0 + timedelta(hours=2))
    late = ContactBook(store, clock=clock)
    await late.learn(
        "r1", contact(hours=1), {"site": "s"}, "c-event"
    )  # redelivered after the purge
    assert (await late.contact("r1")) is None
    assert store.records["r1"]["phone"] is None
    clock.now = T0 + timedelta(hours=3)
    await late.learn("r9", contact(hours=1), {"site": "s"}, "c-event")  # due already: not in memory
    reads = store.calls["contact_record"]
    await late.contact("r9")
    assert store.calls["contact_record"] == reads + 1


async def test_memory_is_bounded(store: FakeContactStore, clock: Clock) -> None:
    book = ContactBook(store, clock=clock, maxsize=10)
    for n in range(50):
        await book.learn(f"r{n}", contact(), {"site": "s"}, "c-event")
    reads = store.calls["contact_record"]
    assert (await book.contact("r49")) == contact()  # among the ten kept
    assert store.calls["contact_record"] == reads
    assert (await book.contact("r0")) == contact()  # pushed out: read again
    assert store.calls["contact_record"] == reads + 1


async def test_a_ticket_event_that_overtakes_its_contact_waits_for_it_briefly(
    store: FakeContactStore, clock: Clock
) -> None:
    """Contacts come on their own stream: a ticket event a few milliseconds ahead of its
    contact gets it from this process's contact-book consumer instead of being retried later
    (when a fast counter may have made its message stale)."""
    book = ContactBook(store, clock=clock, wait_seconds=5.0)
    await book.file_request("r1", request_record(), "r-event")

    async def contact_arrives() -> None:
        await asyncio.sleep(0.05)
        await book.learn("r1", contact(), {"site": "s"}, "c-event")

    arriving = asyncio.create_task(contact_arrives())
    async with asyncio.timeout(2):  # woken by the contact, not by the end of the wait
        assert (await book.contact("r1")) == contact()
    await arriving
    quick = ContactBook(store, clock=clock, wait_seconds=0.05)
    await quick.file_request("r2", request_record(), "r-event")
    with pytest.raises(ContactUnknown):  # never filed: retried by the consumer as before
        await quick.contact("r2")


async def test_a_redelivered_contact_or_request_is_told_apart_from_a_first_filing(
    store: FakeContactStore, clock: Clock
) -> None:
    """The contact-book consumer keeps no inbox (ADR 0185): the record names the events that
    filed it, so a redelivery — to this process or to another instance — says so, and a
    different event for the same request is not taken for one."""
    book, other = ContactBook(store, clock=clock), ContactBook(store, clock=clock)
    assert await book.learn("r1", contact(), {"site": "s"}, "c-1") is False
    assert await book.learn("r1", contact(), {"site": "s"}, "c-1") is True
    assert await other.learn("r1", contact(), {"site": "s"}, "c-1") is True
    # request.submitted after its contact: no write here, the process remembers the event.
    assert await book.file_request("r1", request_record(), "r-1") is False
    assert await book.file_request("r1", request_record(), "r-1") is True
    assert store.calls["save_contact"] == 0
    # Filed first, before the contact: the record names it, whichever instance meets it again.
    assert await book.file_request("r2", request_record(), "r-2") is False
    assert await other.file_request("r2", request_record(), "r-2") is True
    assert await other.file_request("r2", request_record(), "r-other") is False
