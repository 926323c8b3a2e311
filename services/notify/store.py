"""Notify's own collections: contacts (purged on schedule), a ticket projection for the stale and
approaching rules that also holds the claims of each ticket's own messages (ADR 0198), and the
delivery log with its outbox."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, WriteError

from giliran.contracts import Event, TicketStatus
from giliran.errors import Unprocessable
from giliran.store import (
    OUTBOX,
    Database,
    Document,
    Instant,
    indexed,
    instant,
    outbox_fields,
    with_outbox,
)
from services.notify import batching
from services.notify.channels.base import Contact
from services.notify.domain import Claim, DeliveryStatus

# A delivery no attempt holds: earlier than any instant (see `DeliveryStore.hold`).
RELEASED_AT = datetime(1970, 1, 1, tzinfo=UTC)
RELEASED = instant(RELEASED_AT)


@dataclass(frozen=True)
class WaitingTicket:
    """A ticket waiting in its line, as the projection has it: what the approaching rule needs,
    and its facts for the message (number, service...)."""

    ticket_id: str
    request_id: str
    ahead_at_issue: int
    facts: Document
    # The ticket's document as loaded (its claims and version), for its "near" message's claim.
    notices: TicketNotices


@dataclass(frozen=True)
class Advance:
    """One ticket event's write (`DeliveryStore.advance`): the ticket moved to `status` with its
    message's claim taken, or nothing at all."""

    ticket_id: str
    fields: Document
    status: TicketStatus
    claim: Claim
    # The channel whose event this is: how far it has seen the ticket is kept with the write
    # (`TicketNotices.seen_by`, ADR 0226). None: not kept (a test's write of the claim alone).
    channel: str | None = None


@dataclass(frozen=True)
class _Filing:
    """A contact filing (`save_contact`, `learn_contact`) waiting for its batch's command."""

    request_id: str
    contact: Document
    event_id: str
    first: Document = field(default_factory=dict)


@dataclass(frozen=True)
class Line:
    """One line's read (`DeliveryStore.waiting_in_line`): its first `limit` waiting tickets."""

    site: str
    session_id: str
    service: str
    limit: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.site, self.session_id, self.service)


@dataclass(frozen=True)
class Record:
    """A claimed message settled, for the log (`DeliveryStore.record`)."""

    delivery: Delivery
    fields: Document
    events: Sequence[Event[Any]] = ()


DUPLICATE_KEY = 11000


def duplicate_indexes(error: BulkWriteError, size: int) -> tuple[set[int], dict[int, Exception]]:
    """Which statements of an unordered bulk write met an existing `_id` (an upsert whose
    filter did not match, an insert of a record that exists), and any other statement's own
    error, retried as that write alone would be; every other statement was written. Both
    MongoDB and the embedded server report each failed statement by its index."""
    duplicates: set[int] = set()
    others: dict[int, Exception] = {}
    for failure in error.details.get("writeErrors", []):
        index = int(failure["index"])
        if int(failure.get("code", 0)) == DUPLICATE_KEY:
            duplicates.add(index)
        elif 0 <= index < size:
            # The store failed that statement (the embedded server reports any SQLite failure,
            # e.g. "disk I/O error", as code 8): the error the same write alone raises, which
            # the bus retries with backoff — never Unprocessable, which it dead-letters at once.
            others[index] = WriteError(
                str(failure.get("errmsg", "write failed")), int(failure.get("code", 0)), failure
            )
    return duplicates, others


@dataclass(frozen=True)
class TicketTrack:
    """The ticket projection after an event: the ticket's status, and whether this event moved
    it there (False: it was there or further along already, e.g. the event came again)."""

    status: TicketStatus
    moved: bool


def claim_field(delivery_id: str) -> str:
    """Where a message's claim sits in its ticket's document: `claims.<delivery id>` (a dot
    would open a sub-document: none of today's ids has one, but an id is not ours to trust)."""
    return "claims." + delivery_id.replace(".", "%2E").replace("$", "%24")


def seen_field(channel: str) -> str:
    """Where the furthest rank a channel's own events moved a ticket to is kept: `seen.<channel>`
    (a channel's name is `[a-z][a-z0-9-]*`: never a dot or a dollar)."""
    return f"seen.{channel}"


