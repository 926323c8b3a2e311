"""Intake use cases for citizens: register and check in (registration.py), follow tickets,
answer the survey; plus the purge of personal data after a session."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast
from zoneinfo import ZoneInfo

from giliran.contracts import (
    Event,
    EventData,
    FeedbackSubmitted,
    RequestCancelled,
    TicketFacts,
    TicketIssued,
    TicketStatus,
    TicketView,
    new_event,
)
from giliran.store import Document, instant
from services.intake import sessions
from services.intake.errors import (
    FeedbackRefused,
    RequestNotFound,
)
from services.intake.models import (
    BUDGET,
    NOT_CHECKED_IN,
    SOURCE,
    Limits,
    Scores,
    SubmitRequest,
    Submitted,
)
from services.intake.privacy import PERSONAL_FIELDS, purge_before
from services.intake.registration import Registration
from services.intake.tickets import TicketEntry, TicketWait, applied, applied_in_order

log = logging.getLogger("giliran.intake")


@dataclass
class Intake(Registration):
    """Every citizen-facing use case of intake (the composition root builds one)."""

    async def record_tickets(self, events: Sequence[Event[Any]]) -> set[str]:
        """A fetched batch of ticket events (the consumer's batch handler: no inbox, ADR 0175).
        Usually one store command for the whole batch (`move_tickets`). When any of its writes
        does not match (a duplicate, a stale or out-of-order event, an unknown request), the
        batch's requests are read in one command, the events applied to them in process in
        stream order (`tickets.applied_in_order`) and each request that changes written once,
        conditionally on its version (ADR 0197). Returns the ids that changed nothing. An
        unknown request raises: the consumer then handles the batch again one event at a time,
        with its retries; what was applied is applied again: no change."""
        if len(events) <= 1:
            return {e.id for e in events if not await self.record_ticket(e)}
        # The usual batch: every event's likely write matches, all in one store command.
        moves = [(e.data.request_id, TicketEntry.of(e)) for e in events]
        if await self.store.move_tickets(moves):
            for request_id, entry in moves:
                self._moved(request_id, entry)
            return set()
        by_request: dict[str, list[TicketEntry]] = {}
        ids: dict[str, list[str]] = {}
        for event, (request_id, entry) in zip(events, moves, strict=True):
            by_request.setdefault(request_id, []).append(entry)
            ids.setdefault(request_id, []).append(event.id)
        stored = await self.store.tickets_of_requests(list(by_request))
        for request_id in by_request:
            if request_id not in stored:
                raise RequestNotFound(request_id)
        unchanged: set[str] = set()

        async def settle(request_id: str, incoming: list[TicketEntry]) -> None:
            version, tickets = stored[request_id]
            touched = {e.ticket_id for e in incoming}
            while True:
                current = {
                    t: TicketEntry.model_validate(tickets[t]) for t in touched if t in tickets
                }
                after, results = applied_in_order(current, incoming)
                if after == current:
                    break
                changed = {t: e.model_dump(mode="json") for t, e in after.items()}
                if await self.store.save_tickets(request_id, version, {**tickets, **changed}):
                    break
                # Written meanwhile (another instance, a redelivery): read it and decide again.
                again = await self.store.tickets_of_requests([request_id])
                if request_id not in again:
                    raise RequestNotFound(request_id)
                version, tickets = again[request_id]
            for event_id, result in zip(ids[request_id], results, strict=True):
                if result is None:
                    unchanged.add(event_id)
                else:
                    self._moved(request_id, result)

        await asyncio.gather(*(settle(r, incoming) for r, incoming in by_request.items()))
        return unchanged

    async def record_ticket(self, event: Event[TicketFacts]) -> bool:
        """Follow a ticket's status from the queue's events (idempotent, order-tolerant); False
        when the event changed nothing.

        One conditional write per event and no inbox (ADR 0175): the write's filter holds the
        rule of `tickets.applied`, so a duplicate, a stale event or a second instance handling
        the same event changes nothing. Only when that write finds nothing to change (rare:
        a stale or duplicate event, an unknown request, an entry stored before event times
        were kept) is the request read and the rule applied in process."""
        request_id = event.data.request_id
        incoming = TicketEntry.of(event)
        entry: TicketEntry | None = incoming
        if not await self.store.move_ticket(request_id, incoming):
            entry = None

            def change(stored: dict[str, Document]) -> dict[str, Document] | None:
                nonlocal entry
                current = stored.get(incoming.ticket_id)
                entry = applied(TicketEntry.model_validate(current) if current else None, incoming)
                if entry is None:
                    return None
                return {**stored, incoming.ticket_id: entry.model_dump(mode="json")}

            if not await self.store.update_tickets(request_id, change):
                raise RequestNotFound(request_id)
        if entry is None:
            return False
        self._moved(request_id, entry)
        return True

    def ticket_heard(self, event: Event[EventData]) -> None:
        """A `ticket.issued` heard on plain NATS as the queue publishes it (every instance hears
        it; ADR 0212, 0228): a kiosk answer waiting here for that request gets the ticket now,
        from the event, before this or another instance's consumer writes it to the request.
        The runtime checked it against its subject and publisher; it is taken only for the
        waiting request's site and a service it asked for (`TicketWait.fits`). Only the waiting
        answer is told: the request in the store, the status page and the printed slip follow
        the durable consumer or the queue's own answer (`Status.view`), never this notice."""
        if not self._waiters or not isinstance(event.data, TicketIssued):
            return
        waiter = self._waiters.get(event.data.request_id)
        if waiter is None:
            return
        entry = TicketEntry.of(cast(Event[TicketFacts], event))
        if waiter.fits(event.site, entry):
            waiter.seen(entry)
        else:
            log.warning(
                "ticket.issued %s of site %s does not fit request %s; not taken",
                event.id,
                event.site,
                event.data.request_id,
            )

    def _moved(self, request_id: str, entry: TicketEntry) -> None:
        """Tell a kiosk answer waiting here, and the status page's push."""
        waiter = self._waiters.get(request_id)
        if waiter is not None:
            waiter.seen(entry)
        self.on_change(request_id)

    async def wait_for_tickets(
        self, request_id: str, wait_seconds: float, submitted: Document | None = None
    ) -> Document:
        """The request once every service has a ticket, or as it stands after `wait_seconds`.

        `submitted`: the request as this process just stored it. Then the answer is built from
        it and the tickets heard as they are issued (`ticket_heard`, in every instance, ADR
        0212) or written by this process's own consumer: the usual case reads nothing. The
        store is read once, at the end of the wait, if the tickets are still not all there (a
        plain NATS message lost: the consumer that wrote them may be the other instance's);
        before ADR 0212 it looked at half the wait too (ADR 0195), which under load, when the
        queue issues late, found nothing new. Without `submitted` it is read up front."""
        waiter = self._waiters.setdefault(request_id, TicketWait())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        # The moment this wait looks in the store if it is not complete by then (none when it
        # does not wait: the caller answers at once with what it has).
        looks = [deadline] if wait_seconds > 0 else []
        doc = submitted
        try:
            while True:
                if doc is None:
                    doc = await self.store.get(request_id)
                    if doc is None:
                        raise RequestNotFound(request_id)
                if waiter.site is None:  # what a heard ticket must fit (ADR 0228)
                    waiter.site, waiter.services = doc["site"], tuple(doc["services"])
                doc = waiter.merged(doc)
                if complete(doc) or not looks:
                    return doc
                waiter.changed.clear()
                try:
                    async with asyncio.timeout_at(looks[0]):
                        await waiter.changed.wait()
                except TimeoutError:
                    looks.pop(0)
                    doc = None  # perhaps another instance's consumer wrote them: read the store
        finally:
            self._waiters.pop(request_id, None)

    async def submit_feedback(self, token: str, ticket_id: str, scores: Scores) -> Document:
        """One SKM response per completed ticket, published as `feedback.submitted`."""
        doc = await self.by_token(token)
        ticket = (doc.get("tickets") or {}).get(ticket_id)
        if ticket is None:
            raise FeedbackRefused("tiket tidak dikenal.", "unknown ticket.")
        if ticket["status"] != TicketStatus.COMPLETED.value:
            raise FeedbackRefused(
                "survei dibuka setelah layanan selesai.", "the survey opens once served."
            )
        now = self.clock()
        event = new_event(
            FeedbackSubmitted(
                feedback_id=ticket_id,
                request_id=doc["_id"],
                session_id=doc["session_id"],
                service=ticket["service"],
                scores=scores.model_dump(),
                submitted_at=now,
            ),
            site=doc["site"],
            source=SOURCE,
            at=now,
        )
        stored = {
            "_id": ticket_id,
            "request_id": doc["_id"],
            "session_id": doc["session_id"],
            "service": ticket["service"],
            "scores": scores.model_dump(),
            "submitted_at": instant(now),
        }
        answer = {k: v for k, v in stored.items() if k not in ("_id", "request_id", "session_id")}
        # A request stored before answers were kept in it may have one in the old collection.
        legacy = not self.store.answers_kept_inline(doc)
        if (
            legacy and ticket_id in await self.store.feedback_for([ticket_id])
        ) or not await self.store.record_feedback(
            doc["_id"], ticket_id, answer, [event], legacy=legacy
        ):
            raise FeedbackRefused(
                "survei untuk tiket ini sudah diisi. Terima kasih!",
                "this ticket's survey was already answered. Thank you!",
            )
        self.wake()
        return stored

    # --- check-in lapse ------------------------------------------------------------------------

    async def lapse_unchecked(self) -> int:
        """Registrations not checked in by their grace lapse (ADR 0120): `request.cancelled`
        (reason `not_checked_in`) takes their tickets out of the line, and their places go back
        to the session's quota for the walk-ins at the kiosk."""
        now = self.clock()
        lapsed = 0
        while batch := await self.store.lapsing(now):
            for doc in batch:
                event = new_event(
                    RequestCancelled(
                        request_id=doc["_id"], reason=NOT_CHECKED_IN, cancelled_at=now
                    ),
                    site=doc["site"],
                    source=SOURCE,
                    at=now,
                )
                # Guarded on arrived and cancelled_at: a check-in at the same moment wins once.
                if not await self.store.update_if(
                    {"_id": doc["_id"], "arrived": False, "cancelled_at": None},
                    {"cancelled_at": instant(now), "cancel_reason": NOT_CHECKED_IN},
                    [event],
                ):
                    continue
                lapsed += 1
                await self._give_back_places(doc)
                self.on_change(doc["_id"])
        if lapsed:
            self.wake()
        return lapsed

    async def _give_back_places(self, doc: Document) -> None:
        site = self.catalogue.site(doc["site"])
        if site is None:
            return
        for code in doc["services"]:
            service = site.service(code)
            await self.store.release_place(doc["session_id"], code)
            if site.capacity_minutes is not None and service is not None and service.minutes:
                await self.store.release_place(doc["session_id"], BUDGET, service.minutes)

    # --- retention -----------------------------------------------------------------------------

    async def purge(self) -> int:
        """Blank the personal data of requests whose session is older than the retention
        period; the request itself (services, tickets, times) stays for the statistics."""
        now = self.clock()
        zone = ZoneInfo(self.timezone)
        before = purge_before(now.astimezone(zone).date(), self.purge_after_days).isoformat()
        purged = 0
        while batch := await self.store.to_purge(before):
            for doc in batch:
                await self.store.purge(doc["_id"], PERSONAL_FIELDS, now)
                purged += 1
        await self.store.purge_session_keys(before)
        await self.store.forget_rates(now)
        return purged

    async def open_demo_session(self, slug: str) -> sessions.SessionWindow:
        window = sessions.demo_session(self.site(slug), self.clock())
        await self.store.save_adhoc_session(
            {
                "_id": window.session_id,
                "site": window.site,
                "local_date": window.local_date.isoformat(),
                "opens_at": instant(window.opens_at),
                "closes_at": instant(window.closes_at),
                "kind": window.kind,
            }
        )
        return window


def complete(doc: Document) -> bool:
    """Whether every service of the request has its ticket."""
    return len(doc.get("tickets") or {}) >= len(doc["services"])


def tickets_of(doc: Document) -> list[TicketView]:
    """The request's tickets in the order the citizen asked for the services."""
    order = {code: i for i, code in enumerate(doc["services"])}
    tickets = sorted((doc.get("tickets") or {}).values(), key=lambda t: order.get(t["service"], 99))
    return [
        TicketView(
            ticket_id=t["ticket_id"],
            request_id=doc["_id"],
            number=t["number"],
            service=t["service"],
            status=TicketStatus(t["status"]),
            counter=t.get("counter"),
        )
        for t in tickets
    ]


# What other modules (entrypoints, admin, tests) import from here.
__all__ = ["SOURCE", "Intake", "Limits", "Scores", "SubmitRequest", "Submitted", "tickets_of"]
