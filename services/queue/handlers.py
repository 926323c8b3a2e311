"""Queue use cases: issue tickets for a request, call the next ticket, complete a ticket."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from giliran.catalogue import Catalogue, SiteDef
from giliran.contracts import (
    Event,
    RequestSubmitted,
    TicketCalled,
    TicketCompleted,
    TicketIssued,
    TicketStatus,
    TicketView,
    new_event,
    utcnow,
)
from giliran.errors import Unprocessable
from giliran.store import Document, from_instant, instant
from services.queue import domain
from services.queue.store import TicketStore, ticket_view

SOURCE = "queue"


@dataclass
class Queue:
    """The queue's use cases over its store; `wake` tells the outbox relay there is work."""

    store: TicketStore
    catalogue: Catalogue
    wake: Callable[[], None]
    clock: Callable[[], datetime] = utcnow

    def _site(self, slug: str) -> SiteDef:
        site = self.catalogue.site(slug)
        if site is None:
            raise domain.UnknownSite(slug)
        return site

    async def issue_tickets(self, event: Event[RequestSubmitted]) -> list[TicketView]:
        """One ticket per requested service, numbered per session and line. Idempotent: tickets
        have deterministic ids, so a redelivered request finds its tickets and issues none."""
        request = event.data
        site = self.catalogue.site(event.site)
        if site is None:
            raise Unprocessable(f"unknown site {event.site!r}")
        unknown = domain.unknown_services(site, request.services)
        if unknown:
            raise Unprocessable(f"site {site.site} does not offer {unknown}")
        existing = {d["service"]: d for d in await self.store.for_request(request.request_id)}
        issued: list[TicketView] = []
        for code in request.services:
            if code in existing:
                issued.append(ticket_view(existing[code]))
                continue
            service = site.service(code)
            assert service is not None
            ticket_id = domain.ticket_id_for(request.request_id, code)
            ahead = await self.store.waiting_in_line(site.site, request.session_id, code)
            seq = await self.store.next_sequence(
                domain.line_key(request.session_id, service.prefix)
            )
            now = self.clock()
            number = domain.format_number(service.prefix, seq)
            ticket_event = new_event(
                TicketIssued(
                    ticket_id=ticket_id,
                    request_id=request.request_id,
                    session_id=request.session_id,
                    service=code,
                    number=number,
                    issued_at=now,
                    waiting_ahead=ahead,
                ),
                site=site.site,
                source=SOURCE,
                at=now,
            )
            doc = {
                "_id": ticket_id,
                "site": site.site,
                "session_id": request.session_id,
                "request_id": request.request_id,
                "service": code,
                "prefix": service.prefix,
                "seq": seq,
                "number": number,
                "status": TicketStatus.WAITING.value,
                "issued_at": instant(now),
                # Walk-ins queue from issue; check-in for appointments will move this.
                "queued_at": instant(now),
                "channel": request.channel.value,
            }
            if await self.store.insert_with_events(doc, [ticket_event]):
                issued.append(ticket_view(doc))
            else:  # a concurrent delivery won; its number stands and this one is left unused
                again = await self.store.get(ticket_id)
                assert again is not None
                issued.append(ticket_view(again))
        self.wake()
        return issued

    async def call_next(self, site_slug: str, counter_id: str) -> TicketView | None:
        """Claim the longest-waiting ticket this counter serves; None when nothing is callable.
        The claim is a conditional write, so two counters calling at once never share a ticket."""
        site = self._site(site_slug)
        counter = domain.counter_of(site, counter_id)
        services = domain.callable_services(counter)
        while True:
            candidate = await self.store.oldest_waiting(site.site, services)
            if candidate is None:
                return None
            now = self.clock()
            called = new_event(
                TicketCalled(**_facts(candidate), counter=counter.id, called_at=now),
                site=site.site,
                source=SOURCE,
                at=now,
            )
            doc = await self.store.transition(
                candidate["_id"],
                from_status=TicketStatus.WAITING,
                set_fields={
                    "status": TicketStatus.CALLED.value,
                    "counter": counter.id,
                    "called_at": instant(now),
                },
                events=[called],
            )
            if doc is not None:
                self.wake()
                return ticket_view(doc)
            # Another counter claimed it between our read and our write. Its write is committed,
            # so reading again finds the next ticket: every lost race is someone else's progress.

    async def complete(self, site_slug: str | None, ticket_id: str) -> TicketView:
        doc = await self.store.get(ticket_id)
        if doc is None or (site_slug is not None and doc["site"] != site_slug):
            raise domain.TicketNotFound(ticket_id)
        domain.check_completable(doc["number"], TicketStatus(doc["status"]))
        now = self.clock()
        completed = new_event(
            TicketCompleted(
                **_facts(doc),
                counter=doc["counter"],
                called_at=from_instant(doc["called_at"]),
                completed_at=now,
            ),
            site=doc["site"],
            source=SOURCE,
            at=now,
        )
        updated = await self.store.transition(
            ticket_id,
            from_status=TicketStatus.CALLED,
            set_fields={"status": TicketStatus.COMPLETED.value, "completed_at": instant(now)},
            events=[completed],
        )
        if updated is None:
            current = await self.store.get(ticket_id)
            assert current is not None
            domain.check_completable(current["number"], TicketStatus(current["status"]))
            raise domain.TicketNotFound(ticket_id)  # pragma: no cover - status changed twice
        self.wake()
        return ticket_view(updated)

    async def ticket(self, ticket_id: str) -> TicketView:
        doc = await self.store.get(ticket_id)
        if doc is None:
            raise domain.TicketNotFound(ticket_id)
        return ticket_view(doc)


def _facts(doc: Document) -> dict[str, Any]:
    """The fields every ticket event repeats, from the stored ticket."""
    return {
        "ticket_id": doc["_id"],
        "request_id": doc["request_id"],
        "session_id": doc["session_id"],
        "service": doc["service"],
        "number": doc["number"],
        "issued_at": from_instant(doc["issued_at"]),
    }