def seen_update(channel: str | None, status: TicketStatus) -> Document:
    """The `$max` that keeps how far `channel` has seen the ticket (nothing without a channel)."""
    return {"$max": {seen_field(channel): status.rank}} if channel else {}


# Staleness compares ranks only (`is_stale`): one status of each rank stands for it.
_AT_RANK: dict[int, TicketStatus] = {}
for _status in reversed(TicketStatus):
    _AT_RANK[_status.rank] = _status


def stored_claim(claim: Claim) -> Document:
    return {
        "delivery_id": claim.delivery_id,
        "held_until": instant(claim.held_until),
        "attempts": claim.attempts,
        "claimed_at": instant(claim.claimed_at),
        "last_error": claim.last_error,
        "cause_event_id": claim.cause_event_id,
    }


class TicketNotices(BaseModel):
    """A ticket as notify keeps it (the `tickets` document): how far it got, and the claims of
    the messages about it that were taken and are not known settled (ADR 0198). `version`
    counts the document's writes: a decision made on a loaded copy is saved only if nobody
    wrote in between."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    id: str = Field(alias="_id")
    site: str
    status: TicketStatus
    rank: int | None = None  # written before ranks were stored: none
    version: int = 0  # written before versions were stored: 0
    claims: dict[str, Claim] = Field(default_factory=dict)
    # Channel -> the furthest rank that channel's own events wrote the ticket at (a move, a
    # claim): the channels share this document, and one whose gateway is slow reaches an event
    # after a faster one moved the ticket on (ADR 0226). Written before it was kept: none.
    seen: dict[str, int] = Field(default_factory=dict)

    def claim(self, delivery_id: str) -> Claim | None:
        return self.claims.get(claim_field(delivery_id).removeprefix("claims."))

    def seen_by(self, channel: str) -> TicketStatus | None:
        """The ticket as `channel` has seen it, which is what makes its messages stale: its
        events come in stream order, so a message about a state it saw the ticket leave is
        late; another channel being further along says nothing about this one's messages.
        None when the channel has seen none of its events yet (or in a document written before
        this was kept: its message is then not stale for it, and goes)."""
        rank = self.seen.get(channel)
        return _AT_RANK.get(rank) if rank is not None else None


class ForeignTicket(Unprocessable):
    """An event names a ticket (or a request) notify knows at another site: a forged or
    misrouted event. It changes nothing and tells nobody (dead-lettered, with this reason)."""

    def __init__(self, ticket_id: str, site: str) -> None:
        super().__init__(f"{ticket_id} is not of site {site}")


class NotRequestsTicket(Unprocessable):
    """A ticket event whose ticket is not one of its request's (`is_requests_ticket`): forged,
    not the queue's. Refused before any write; its reason names only the two ids."""

    def __init__(self, ticket_id: str, request_id: str) -> None:
        super().__init__(f"ticket {ticket_id} is not one of request {request_id}")


class Filing(StrEnum):
    """What filing a `citizen.contact` did."""

    NEW = "new"  # filled in now
    REPEAT = "repeat"  # this very event filled it in before (a redelivery)
    PURGED = "purged"  # the record was purged meanwhile: nothing kept


@dataclass(frozen=True)
class ContactRecord:
    """A request's record in the contact book: purged (a tombstone), still waiting for its
    `citizen.contact` (not seen), or the contact itself."""

    purged: bool
    seen: bool
    contact: Contact


