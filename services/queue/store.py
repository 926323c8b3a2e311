"""The queue's own collections: tickets (with their outbox), line number sequences, counters,
visits (which ticket of a request is being served) and sessions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from cachetools import TTLCache
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from giliran.contracts import CounterView, Event, TicketStatus, TicketView
from giliran.store import (
    OUTBOX,
    Collection,
    Database,
    Document,
    count,
    from_instant,
    indexed,
    instant,
    outbox_fields,
    with_outbox,
)
from services.queue.calling import CounterState, CounterStatus, TicketAt

NO_OUTBOX = {"outbox": 0}
BUSY = ("called", "serving")
# The counter a called or served ticket occupies ("<site>:<counter>"), under a unique index: a
# counter seats one ticket at a time, so a call is decided by the ticket's one write (ADR 0203).
SEAT = "seat"
# A ticket's place in its line's numbering ("<session>:<prefix>#<number, 9 digits>"), under a
# unique index: the number is decided in memory and this index refuses a number issued twice
# (ADR 0215). Only issued tickets carry it (a transfer or re-check-in keeps its number).
LINE_NUMBER = "line_number"
# The request a ticket was the first issued for (its request id), under a unique index: only
# one ticket per request carries it, so a request's tickets written without reading whether
# it had some before fail on it when it had (ADR 0215).
FIRST_OF = "first_of"
# Marks in `line_sequences` (whose documents before ADR 0215 were the lines' counters).
FIRST_OF_BACKFILLED = "~first_of_backfilled"
# Ticket statuses whose request may still bring a citizen to a counter.
OPEN_STATUSES = ("waiting", "called", "serving")
# Ids of the events this process wrote, until the bus has surely echoed them back: an event
# seen on the bus and not in here is another queue instance's write (services.queue.memory).
OWN_EVENTS_KEPT = 100_000
OWN_EVENTS_SECONDS = 600.0


def ticket_view(doc: Document, **extra: Any) -> TicketView:
    def when(key: str) -> datetime | None:
        value = doc.get(key)
        return from_instant(value) if value else None

    return TicketView(
        ticket_id=doc["_id"],
        request_id=doc["request_id"],
        number=doc["number"],
        service=doc["service"],
        status=TicketStatus(doc["status"]),
        counter=doc.get("counter"),
        session_id=doc.get("session_id"),
        priority=doc.get("priority"),
        appointment_at=when("appointment_at"),
        arrived=doc.get("arrived", True),
        held=doc.get("held", False),
        recalls=doc.get("recalls", 0),
        outcome=doc.get("outcome"),
        issued_at=when("issued_at"),
        queued_at=when("queued_at"),
        called_at=when("called_at"),
        started_at=when("started_at"),
        completed_at=when("completed_at"),
        **extra,
    )


def counter_view(doc: Document, current: str | None = None) -> CounterView:
    return CounterView(
        counter=doc["counter"],
        status=doc["status"],
        session_id=doc.get("session_id"),
        services=doc["services"],
        current_ticket_id=current,
    )


# Wakes the outbox relay for the one collection a write put events in (the service runtime's
# wake_relay): a queue has two outboxes, and a wake without a name read both.
WakeRelay = Callable[[Collection], None]
# Publishes the events a write just put in a ticket's outbox at once, with whatever older ones
# the outbox as the write returned it still holds (None: only these), and takes them out a
# moment later (ServiceRuntime.relay_now, ADR 0182, 0193); left to the relay if that fails.
HandOver = Callable[
    [Collection, str, Sequence[Event[Any]], Mapping[str, Document] | None], Awaitable[None]
]


def ticket_at(doc: Document | None) -> TicketAt | None:
    """What the call decisions (services.queue.calling) read of a stored ticket."""
    return None if doc is None else typed_ticket(doc)


def typed_ticket(doc: Document) -> TicketAt:
    """As `ticket_at`, of a ticket at hand."""
    return TicketAt(
        site=str(doc.get("site") or ""),
        status=TicketStatus(doc["status"]),
        counter=doc.get("counter"),
        arrived=bool(doc.get("arrived", True)),
        shared=bool(doc.get("multi", True)),  # a ticket from before the flag: shared
    )


def counter_state(doc: Document) -> CounterState:
    """A stored counter, typed (the revision and pointer a call reserves it by)."""
    return CounterState(
        counter=str(doc["counter"]),
        status=CounterStatus(doc["status"]),
        session_id=doc.get("session_id"),
        services=tuple(doc["services"]),
        revision=int(doc.get("revision", 0)),
        current=doc.get("current"),
        normal_since_priority=int(doc.get("normal_since_priority", 0)),
        pinned=bool(doc.get("pinned")),
    )


def counter_key(site: str, counter: str) -> str:
    return f"{site}:{counter}"


class SessionFlags(NamedTuple):
    """What call-next need not look for in a session until it has happened once (ADR 0084)."""

    appointments: bool
    priorities: bool


class TicketStore:
    def __init__(self, database: Database) -> None:
        self.tickets = database["tickets"]
        self.sequences = database["line_sequences"]
        self.counters = database["counters"]
        self.visits = database["visits"]
        self.sessions = database["sessions"]
        self.eta_quotes = database["eta_quotes"]
        self._own_events: TTLCache[str, bool] = TTLCache(OWN_EVENTS_KEPT, OWN_EVENTS_SECONDS)
        self.wake_relay: WakeRelay | None = None
        self.hand_over: HandOver | None = None
        # Told the site after each write with events (the Queue: its boards refresh as the write
        # is made, not again when the event comes back on the bus).
        self.changed: Callable[[str], None] | None = None

    def _changed(self, site: object) -> None:
        if self.changed is not None and isinstance(site, str) and site:
            self.changed(site)

    def _sent(self, collection: Collection, events: Sequence[Event[Any]]) -> None:
        """After a write that put `events` in `collection`'s outbox: they leave now."""
        if events and self.wake_relay is not None:
            self.wake_relay(collection)

    async def _handed_over(
        self,
        collection: Collection,
        doc_id: str,
        events: Sequence[Event[Any]],
        outbox: Mapping[str, Document] | None,
    ) -> None:
        """After a write that put `events` in a ticket's outbox: they leave now, handed to the
        bus by this task rather than found by the relay's read after a wake (ADR 0193)."""
        if not events:
            return
        if self.hand_over is None:
            self._sent(collection, events)
            return
        await self.hand_over(collection, doc_id, events, outbox)

    def _written(self, events: Sequence[Event[Any]]) -> Sequence[Event[Any]]:
        for event in events:
            self._own_events[event.id] = True
        return events

    def own_event(self, event_id: str) -> bool:
        """Whether this process wrote the event (told apart from another instance's)."""
        return event_id in self._own_events

    async def ensure_indexes(self) -> None:
        # call-next reads the oldest callable tickets of one line along an index whose leading
        # columns are exactly the query's equalities, sort included: no scan however long the
        # line (the embedded server uses an index only then; see giliran.store.indexed).
        await self.tickets.create_index(
            [("session_id", 1), ("service", 1), ("status", 1), ("arrived", 1), ("held", 1),
             ("queued_at", 1)]
        )  # fmt: skip
        await self.tickets.create_index(
            [("session_id", 1), ("service", 1), ("status", 1), ("arrived", 1), ("held", 1),
             ("is_priority", 1), ("queued_at", 1)]
        )  # fmt: skip
        # The heads of the lines kept in memory (held tickets included, flagged).
        await self.tickets.create_index(
            [("session_id", 1), ("service", 1), ("status", 1), ("arrived", 1), ("queued_at", 1)]
        )
        await self.tickets.create_index(
            [("session_id", 1), ("service", 1), ("status", 1), ("arrived", 1), ("is_priority", 1),
             ("queued_at", 1)]
        )  # fmt: skip
        await self.tickets.create_index(
            [("session_id", 1), ("status", 1), ("arrived", 1), ("held", 1), ("appointment_at", 1)]
        )
        await self.tickets.create_index([("request_id", 1)])
        await self.tickets.create_index([("site", 1), ("counter", 1), ("status", 1)])
        await self.tickets.create_index([("site", 1), ("last_call_at", -1)])
        await self.tickets.create_index(
            [("session_id", 1), ("service", 1), ("status", 1), ("completed_at", -1)]
        )
        await self.tickets.create_index([("status", 1), ("held", 1)])
        # One ticket seated per counter (ADR 0203); sparse: only called and served ones have one.
        await self.tickets.create_index(SEAT, unique=True, sparse=True)
        # The latest call at a counter: whether it seats a ticket, and its priority ratio.
        await self.tickets.create_index([("site", 1), ("counter", 1), ("called_at", -1)])
        await self._seat_the_busy()
        await self.tickets.create_index(LINE_NUMBER, unique=True, sparse=True)
        await self.tickets.create_index(FIRST_OF, unique=True, sparse=True)
        await self._mark_first_tickets()
        await self.counters.create_index([("site", 1)])
        await self.sessions.create_index([("site", 1), ("opens_at", -1)])
        await self.eta_quotes.create_index([("ticket_id", 1)])

    async def _seat_the_busy(self) -> None:
        """Tickets called or served before counters seated them (ADR 0203) take their seat, so
        that the unique seat holds from the first call after an upgrade. Two at one counter (a
        state the code before could leave after a crash) keep the first: the second is left
        for its officer to complete, as before."""
        for status in BUSY:
            found = self.tickets.find(
                indexed({"status": status}), {"site": 1, "counter": 1, SEAT: 1}
            )
            for doc in await found.to_list():
                if doc.get(SEAT) or not doc.get("site") or not doc.get("counter"):
                    continue
                with contextlib.suppress(DuplicateKeyError):
                    await self.tickets.update_one(
                        {"_id": doc["_id"], "status": {"$in": list(BUSY)}, SEAT: None},
                        {"$set": {SEAT: counter_key(doc["site"], doc["counter"])}},
                    )

    async def _mark_first_tickets(self) -> None:
        """Tickets issued before ADR 0215 carry no `first_of`: one open ticket per request takes
        it, so that a request issued again after the upgrade still finds it had tickets (and
        shares them, ADR 0190). Once per store (a mark says it was done); concurrent instances
        only lose the unique index to each other."""
        if await self.sequences.find_one({"_id": FIRST_OF_BACKFILLED}) is not None:
            return
        found = self.tickets.find(
            {"status": {"$in": list(OPEN_STATUSES)}}, {"request_id": 1, FIRST_OF: 1}
        )
        marked: set[str] = set()
        for doc in await found.to_list():
            request_id = doc.get("request_id")
            if doc.get(FIRST_OF) or not request_id or request_id in marked:
                continue
            marked.add(request_id)
            with contextlib.suppress(DuplicateKeyError):
                await self.tickets.update_one(
                    {"_id": doc["_id"], FIRST_OF: None}, {"$set": {FIRST_OF: request_id}}
                )
        with contextlib.suppress(DuplicateKeyError):
            await self.sequences.insert_one({"_id": FIRST_OF_BACKFILLED})

    # --- tickets -----------------------------------------------------------------------------

    async def highest_number(self, line: str) -> int:
        """The highest number of the tickets numbered in a line under ADR 0215 (0: none)."""
        numbered = (
            await self.tickets.find(
                {LINE_NUMBER: {"$gte": line_number(line, 0), "$lt": f"{line}$"}},
                {LINE_NUMBER: 1},
            )
            .sort([(LINE_NUMBER, -1)])
            .limit(1)
            .to_list()
        )
        return number_in_line(str(numbered[0][LINE_NUMBER])) if numbered else 0

    async def counted_before(self, line: str) -> int:
        """A line's counter from before ADR 0215 (0: none): a running Sunday's line goes on
        from it after the upgrade, never starts at 1 again. No longer written."""
        counted = await self.sequences.find_one({"_id": line})
        return int(counted.get("seq", 0)) if counted else 0

    async def insert_issued(self, docs: Sequence[Document], events: Sequence[Event[Any]]) -> int:
        """Write new tickets, `events[i]` in `docs[i]`'s outbox, in ONE command, in order: how
        many were written before the first that the store refused (all: `len(docs)`). One
        refused (a unique index: its id, its number, its request's first ticket) stops the
        rest, so numbers after it are not left with a gap; other failures raise."""
        if not docs:
            return 0
        written = [
            {**doc, **outbox_fields(self._written([event]))}
            for doc, event in zip(docs, events, strict=True)
        ]
        try:
            await self.tickets.insert_many(written, ordered=True)
            done = len(docs)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors") or []
            if not errors or any(e.get("code") != 11000 for e in errors):
                raise
            done = int(errors[0]["index"])
        for doc, event in zip(docs[:done], events[:done], strict=True):
            # A ticket just inserted: its outbox holds its event only.
            await self._handed_over(self.tickets, doc["_id"], [event], None)
            self._changed(doc.get("site"))
        return done

    async def get(self, ticket_id: str) -> Document | None:
        return await self.tickets.find_one({"_id": ticket_id}, NO_OUTBOX)

    async def ticket_state(self, ticket_id: str) -> TicketAt | None:
        """A ticket as the call decisions read it (services.queue.calling), from the store."""
        return ticket_at(await self.get(ticket_id))

    async def for_request(self, request_id: str) -> list[Document]:
        return await self.tickets.find(indexed({"request_id": request_id}), NO_OUTBOX).to_list()

    async def insert_with_events(self, doc: Document, events: Sequence[Event[Any]]) -> bool:
        """False when the ticket already exists (a redelivered or concurrent issue)."""
        try:
            await self.tickets.insert_one({**doc, **outbox_fields(self._written(events))})
        except DuplicateKeyError:
            return False
        # A ticket just inserted: its outbox holds these events only.
        await self._handed_over(self.tickets, doc["_id"], events, None)
        self._changed(doc.get("site"))
        return True

    async def ahead_of(self, doc: Document) -> int:
        """Arrived tickets of the same line that joined before this one."""
        return await count(
            self.tickets,
            indexed(
                {
                    "session_id": doc["session_id"],
                    "service": doc["service"],
                    "status": TicketStatus.WAITING.value,
                    "arrived": True,
                    # the same order call-next reads: arrival, then id
                    "$or": [
                        {"queued_at": {"$lt": doc["queued_at"]}},
                        {"queued_at": doc["queued_at"], "_id": {"$lt": doc["_id"]}},
                    ],
                }
            ),
        )

    async def line_head(
        self, session_id: str, service: str, limit: int, *, priority_only: bool
    ) -> list[Document]:
        """The oldest arrived waiting tickets of a line (held ones too), in call-next's order."""
        query: Document = {
            "session_id": session_id, "service": service, "status": "waiting", "arrived": True
        }  # fmt: skip
        if priority_only:
            query["is_priority"] = True
        cursor = self.tickets.find(indexed(query), NO_OUTBOX).sort([("queued_at", 1), ("_id", 1)])
        found: list[Document] = await cursor.limit(limit).to_list()
        return found

    async def waiting_arrived(self, session_id: str, service: str) -> int:
        return await count(
            self.tickets,
            indexed(
                {"session_id": session_id, "service": service, "status": "waiting",
                 "arrived": True}
            ),
        )  # fmt: skip

    async def callable_candidates(
        self,
        site: str,
        session_id: str,
        services: Sequence[str],
        now: datetime,
        grace: timedelta,
        *,
        want_priority: bool,
        want_appointments: bool,
    ) -> list[Document]:
        """What the call rules need to choose from, read along the indexes: per line the oldest
        callable tickets; the oldest priority ones when a priority call may be due; the
        appointments due now when the session has any. Only tickets of `site`: the site is
        checked on what was read rather than queried, so the reads stay on their indexes."""
        base = {"session_id": session_id, "status": "waiting", "arrived": True, "held": False}
        fields = {"outbox": 0}

        async def oldest(query: Document, limit: int) -> list[Document]:
            cursor = self.tickets.find(indexed(query), fields).sort([("queued_at", 1), ("_id", 1)])
            found: list[Document] = await cursor.limit(limit).to_list()
            return found

        queries = [oldest({**base, "service": s}, 4) for s in services]
        if want_priority:
            queries += [oldest({**base, "service": s, "is_priority": True}, 2) for s in services]
        if want_appointments:
            due = {
                **base,
                "service": {"$in": list(services)},
                "appointment_at": {"$gte": instant(now - grace), "$lte": instant(now)},
            }
            queries.append(oldest(due, 4))
        found: dict[str, Document] = {}
        for batch in await asyncio.gather(*queries):
            for doc in batch:
                if doc.get("site") == site:
                    found[doc["_id"]] = doc
        return list(found.values())

    async def transition(
        self,
        ticket_id: str,
        *,
        from_status: TicketStatus | Sequence[TicketStatus],
        set_fields: Document,
        events: Sequence[Event[Any]],
        inc: Document | None = None,
        extra_match: Document | None = None,
        seat: str | None = None,
    ) -> Document | None:
        """Move a ticket from `from_status` with its events in one atomic write; None if it was
        no longer in that status (another counter got there first) or, when it is called into
        `seat` (a counter's key), that seat was another ticket's. A move to a status that is
        neither called nor served frees the ticket's seat in the same write."""
        statuses = [from_status] if isinstance(from_status, TicketStatus) else list(from_status)
        update: Document = {"$set": dict(set_fields)}
        if seat is not None:
            update["$set"][SEAT] = seat
        elif set_fields.get("status") not in (None, *BUSY):
            update["$unset"] = {SEAT: ""}  # it leaves its counter: the counter is free
        if inc:
            update["$inc"] = inc
        try:
            moved: Document | None = await self.tickets.find_one_and_update(
                {
                    "_id": ticket_id,
                    "status": {"$in": [s.value for s in statuses]},
                    **(extra_match or {}),
                },
                with_outbox(update, self._written(events)),
                # The outbox too, as this write left it: an older event still pending there
                # leaves before these (ADR 0182). Still one command.
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            # The seat is another ticket's (MongoDB says so; the embedded store only leaves the
            # ticket as it was): the caller reads the ticket to tell why, in both cases.
            moved = None
        if moved is None:
            return None
        outbox = moved.pop(OUTBOX, None) or {}
        await self._handed_over(self.tickets, ticket_id, events, outbox)
        self._changed(moved.get("site"))
        return moved

    async def mark_shared(self, ticket_id: str, statuses: Sequence[TicketStatus]) -> bool:
        """Flag a ticket alone in its request as sharing it (its request gets another ticket):
        its calls take the serving slot from now on (ADR 0190). False when it was not alone
        any more or not in one of `statuses` (read it again)."""
        shared = await self.tickets.update_one(
            {"_id": ticket_id, "status": {"$in": [s.value for s in statuses]}, "multi": False},
            {"$set": {"multi": True}},
        )
        return shared.matched_count == 1

    async def set_held(
        self, request_id: str, held: bool, *, except_ticket: str | None = None
    ) -> None:
        query: Document = {"request_id": request_id, "status": TicketStatus.WAITING.value}
        if except_ticket is not None:
            query["_id"] = {"$ne": except_ticket}
        await self.tickets.update_many(indexed(query), {"$set": {"held": held}})

    async def at_counter(self, site: str, counter: str) -> Document | None:
        """The ticket a counter is calling or serving now, if any: the one in its seat (ADR
        0203). A point read on a unique index, the same however many tickets the store holds."""
        doc = await self.tickets.find_one({SEAT: counter_key(site, counter)}, NO_OUTBOX)
        if doc is None or doc.get("counter") != counter or doc["status"] not in BUSY:
            return None
        return doc

    async def last_call(self, site: str, counter: str) -> Document | None:
        """The ticket called at a counter last (None: never): seated there while it is called
        or served, and the counter's priority ratio after it (ADR 0203). Along an index."""
        cursor = self.tickets.find(indexed({"site": site, "counter": counter}), NO_OUTBOX).sort(
            [("called_at", -1)]
        )
        found: list[Document] = await cursor.limit(1).to_list()
        return found[0] if found else None

    async def waiting_list(
        self, site: str, session_id: str, services: Sequence[str], limit: int
    ) -> list[Document]:
        cursor = self.tickets.find(
            {
                "session_id": session_id,
                "service": {"$in": list(services)},
                "status": "waiting",
                "site": site,  # a console never lists another site's citizens
            },
            NO_OUTBOX,
        ).sort([("queued_at", 1), ("_id", 1)])
        found: list[Document] = await cursor.limit(limit).to_list()
        return found

    async def recent_calls(self, site: str, limit: int) -> list[Document]:
        # Latest call or recall first (a recall is announced again, so it comes back on top).
        # `$gt ""` rather than `$exists` (the same tickets: a set last_call_at is an instant
        # string): the embedded store answers it in half the time, on every board render.
        cursor = self.tickets.find(
            indexed({"site": site, "last_call_at": {"$gt": ""}}), NO_OUTBOX
        ).sort([("last_call_at", -1)])
        found: list[Document] = await cursor.limit(limit).to_list()
        return found

    async def service_seconds(self, session_id: str, service: str, limit: int) -> list[float]:
        """Durations (call → complete) of the line's latest completions, oldest first."""
        cursor = self.tickets.find(
            indexed({"session_id": session_id, "service": service, "status": "completed"}),
            {"called_at": 1, "completed_at": 1},
        ).sort([("completed_at", -1)])
        docs = await cursor.limit(limit).to_list()
        return [
            (from_instant(d["completed_at"]) - from_instant(d["called_at"])).total_seconds()
            for d in reversed(docs)
            if d.get("called_at") and d.get("completed_at")
        ]

    async def record_quote(
        self, ticket_id: str, quoted_at: datetime, eta: datetime, ahead: int
    ) -> None:
        """Every ETA shown to a citizen, at most one per ticket per minute, so reporting can tell
        how wrong the quotes were."""
        minute = quoted_at.astimezone(UTC).strftime("%Y%m%dT%H%M")
        await self.eta_quotes.update_one(
            {"_id": f"{ticket_id}@{minute}"},
            {"$setOnInsert": {"ticket_id": ticket_id, "quoted_at": instant(quoted_at),
                              "eta": instant(eta), "ahead": ahead}},
            upsert=True,
        )  # fmt: skip

    # --- visits: one ticket of a request served at a time -----------------------------------

    async def claim_visit(self, request_id: str, ticket_id: str, now: datetime) -> bool:
        """Take the request's serving slot for `ticket_id`; False when another ticket has it.
        Insert-or-conditional-update on one document: atomic, so two counters can never both
        take it."""
        return await self.take_visit(request_id, ticket_id, now) is not None

    async def take_visit(self, request_id: str, ticket_id: str, now: datetime) -> bool | None:
        """As `claim_visit`: True when this call took the slot, False when `ticket_id` already
        held it (another call of the same ticket is in flight: not this call's to free), None
        when another ticket has it."""
        claim = {"ticket_id": ticket_id, "since": instant(now)}
        try:
            await self.visits.insert_one({"_id": request_id, **claim})
            return True
        except DuplicateKeyError:
            pass
        taken = await self.visits.update_one(
            {"_id": request_id, "ticket_id": None}, {"$set": claim}
        )
        if taken.modified_count == 1:
            return True
        return False if await self._is_claimed_by(request_id, ticket_id) else None

    async def _is_claimed_by(self, request_id: str, ticket_id: str) -> bool:
        doc = await self.visits.find_one({"_id": request_id})
        return doc is not None and doc.get("ticket_id") == ticket_id

    async def release_visit(self, request_id: str, ticket_id: str) -> None:
        await self.visits.update_one(
            {"_id": request_id, "ticket_id": ticket_id}, {"$set": {"ticket_id": None}}
        )

    async def visit_holder(self, request_id: str) -> str | None:
        doc = await self.visits.find_one({"_id": request_id})
        return doc.get("ticket_id") if doc else None

    async def stale_visits(self) -> list[Document]:
        return await self.visits.find({"ticket_id": {"$ne": None}}).to_list()

    async def held_tickets(self) -> list[Document]:
        return await self.tickets.find(
            indexed({"status": "waiting", "held": True}), {"request_id": 1}
        ).to_list()

    # --- counters ----------------------------------------------------------------------------

    async def counter(self, site: str, counter: str) -> Document | None:
        return await self.counters.find_one({"_id": counter_key(site, counter)}, NO_OUTBOX)

    async def counters_of(self, site: str) -> list[Document]:
        return await self.counters.find(indexed({"site": site}), NO_OUTBOX).to_list()

    async def save_counter(
        self,
        site: str,
        counter: str,
        fields: Document,
        events: Sequence[Event[Any]],
        expect_revision: int | None,
    ) -> Document | None:
        """Write a counter's state with its events; None when someone changed it meanwhile."""
        key = counter_key(site, counter)
        events = self._written(events)
        update = with_outbox({"$set": {**fields, "site": site, "counter": counter}}, events)
        update.setdefault("$inc", {})["revision"] = 1
        if expect_revision is None:
            try:
                await self.counters.insert_one(
                    {"_id": key, **fields, "site": site, "counter": counter, "revision": 1,
                     **outbox_fields(events)}
                )  # fmt: skip
            except DuplicateKeyError:
                return None
            self._sent(self.counters, events)
            inserted = await self.counter(site, counter)
            self._changed(site)
            return inserted
        saved: Document | None = await self.counters.find_one_and_update(
            {"_id": key, "revision": expect_revision},
            update,
            projection=NO_OUTBOX,
            return_document=ReturnDocument.AFTER,
        )
        if saved is not None:
            self._sent(self.counters, events)
            self._changed(site)
        return saved

    # --- sessions ----------------------------------------------------------------------------

    async def note_session(
        self,
        site: str,
        session_id: str,
        opens_at: datetime | None,
        closes_at: datetime | None,
        arrival: datetime | None,
        *,
        appointments: bool = False,
        priorities: bool = False,
    ) -> bool:
        """Record a session's facts; False (nothing written) when the session is another
        site's: a session belongs to one site for good."""
        fields: Document = {"site": site}
        if opens_at and closes_at:
            fields |= {"opens_at": instant(opens_at), "closes_at": instant(closes_at)}
        update: Document = {"$set": fields}
        if appointments:
            fields["appointments"] = True
        if priorities:  # never unset: a flag that the session ever had a priority ticket
            fields["priorities"] = True
        if arrival is not None:
            update["$max"] = {"last_arrival": instant(arrival)}
        try:
            # Matched on the site too: a session recorded for another site does not match, and
            # the upsert's insert then fails on the `_id` (one write, no read first).
            await self.sessions.update_one({"_id": session_id, "site": site}, update, upsert=True)
        except DuplicateKeyError:
            return False
        return True

    async def session_flags(self, session_id: str) -> SessionFlags:
        doc = await self.sessions.find_one(
            {"_id": session_id}, {"appointments": 1, "priorities": 1}
        )
        doc = doc or {}
        return SessionFlags(bool(doc.get("appointments")), bool(doc.get("priorities")))

    async def sessions_of(self, site: str) -> list[Document]:
        return await self.sessions.find(indexed({"site": site})).to_list()

    async def session_site(self, session_id: str) -> str | None:
        """The site a session was recorded for (from intake's events); None if never seen."""
        doc = await self.sessions.find_one({"_id": session_id}, {"site": 1})
        return str(doc["site"]) if doc and doc.get("site") else None


def line_number(line: str, number: int) -> str:
    """A ticket's `LINE_NUMBER`: fixed width, so the index orders a line's numbers."""
    return f"{line}#{number:09d}"


def number_in_line(value: str) -> int:
    return int(value.rsplit("#", 1)[1])


def audit_facts(doc: Document | None) -> dict[str, Any] | None:
    """What the audit trail keeps of a ticket before an action (no personal data)."""
    if doc is None:
        return None
    keys = ("number", "service", "status", "counter", "recalls", "held", "outcome")
    return {"ticket_id": doc["_id"], **{k: doc.get(k) for k in keys if k in doc}}


def facts_of(doc: Document) -> dict[str, Any]:
    """The fields every ticket event repeats, from the stored ticket."""
    return {
        "ticket_id": doc["_id"],
        "request_id": doc["request_id"],
        "session_id": doc["session_id"],
        "service": doc["service"],
        "number": doc["number"],
        "issued_at": from_instant(doc["issued_at"]),
    }