class Delivery(BaseModel):
    """One message to one recipient on one channel, as the delivery log keeps it (the facts an
    attempt and the operator's retry need; the log has more, for the operator page)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    id: str = Field(alias="_id")
    site: str
    channel: str
    medium: str = ""
    recipient: str = ""
    template: str
    status: DeliveryStatus
    attempts: int = 0
    cost_units: int = 0
    receipt: str | None = None
    # Begun before holds existed: no field, taken as released (`DeliveryStore.hold` adds it).
    held_until: Instant = RELEASED_AT
    created_at: Instant
    cause_event_id: str | None = None
    cause_type: str | None = None
    request_id: str | None = None
    ticket_id: str | None = None
    session_id: str | None = None
    language: str | None = None
    # The text and a WhatsApp template's parts hold the status link: blanked by the purge.
    text: str | None = None
    segments: int | None = None
    variables: dict[str, str] | None = None
    purge_after: str | None = None  # an instant string, compared as such by the purge
    last_error: str | None = None

    def facts(self) -> Document:
        """What caused it: the facts `notification.sent/failed/receipt` repeat about it."""
        return {
            "cause_event_id": self.cause_event_id,
            "cause_type": self.cause_type,
            "request_id": self.request_id,
            "ticket_id": self.ticket_id,
        }


class DeliveryStore:
    def __init__(self, database: Database) -> None:
        self.contacts = database["contacts"]
        self.tickets = database["tickets"]
        self.deliveries = database["deliveries"]
        # Told after each purge of contacts, with the instant it purged up to: what a process
        # keeps in memory goes at the same moment as the store's copy (services/notify/contacts.py).
        self.on_purge: list[Callable[[datetime], None]] = []

    async def ensure_indexes(self) -> None:
        await self.contacts.create_index([("purged", 1), ("purge_after", 1)])
        await self.deliveries.create_index([("purge_after", 1)])
        await self.tickets.create_index(
            [("site", 1), ("session_id", 1), ("service", 1), ("status", 1), ("issued_at", 1)]
        )
        await self.deliveries.create_index([("ticket_id", 1), ("created_at", 1)])
        await self.deliveries.create_index([("ticket_id", 1), ("template", 1), ("channel", 1)])
        await self.deliveries.create_index([("site", 1), ("session_id", 1), ("channel", 1)])
        await self.deliveries.create_index([("status", 1)])
        await self.deliveries.create_index([("channel", 1), ("gateway_id", 1)])
        await self.deliveries.create_index(
            [("cause_event_id", 1), ("template", 1), ("channel", 1), ("status", 1)]
        )

    # --- contacts --------------------------------------------------------------------------

    async def save_contact(self, request_id: str, contact: Document, event_id: str) -> bool:
        """From `request.submitted`. First writer wins: a redelivered request never brings back
        a purged phone number, nor undoes a `citizen.contact` that came first. The record names
        the event that filed it (`request_event`), so the same write tells a redelivery (True):
        the consumer keeps no inbox (ADR 0185). (`$exists`/`$nin` rather than `$ne`: the
        embedded server's `$ne` does not match a missing field, and its `findAndModify` drops
        `$setOnInsert`.) Inside a consumer's batch, with the batch's other filings in one
        command (ADR 0221)."""
        return await batching.submit(self._save_contacts, _Filing(request_id, contact, event_id))

    async def _save_contacts(self, filings: Sequence[_Filing]) -> list[bool | Exception]:
        def unfiled(filing: _Filing) -> Document:
            return {"_id": filing.request_id, "request_event": {"$exists": False}}

        def filed(f: _Filing) -> Document:
            return {
                "$set": {"request_event": f.event_id},
                "$setOnInsert": {**f.contact, "purged": False},
            }

        duplicates, others = await self._upserts(
            self.contacts, [(unfiled(f), filed(f)) for f in filings]
        )
        outcomes: list[bool | Exception] = []
        for n, filing in enumerate(filings):
            if n in others or n not in duplicates:
                outcomes.append(others.get(n, False))
                continue
            # Filed already by this very event, or the citizen's contact was filed at the same
            # moment (both upserts found no record; MongoDB retries neither, its filter is not
            # the key alone): then this request still files itself, as if it had come second.
            try:
                again = await self.contacts.update_one(
                    unfiled(filing), {"$set": {"request_event": filing.event_id}}
                )
            except Exception as exc:  # that filing's own failure
                outcomes.append(exc)
            else:
                outcomes.append(again.matched_count == 0)
        return outcomes

    async def learn_contact(
        self, request_id: str, contact: Document, first: Document, event_id: str
    ) -> Filing:
        """From `citizen.contact` (the personal stream), before or after its request: fills
        `contact` in unless the contact was purged meanwhile (PURGED); `first`: fields only
        a new record gets. The record names the event that filled it (`contact_event`): REPEAT
        when this very event had filled it before (ADR 0185). Inside a consumer's batch, with
        the batch's other contacts in one command (ADR 0221)."""
        return await batching.submit(
            self._learn_contacts, _Filing(request_id, contact, event_id, first)
        )

    async def _learn_contacts(self, filings: Sequence[_Filing]) -> list[Filing | Exception]:
        def unfilled(filing: _Filing) -> Document:
            return {
                "_id": filing.request_id,
                "purged": False,
                "contact_event": {"$nin": [filing.event_id]},
            }

        def filling(filing: _Filing) -> Document:
            return {"$set": {**filing.contact, "contact_event": filing.event_id}}

        def upsert(f: _Filing) -> Document:
            return {**filling(f), "$setOnInsert": {**f.first, "purged": False}}

        duplicates, others = await self._upserts(
            self.contacts, [(unfilled(f), upsert(f)) for f in filings]
        )
        outcomes: list[Filing | Exception] = []
        for n, filing in enumerate(filings):
            if n in others or n not in duplicates:
                outcomes.append(others.get(n, Filing.NEW))
                continue
            # The upsert's insert met the record: purged, filled already by this event, or its
            # request filed at the same moment (both upserts found no record; MongoDB retries
            # neither): then the contact is still filled in, as if it had come second.
            try:
                again = await self.contacts.update_one(unfilled(filing), filling(filing))
                if again.matched_count == 1:
                    outcomes.append(Filing.NEW)
                    continue
                record = await self.contact_record(filing.request_id)
            except Exception as exc:  # that filing's own failure
                outcomes.append(exc)
                continue
            outcomes.append(Filing.PURGED if record is None or record.purged else Filing.REPEAT)
        return outcomes

    @staticmethod
    async def _upserts(
        collection: Any, changes: Sequence[tuple[Document, Document]]
    ) -> tuple[set[int], dict[int, Exception]]:
        """(filter, update) upserts: which met an existing `_id` (their filter did not match),
        and any other statement's own error; the rest were written. One alone is the plain
        upsert it always was; more go in one unordered command."""
        if len(changes) == 1:
            try:
                await collection.update_one(*changes[0], upsert=True)
            except DuplicateKeyError:
                return {0}, {}
            return set(), {}
        statements = [UpdateOne(query, change, upsert=True) for query, change in changes]
        try:
            await collection.bulk_write(statements, ordered=False)
        except BulkWriteError as exc:
            return duplicate_indexes(exc, len(statements))
        return set(), {}

    async def contact(self, request_id: str) -> Document | None:
        return await self.contacts.find_one({"_id": request_id})

    async def contact_record(self, request_id: str) -> ContactRecord | None:
        doc = await self.contact(request_id)
        if doc is None:
            return None
        return ContactRecord(
            purged=bool(doc.get("purged")),
            seen=bool(doc.get("contact_seen", True)),
            contact=Contact(
                site=doc.get("site"),
                purge_after=doc.get("purge_after"),
                phone=doc.get("phone"),
                email=doc.get("email"),
                language=doc.get("language", "id"),
                status_token=doc.get("status_token"),
            ),
        )

    async def purge_contacts(self, now: datetime) -> int:
        """Forget phone numbers, e-mail addresses and status-link tokens whose retention ended;
        keep a tombstone so later events of the request are recognised and skipped. The texts
        sent to them go too (they hold the status link): the delivery log keeps the facts."""
        result = await self.contacts.update_many(
            {"purged": False, "purge_after": {"$lt": instant(now)}},
            {"$set": {"purged": True, "phone": None, "email": None, "status_token": None}},
        )
        await self.deliveries.update_many(
            {"purge_after": {"$lt": instant(now)}},
            {"$set": {"text": None, "variables": None}, "$unset": {"purge_after": ""}},
        )
        for forget in self.on_purge:
            forget(now)
        return result.modified_count

    # --- ticket projection -----------------------------------------------------------------

    async def track_ticket(
        self,
        ticket_id: str,
        fields: Document,
        status: TicketStatus,
        channel: str | None = None,
    ) -> TicketTrack:
        """Status only moves forward, whatever order events arrive in; returns the ticket's
        status afterwards (further along than `status` when a later event came first) and
        whether this write moved it there from a status before it (False: this event, or one
        as far along, came before). One round trip when the status moves forward, the usual
        case (ADR 0084); a repeat costs two more."""
        site = fields["site"]
        try:
            doc = await self.tickets.find_one_and_update(
                # Only the ticket's own site moves it (an event naming another site's ticket
                # would otherwise make its messages stale: ForeignTicket below).
                {"_id": ticket_id, "site": site, "rank": {"$lt": status.rank}},
                {
                    "$set": {**fields, "status": status.value, "rank": status.rank},
                    # Every write counts: a claim decided on a loaded copy is saved only if
                    # nothing was written since (`take`).
                    "$inc": {"version": 1},
                    **seen_update(channel, status),
                },
                {"status": 1},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # MongoDB: it exists as far along or further (or no rank)
            doc = None
        if doc is not None:
            return TicketTrack(TicketStatus(doc["status"]), moved=True)
        current = await self.tickets.find_one(
            {"_id": ticket_id}, {"status": 1, "rank": 1, "site": 1}
        )
        if current is not None and current.get("site", site) != site:
            raise ForeignTicket(f"ticket {ticket_id}", site)
        if current is not None and TicketStatus(current["status"]).rank > status.rank:
            return TicketTrack(TicketStatus(current["status"]), moved=False)
        # As far along (a repeat: its fields again), or written before ranks were stored
        # (compare by status, as it was, and add the rank).
        await self.tickets.update_one(
            {"_id": ticket_id, "site": site},
            {
                "$set": {**fields, "status": status.value, "rank": status.rank},
                "$inc": {"version": 1},
                **seen_update(channel, status),
            },
            upsert=True,
        )
        return TicketTrack(status, moved=False)

    @staticmethod
    def _advance_statement(
        ticket_id: str,
        fields: Document,
        status: TicketStatus,
        claim: Claim,
        channel: str | None = None,
    ) -> tuple[Document, Document]:
        path = claim_field(claim.delivery_id)
        return (
            {
                "_id": ticket_id,
                "site": fields["site"],  # another site's event never moves it
                "rank": {"$lt": status.rank},
                path: {"$exists": False},
            },
            {
                "$set": {
                    **fields,
                    "status": status.value,
                    "rank": status.rank,
                    path: stored_claim(claim),
                },
                "$inc": {"version": 1},
                **seen_update(channel, status),
            },
        )

    async def advance(
        self,
        ticket_id: str,
        fields: Document,
        status: TicketStatus,
        claim: Claim,
        channel: str | None = None,
    ) -> bool:
        """A ticket event's one write (ADR 0198): the ticket moves forward to `status` and its
        message's claim is taken, held for the first attempt, in one command — or nothing at
        all, and False, when the ticket is there already or further along (a repeat, a second
        channel, a recall, an event late after a later one) or the claim exists: then
        `notices` and `take` decide. True means this event moved the ticket: nothing handled it
        before (every handling makes this write first, and status only moves forward)."""
        query, update = self._advance_statement(ticket_id, fields, status, claim, channel)
        try:
            after = await self.tickets.find_one_and_update(
                query, update, {"rank": 1}, upsert=True, return_document=ReturnDocument.AFTER
            )
        except DuplicateKeyError:  # MongoDB: it exists, and the filter did not match it
            return False
        # (The embedded server answers None instead, and writes nothing.)
        return after is not None

    async def advance_many(self, advances: Sequence[Advance]) -> list[bool | Exception]:
        """`advance` for the ticket events of one fetched batch (different tickets: one
        request's events run one after another), in one `update` command of one upsert per
        ticket (ADR 0220). Each statement's outcome is known: an upsert whose filter does not
        match meets the ticket's `_id` and fails alone with a duplicate key (False, as
        `advance`); every other statement moved its ticket (True). One alone is `advance`."""
        if len(advances) == 1:
            one = advances[0]
            return [
                await self.advance(one.ticket_id, one.fields, one.status, one.claim, one.channel)
            ]
        statements = [
            UpdateOne(
                *self._advance_statement(a.ticket_id, a.fields, a.status, a.claim, a.channel),
                upsert=True,
            )
            for a in advances
        ]
        try:
            await self.tickets.bulk_write(statements, ordered=False)
        except BulkWriteError as exc:
            duplicates, others = duplicate_indexes(exc, len(advances))
            return [others.get(n, n not in duplicates) for n in range(len(advances))]
        return [True] * len(advances)

    async def notices(self, ticket_id: str) -> TicketNotices | None:
        doc = await self.tickets.find_one({"_id": ticket_id})
        return TicketNotices.model_validate(doc) if doc is not None else None

    async def take(
        self, notices: TicketNotices, claim: Claim, seen: tuple[str, TicketStatus] | None = None
    ) -> bool:
        """Save `claim` (taken again, or first taken by an event that came after a later one)
        into the ticket's document as it was loaded, with how far the taking channel has now
        seen the ticket (`seen`: channel, its event's status); False when anyone wrote it
        meanwhile (the caller loads and decides again)."""
        version: Any = notices.version if notices.version else {"$exists": False}
        result = await self.tickets.update_one(
            {"_id": notices.id, "version": version},
            {
                "$set": {claim_field(claim.delivery_id): stored_claim(claim)},
                "$inc": {"version": 1},
                **(seen_update(*seen) if seen else {}),
            },
        )
        return result.modified_count == 1

    async def claim_near(self, ticket_id: str, claim: Claim) -> bool:
        """Claim a "your turn is near" message in its ticket's document, held for its first
        attempt: only while the ticket still waits and nobody claimed it (another call of the
        line, on this instance or the other). False: told already, or no longer waiting."""
        path = claim_field(claim.delivery_id)
        result = await self.tickets.update_one(
            {"_id": ticket_id, "status": TicketStatus.WAITING.value, path: {"$exists": False}},
            {"$set": {path: stored_claim(claim)}, "$inc": {"version": 1}},
        )
        return result.modified_count == 1

    async def let_go(self, ticket_id: str, delivery_id: str, reason: str) -> None:
        """A transient failure: the reason kept and the hold let go, so the retry may send."""
        path = claim_field(delivery_id)
        await self.tickets.update_one(
            {"_id": ticket_id},
            {
                "$set": {f"{path}.held_until": RELEASED, f"{path}.last_error": reason},
                "$inc": {"version": 1},
            },
        )

    async def ticket_status(self, ticket_id: str) -> TicketStatus | None:
        doc = await self.tickets.find_one({"_id": ticket_id}, {"status": 1})
        return TicketStatus(doc["status"]) if doc else None

    async def ticket(self, ticket_id: str) -> Document | None:
        return await self.tickets.find_one({"_id": ticket_id})

    async def waiting_in_line(
        self, site: str, session_id: str, service: str, limit: int
    ) -> list[WaitingTicket]:
        """The first `limit` tickets waiting in one line, in call order. Calls of one line
        reaching this read together in a consumer's batch share one read (ADR 0222)."""
        return await batching.submit(self._lines, Line(site, session_id, service, limit))

    async def _lines(self, lines: Sequence[Line]) -> list[list[WaitingTicket] | Exception]:
        read: dict[tuple[str, str, str], list[WaitingTicket] | Exception] = {}
        for line in lines:
            key = (line.site, line.session_id, line.service)
            if key in read:
                continue
            limit = max(other.limit for other in lines if other.key == key)
            try:
                read[key] = await self._line(line.site, line.session_id, line.service, limit)
            except Exception as exc:  # that line's own failure
                read[key] = exc
        outcomes: list[list[WaitingTicket] | Exception] = []
        for line in lines:
            found = read[line.key]
            outcomes.append(found if isinstance(found, Exception) else found[: line.limit])
        return outcomes

    async def _line(
        self, site: str, session_id: str, service: str, limit: int
    ) -> list[WaitingTicket]:
        found = (
            await self.tickets.find(
                indexed(
                    {
                        "site": site,
                        "session_id": session_id,
                        "service": service,
                        "status": "waiting",
                    }
                )
            )
            .sort([("issued_at", 1), ("_id", 1)])
            .limit(limit)
            .to_list()
        )
        return [
            WaitingTicket(
                ticket_id=str(doc["_id"]),
                request_id=str(doc["request_id"]),
                ahead_at_issue=int(doc.get("ahead_at_issue", 0)),
                facts={k: v for k, v in doc.items() if k not in ("claims", "version")},
                notices=TicketNotices.model_validate(doc),
            )
            for doc in found
        ]

    # --- deliveries ------------------------------------------------------------------------

    async def begin(self, doc: Document) -> bool:
        """Record a delivery before its first attempt; False when it already exists."""
        try:
            await self.deliveries.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def start(self, delivery: Delivery) -> bool:
        """Record a new delivery as it is decided: already held for its first attempt (or
        already dropped), in one insert; False when it exists (a redelivery, the other
        replica, the operator's retry), and nothing was written."""
        return await self.begin(self._log_document(delivery))

    @staticmethod
    def _log_document(delivery: Delivery) -> Document:
        doc: Document = {
            "_id": delivery.id,
            **delivery.model_dump(mode="python", exclude={"id"}, exclude_none=False),
            "status": delivery.status.value,
            "held_until": instant(delivery.held_until),
            "created_at": instant(delivery.created_at),
        }
        # Absent rather than null, as they always were: the purge's query and the API rely on it.
        for optional in ("variables", "purge_after", "text", "language", "segments", "last_error"):
            if doc.get(optional) is None:
                doc.pop(optional, None)
        return doc

    async def record(
        self,
        delivery: Delivery,
        fields: Document,
        events: Sequence[Event[Any]] = (),
    ) -> tuple[bool, dict[str, Document] | None]:
        """A message claimed in its ticket's document, settled (sent, failed or dropped): the
        log's one write for it, with the events that announce it. Whether it was recorded, and
        the delivery's whole outbox when it was not a fresh insert (None: just inserted, its
        outbox holds only `events`). The log has it already when the message was dropped
        meanwhile (then nothing is recorded: the stale drop won) or the log took it over."""
        doc = self._log_document(delivery)
        doc.update(fields)
        if events:
            doc.update(outbox_fields(events))
        try:
            await self.deliveries.insert_one(doc)
        except DuplicateKeyError:
            return await self._record_existing(Record(delivery, fields, events))
        return True, None

    async def record_many(
        self, records: Sequence[Record]
    ) -> list[tuple[bool, dict[str, Document] | None] | Exception]:
        """`record` for the messages of one fetched batch answered together, in one `insert`
        command (ADR 0219); a record that meets its delivery (a stale drop that won, the log took
        it over) falls back to `record`'s update, alone. One alone is `record`."""
        if len(records) == 1:
            one = records[0]
            return [await self.record(one.delivery, one.fields, one.events)]
        docs = []
        for one in records:
            doc = self._log_document(one.delivery)
            doc.update(one.fields)
            if one.events:
                doc.update(outbox_fields(one.events))
            docs.append(doc)
        try:
            await self.deliveries.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            duplicates, others = duplicate_indexes(exc, len(records))
        else:
            duplicates, others = set(), {}
        outcomes: list[tuple[bool, dict[str, Document] | None] | Exception] = []
        for n, one in enumerate(records):
            if n in others:
                outcomes.append(others[n])
            elif n not in duplicates:
                outcomes.append((True, None))
            else:
                try:
                    outcomes.append(await self._record_existing(one))
                except Exception as exc:  # that record's own failure
                    outcomes.append(exc)
        return outcomes

    async def _record_existing(self, one: Record) -> tuple[bool, dict[str, Document] | None]:
        delivery, fields, events = one.delivery, one.fields, one.events
        if not events:
            return await self.finish(delivery.id, delivery.status, fields), None
        outbox = await self.finish_announcing(delivery.id, delivery.status, fields, events)
        return outbox is not None, outbox

    async def hand_to_log(self, delivery: Delivery, reason: str) -> None:
        """A claimed "near" message that failed for now: the log takes it over, `sending` and
        not held, with the reason, so the redelivered event resumes it the log's way (and drops
        it if its ticket has moved on meanwhile, ADR 0005's amendment)."""
        doc = self._log_document(delivery)
        doc.update({"status": DeliveryStatus.SENDING.value, "held_until": RELEASED})
        doc["last_error"] = reason
        if not await self.begin(doc):
            await self.note_error(delivery.id, reason)

    async def delivery(self, delivery_id: str) -> Delivery | None:
        doc = await self.deliveries.find_one({"_id": delivery_id}, {"outbox": 0})
        return Delivery.model_validate(doc) if doc is not None else None

    async def get(self, delivery_id: str) -> Document | None:
        return await self.deliveries.find_one({"_id": delivery_id}, {"outbox": 0})

    async def hold(self, delivery_id: str, now: datetime, until: datetime) -> int | None:
        """Take a "sending" delivery for one attempt until `until`, counting the attempt; None
        while another attempt holds it (a redelivery of its event to the other replica while
        the first still waits on the gateway) or once it is no longer sending. A hold left by a
        crashed process lapses at `until`, and the message then goes again (ADR 0005)."""
        doc = await self.deliveries.find_one_and_update(
            {"_id": delivery_id, "status": "sending", "held_until": {"$lte": instant(now)}},
            {"$inc": {"attempts": 1}, "$set": {"held_until": instant(until)}},
            projection={"attempts": 1},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            # Begun before holds existed (no field; the embedded server's `$not` does not match
            # a missing field): released once, then taken like any other.
            released = await self.deliveries.update_one(
                {"_id": delivery_id, "status": "sending", "held_until": {"$exists": False}},
                {"$set": {"held_until": RELEASED}},
            )
            if released.modified_count:
                return await self.hold(delivery_id, now, until)
        return int(doc["attempts"]) if doc else None

    async def note_error(self, delivery_id: str, reason: str) -> None:
        """A transient failure: the reason is kept and the hold let go, so the retry may send."""
        await self.deliveries.update_one(
            {"_id": delivery_id}, {"$set": {"last_error": reason, "held_until": RELEASED}}
        )

    async def finish(
        self,
        delivery_id: str,
        status: DeliveryStatus,
        fields: Document,
        events: Sequence[Event[Any]] = (),
        *,
        from_statuses: Sequence[DeliveryStatus] = (DeliveryStatus.SENDING,),
    ) -> bool:
        update: Document = {"$set": {**fields, "status": status.value, "held_until": RELEASED}}
        result = await self.deliveries.update_one(
            {"_id": delivery_id, "status": {"$in": [s.value for s in from_statuses]}},
            with_outbox(update, events) if events else update,
        )
        return result.modified_count == 1

    async def finish_announcing(
        self,
        delivery_id: str,
        status: DeliveryStatus,
        fields: Document,
        events: Sequence[Event[Any]],
    ) -> dict[str, Document] | None:
        """`finish` from `sending` with the events that announce it, in the same one command;
        the delivery's whole outbox after the write (an older event still pending there goes
        out first: ADR 0182), or None when the delivery was no longer being sent."""
        update: Document = {"$set": {**fields, "status": status.value, "held_until": RELEASED}}
        doc = await self.deliveries.find_one_and_update(
            {"_id": delivery_id, "status": {"$in": [DeliveryStatus.SENDING.value]}},
            with_outbox(update, events),
            projection={OUTBOX: 1},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else dict(doc.get(OUTBOX) or {})

    async def by_gateway_id(self, channel: str, gateway_id: str) -> Delivery | None:
        """The delivery a gateway's report names (by the id the gateway gave it)."""
        doc = await self.deliveries.find_one(
            indexed({"channel": channel, "gateway_id": gateway_id}), {"outbox": 0}
        )
        return Delivery.model_validate(doc) if doc is not None else None

    async def record_receipt(
        self, delivery_id: str, fields: Document, events: Sequence[Event[Any]]
    ) -> bool:
        """The first final report on an accepted message wins: a replayed or later report (a
        WhatsApp "read" after "delivered", a second device's "failed") changes nothing."""
        result = await self.deliveries.update_one(
            {"_id": delivery_id, "status": "sent", "receipt": None},
            with_outbox({"$set": fields}, events),
        )
        return result.modified_count == 1

    async def unfinished(self, cause_event_id: str, template: str, channel: str) -> dict[str, str]:
        """Deliveries of `template` an event began and did not finish (a crash, or a transient
        failure that the event's redelivery is meant to retry): delivery id by ticket id."""
        found = await self.deliveries.find(
            indexed(
                {
                    "cause_event_id": cause_event_id,
                    "template": template,
                    "channel": channel,
                    "status": "sending",
                }
            ),
            {"ticket_id": 1},
        ).to_list()
        return {str(doc["ticket_id"]): str(doc["_id"]) for doc in found}

    async def list(self, query: Document, limit: int = 500) -> list[Document]:
        return (
            await self.deliveries.find(query, {"outbox": 0, "outbox_n": 0})
            .sort([("created_at", 1), ("_id", 1)])
            .limit(limit)
            .to_list()
        )
