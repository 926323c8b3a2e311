"""Queue use cases driven by intake's events (issue, check-in, cancel) and the queries that read
the lines: which session runs now, where a ticket stands, and its ETA."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from giliran import telemetry
from giliran.catalogue import Catalogue, SiteDef
from giliran.contracts import (
    Event,
    RequestCancelled,
    RequestCheckedIn,
    RequestSubmitted,
    TicketCancelled,
    TicketIssued,
    TicketStatus,
    TicketView,
    new_event,
    utcnow,
)
from giliran.contracts.subjects import session_of_site, site_of
from giliran.errors import RetryLater, Unprocessable
from giliran.push import Changes
from giliran.store import Document, from_instant, instant
from giliran.telemetry import JOURNEY
from services.queue import calling, domain, eta
from services.queue.calling import TicketAt
from services.queue.issuing import Draft, Issuer
from services.queue.memory import SITE_MAX_AGE, QueueMemory
from services.queue.store import (
    FIRST_OF,
    LINE_NUMBER,
    SessionFlags,
    TicketStore,
    facts_of,
    line_number,
    ticket_at,
    ticket_view,
)

SOURCE = "queue"
# A session counts as running from shortly before it opens until a while after it closes (the
# queue is emptied after the doors close); outside that its waiting tickets are not called.
EARLY = timedelta(hours=1)
LATE = timedelta(hours=3)
# Without a known window (older producers), the session with the latest arrival within this long.
ARRIVAL_FALLBACK = timedelta(hours=12)
SESSION_TTL = 1.0
CACHE_TTL = 2.0
# The running session and a session's flags are kept this long while no other writer is seen at
# the site (ADR 0216): only the queue writes them, this process updates its copies as it writes,
# and another instance's write shows on the bus as an event of the site (its ticket issued,
# a check-in), which cuts what is kept back to SESSION_TTL / CACHE_TTL, as before. The bus watch
# may lose a message: then a copy is stale for this long at most, the bound of a site's memory.
QUIET_TTL = SITE_MAX_AGE
# A line's pace (its latest service times) is read again at most this often: this process adds
# its own completions as it makes them (`served`), so only another instance's wait this long to
# reach an ETA here — the same bound as the rest of a site's memory (ADR 0160). It was read every
# CACHE_TTL: one `find tickets` per line every 2 s, 0.15 per lifecycle at 20/s.
PACE_TTL = 30.0
# A request's tickets refused this often in a row (each time decided again from a fresh read):
# given back to the consumer, which delivers the event again later.
ISSUE_ATTEMPTS = 8
ISSUED_SUFFIX = f".{TicketIssued.entity}.{TicketIssued.event}"


@dataclass
class Queue:
    """The queue's state changes from intake's events and its read side; `changes` tells
    boards and consoles to refresh. (The store wakes the outbox relay after each write.)"""

    store: TicketStore
    catalogue: Catalogue
    default_service: timedelta = timedelta(minutes=8)
    clock: Callable[[], datetime] = utcnow
    changes: Changes = field(default_factory=Changes)
    # Lines, counters and latest calls of each site, in memory (ADR 0160).
    memory: QueueMemory = field(init=False)
    # Writes new requests' tickets, numbered from memory, one insert per batch (ADR 0215).
    issuer: Issuer = field(init=False)
    # The running session per site, re-read every QUIET_TTL, or SESSION_TTL after another
    # writer's event at the site (a new session shows on other instances within that; on this
    # one at once).
    _sessions: dict[str, tuple[float, str | None]] = field(default_factory=dict)
    # Whether a session has appointments or priority tickets: read again as the running
    # session is, with CACHE_TTL for SESSION_TTL.
    _flags: dict[str, tuple[float, SessionFlags]] = field(default_factory=dict)
    # The recent service times of each line (an ETA's pace), read at most every PACE_TTL;
    # this process's own completions are added as they happen, another instance's show
    # within PACE_TTL. (An ETA's capacity comes from the counters in memory, ADR 0160.)
    _paces: dict[tuple[str, str], tuple[float, list[float]]] = field(default_factory=dict)
    _noted: dict[tuple[object, ...], float] = field(default_factory=dict)
    # The session facts being recorded now, shared by the requests that bring the same ones.
    _noting: dict[tuple[object, ...], asyncio.Future[bool]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.memory = QueueMemory(self.store)
        self.issuer = Issuer(self.store)
        # Every write with events refreshes this process's boards as it is made (the caller
        # updates memory before its next await, so the rendering it wakes shows the write); its
        # own events coming back on the bus then refresh nothing (`on_event`).
        self.store.changed = self.changes.bump

    def on_event(self, subject: str, event_id: str | None) -> None:
        """Every ticket or counter event on the bus: another instance's write makes this one
        re-read the site and refreshes the boards. This process's own events do not refresh
        them again: their writes did (`TicketStore.changed`), and the echo made every screen
        render and receive the same board a second time (4.2-4.8 board updates per lifecycle
        at 20/s, 2.1 without)."""
        self.memory.on_event(subject, event_id)
        if event_id is not None and self.store.own_event(event_id):
            return
        self._other_wrote(subject)
        if subject.endswith(ISSUED_SUFFIX):  # its lines' numbers went on (ADR 0215)
            site = site_of(subject)
            if site is not None:
                self.issuer.other_issued(site)
        self.changes.bump_from_subject(subject)

    def _other_wrote(self, subject: str) -> None:
        """Another writer's event: what is kept of the site's sessions is read again soon."""
        site = site_of(subject)
        if site is None:
            return
        moment = time.monotonic()
        cached = self._sessions.get(site)
        if cached is not None:
            self._sessions[site] = (min(cached[0], moment + SESSION_TTL), cached[1])
        for session_id, (expires, flags) in list(self._flags.items()):
            if expires > moment + CACHE_TTL:
                self._flags[session_id] = (moment + CACHE_TTL, flags)

    def site(self, slug: str) -> SiteDef:
        site = self.catalogue.site(slug)
        if site is None:
            raise domain.UnknownSite(slug)
        return site

    def touched(self, site: str) -> None:
        """A counter acted: refresh screens (the store woke the relay for its events)."""
        self.changes.bump(site)

    def served(self, doc: Document) -> None:
        """This process completed a ticket: its service time is the line's latest pace."""
        cached = self._paces.get((doc["session_id"], doc["service"]))
        if cached is None or not doc.get("called_at") or not doc.get("completed_at"):
            return
        took = from_instant(doc["completed_at"]) - from_instant(doc["called_at"])
        cached[1].append(took.total_seconds())
        del cached[1][: -eta.RECENT]

    # --- from intake ---------------------------------------------------------------------------

    async def issue_tickets(self, event: Event[RequestSubmitted]) -> list[TicketView]:
        """One ticket per requested service, numbered per session and line. Idempotent: tickets
        have deterministic ids, so a redelivered request finds its tickets and issues none."""
        issued, _ = await self._issue(event, views=True)
        return issued

    async def on_submitted(self, event: Event[RequestSubmitted]) -> bool:
        """`issue_tickets` for the requests consumer: True when the event had been handled
        before (every ticket it asks for was there already), so the consumer needs no inbox
        (ADR 0192): the tickets are the record, each naming the event that issued it."""
        _, before = await self._issue(event, views=False)
        return before

    async def _issue(
        self, event: Event[RequestSubmitted], *, views: bool
    ) -> tuple[list[TicketView], bool]:
        """Issue the request's tickets; with `views`, the tickets as answered. The consumer
        needs none: `ticket_view` (seven instants parsed) was 1 % of the queue's CPU under
        py-spy at 20/s, a third of it for views nobody read.

        A request is taken as new: its tickets are written without reading whether it had
        some, numbered from memory, in the insert its batch shares (ADR 0215). The store
        refuses that write when it was not new (a redelivery, or another request.submitted
        for the same request) or when another instance took the number: the rest of it is
        then issued the careful way, which reads the request's tickets first."""
        request = event.data
        site = self.catalogue.site(event.site)
        if site is None:
            raise Unprocessable(f"unknown site {event.site!r}")
        unknown = domain.unknown_services(site, request.services)
        if unknown:
            raise Unprocessable(f"site {site.site} does not offer {unknown}")
        now = self.clock()
        await self._note_session(site.site, request, now)
        codes = list(dict.fromkeys(request.services))
        drafts = [
            await self._draft(site, event, code, now, shared=False, first=i == 0)
            for i, code in enumerate(codes)
        ]
        fast = await self.issuer.issue(drafts)
        for doc in fast.docs:
            self.memory.joined(doc)
        if fast.complete:
            self.changes.bump(site.site)
            return ([ticket_view(d) for d in fast.docs] if views else []), False
        issued, before = await self._issue_carefully(site, event, codes, now, views=views)
        self.changes.bump(site.site)
        return issued, before and not fast.docs

    async def _draft(
        self,
        site: SiteDef,
        event: Event[RequestSubmitted],
        code: str,
        now: datetime,
        *,
        shared: bool,
        first: bool,
    ) -> Draft:
        """One ticket of the request, all but its number decided (what it has ahead, its ETA)."""
        request = event.data
        service = site.service(code)
        assert service is not None
        ticket_id = domain.ticket_id_for(request.request_id, code)
        ahead = await self.waiting_ahead(site.site, request.session_id, code)
        quoted = (
            await self._eta(site, request.session_id, code, ahead, now) if request.arrived else None
        )
        line = domain.line_key(request.session_id, service.prefix)
        # Later events about this ticket (an officer's call) continue this request.
        journey = telemetry.journey()

        def make(number: int) -> tuple[Document, Event[Any]]:
            ticket_event = new_event(
                TicketIssued(
                    ticket_id=ticket_id,
                    request_id=request.request_id,
                    session_id=request.session_id,
                    service=code,
                    number=domain.format_number(service.prefix, number),
                    issued_at=now,
                    waiting_ahead=ahead,
                    priority=request.priority,
                    appointment_at=request.appointment_at,
                    arrived=request.arrived,
                    eta=quoted,
                ),
                site=site.site,
                source=SOURCE,
                at=now,
            )
            doc = self._ticket_doc(site, ticket_event.data, request, now, shared=shared)
            doc[JOURNEY] = journey
            if quoted is not None:
                doc["eta"] = instant(quoted)
            # The event that issued it: what the tickets prove each request event was handled
            # once by (tests/e2e/test_chaos.py), with no inbox.
            doc["request_event"] = event.id
            doc[LINE_NUMBER] = line_number(line, number)
            if first:
                doc[FIRST_OF] = request.request_id
            return doc, ticket_event

        return Draft(ticket_id=ticket_id, site=site.site, line=line, make=make)

    async def _issue_carefully(
        self,
        site: SiteDef,
        event: Event[RequestSubmitted],
        codes: list[str],
        now: datetime,
        *,
        views: bool,
    ) -> tuple[list[TicketView], bool]:
        """The request's tickets read first: those it has are answered, its lone ones shared
        before another is written (ADR 0190), and each missing one written alone. A write the
        store refuses (its number another instance's, or the request's tickets changed since
        the read) is decided again from a fresh read."""
        request = event.data
        for _ in range(ISSUE_ATTEMPTS):
            found = await self.store.for_request(request.request_id)
            if any(d.get("site") != site.site for d in found):
                # Request ids are intake's and name one site's citizen: an event naming another
                # site's request is forged or broken, and must not share (or answer with) that
                # site's tickets.
                raise Unprocessable(f"request {request.request_id} is another site's")
            existing = {d["service"]: d for d in found}
            if any(code not in existing for code in codes):
                for doc in found:  # the request gets another ticket (ADR 0190)
                    await self.share(doc["_id"], doc["request_id"], ticket_at(doc))
            issued: list[TicketView] = []
            inserted = False
            refused = False
            for code in codes:
                if code in existing:
                    if views:
                        issued.append(ticket_view(existing[code]))
                    continue
                # Only a request with no ticket yet marks its first (`first_of`).
                first = not found and not inserted
                draft = await self._draft(site, event, code, now, shared=bool(found), first=first)
                written = await self.issuer.issue_one(draft)
                if written is not None:
                    self.memory.joined(written)
                    if views:
                        issued.append(ticket_view(written))
                    inserted = True
                    continue
                # Refused: the ticket is there (a concurrent delivery won), its number is
                # another instance's, or the request got a first ticket meanwhile.
                refused = True
                break
            if refused:
                continue
            # A request submitted while the citizen is already at a booth (a counter walk-up
            # adds a service) joins held.
            # (Only a request that had tickets before can have one at a booth.)
            holder = await self.store.visit_holder(request.request_id) if existing else None
            if holder is not None:
                await self.store.set_held(request.request_id, True, except_ticket=holder)
                self.memory.held(site.site, request.request_id, True, holder)
            return issued, not inserted
        # Never dead-lettered for this (its ticket would be lost): delivered again shortly.
        raise RetryLater(f"request {request.request_id}: its tickets kept being refused", 0.5)

    async def share(self, ticket_id: str, request_id: str, now: TicketAt | None) -> None:
        """A request is getting another ticket: its ticket `ticket_id` (as it is `now`), if it
        was alone in it (called without the request's serving slot, ADR 0190), takes the slot
        from now on: flagged shared while it waits, or, at a counter, given the slot before it
        is flagged (so the new ticket waits for it). Call before the new ticket is written.
        The steps are `calling.sharing`'s; each write is conditional, so a ticket that moved
        meanwhile is read again and decided again (statuses only move on: it ends)."""
        slot_given = False
        while True:
            match calling.sharing(now, slot_given=slot_given):
                case calling.Sharing.NOTHING:
                    return
                case calling.Sharing.FREE_SLOT:
                    await self.store.release_visit(request_id, ticket_id)
                    return
                case calling.Sharing.FLAG:
                    if await self.store.mark_shared(ticket_id, [TicketStatus.WAITING]):
                        break
                case calling.Sharing.SLOT_THEN_FLAG:
                    await self.store.take_visit(request_id, ticket_id, self.clock())
                    slot_given = True
                    if await self.store.mark_shared(ticket_id, sorted(calling.BUSY_STATUSES)):
                        break
            now = await self.store.ticket_state(ticket_id)
        # Its copies in memory (a line head) still say alone: a call from them would fail its
        # conditional write; re-reading the site spares that round.
        assert now is not None
        self.memory.forget(now.site)

    async def waiting_ahead(self, site: str, session_id: str, service: str) -> int:
        """How many arrived tickets wait in the line now (held ones too): what a ticket joining
        it has ahead. From the line in memory (ADR 0160, 0191): exact for this process's own
        writes, another instance's within the bus's latency (or the site's max age)."""
        waiting, _ = await self.memory.waiting(site, session_id, service)
        return waiting

    async def _note_session(self, site: str, request: RequestSubmitted, now: datetime) -> None:
        """Record the session (its window, whether it has appointments); skipped when this
        process recorded the same facts moments ago — a busy Sunday sends hundreds per minute —
        or is recording them now: the requests of one fetched batch are handled at once, and
        each wrote the same facts before the first write returned (0.3 `update sessions` per
        lifecycle at 20/s, each also making the running session be read again). Those wait for
        that write and share its answer, a session of another site included."""
        facts = (
            site,
            request.session_id,
            request.session_opens_at,
            request.appointment_at is not None,
            request.priority is not None,
        )
        windowed = request.session_opens_at is not None
        if windowed and self._noted.get(facts, 0.0) > time.monotonic():
            return
        recording = self._noting.get(facts) if windowed else None
        if recording is None:
            recording = asyncio.ensure_future(self._record_session(site, request, now, facts))
            if windowed:
                self._noting[facts] = recording
                recording.add_done_callback(lambda _: self._noting.pop(facts, None))
        if not await asyncio.shield(recording):
            # Its tickets would join another site's lines, where that site's counters call them.
            raise Unprocessable(f"session {request.session_id!r} belongs to another site")

    async def _record_session(
        self, site: str, request: RequestSubmitted, now: datetime, facts: tuple[object, ...]
    ) -> bool:
        """`_note_session`'s write; False when the session is another site's."""
        # The running session may change with this write, unless it is this one already.
        if self._sessions.get(site, (0.0, None))[1] != request.session_id:
            self._sessions.pop(site, None)
        flagged = request.appointment_at is not None or request.priority is not None
        cached = self._flags.get(request.session_id)
        if flagged and cached is not None:
            known = cached[1]
            self._flags[request.session_id] = (
                cached[0],
                SessionFlags(
                    known.appointments or request.appointment_at is not None,
                    known.priorities or request.priority is not None,
                ),
            )
        if not await self.store.note_session(
            site,
            request.session_id,
            request.session_opens_at,
            request.session_closes_at,
            now if request.arrived else None,
            appointments=request.appointment_at is not None,
            priorities=request.priority is not None,
        ):
            return False
        # A read racing the write above (a board, the metrics) may have cached "no session"
        # just before it: forget it again, or call-next finds nothing for up to SESSION_TTL.
        if self._sessions.get(site, (0.0, None))[1] != request.session_id:
            self._sessions.pop(site, None)
        if flagged and cached is None:
            # A read racing the write above may have cached the session's old flags.
            self._flags.pop(request.session_id, None)
        self._noted[facts] = time.monotonic() + CACHE_TTL
        _forget_expired(self._noted)
        return True

    async def own_session(self, site: str, session_id: str) -> None:
        """Refuse a session named in a command unless it is one of `site`'s: the one recorded
        for the site, or (not seen yet: a counter opened before the first citizen) one shaped
        as the site's own. Never another site's, whatever the path or subject said."""
        recorded = await self.store.session_site(session_id)
        if recorded == site or (recorded is None and session_of_site(site, session_id)):
            return
        raise domain.SessionOfAnotherSite(site, session_id)

    async def session_flags(self, session_id: str) -> SessionFlags:
        """Whether an appointment or a priority ticket was ever issued in the session: until
        one is, call-next need not look for them line by line (ADR 0084). One read, cached."""
        cached = self._flags.get(session_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        found = await self.store.session_flags(session_id)
        self._flags[session_id] = (time.monotonic() + QUIET_TTL, found)
        _forget_expired(self._flags)
        return found

    @staticmethod
    def _ticket_doc(
        site: SiteDef,
        facts: TicketIssued,
        request: RequestSubmitted,
        now: datetime,
        *,
        shared: bool,
    ) -> Document:
        service = site.service(facts.service)
        assert service is not None
        return {
            "_id": facts.ticket_id,
            "site": site.site,
            "session_id": facts.session_id,
            "request_id": facts.request_id,
            "service": facts.service,
            "prefix": service.prefix,
            "number": facts.number,
            "status": TicketStatus.WAITING.value,
            "issued_at": instant(now),
            # Walk-ins queue from issue; a booking joins the line when it checks in.
            "arrived": request.arrived,
            "queued_at": instant(now) if request.arrived else None,
            # A registration that must check in keeps this place in line meanwhile (ADR 0120):
            # when it was made, or the session's opening if it was made before. (An appointment
            # is called at its slot instead: it joins at check-in as before.)
            "place_at": None
            if request.arrived or request.appointment_at is not None
            else instant(max(now, request.session_opens_at or now)),
            "held": False,
            "priority": request.priority.value if request.priority else None,
            "is_priority": request.priority is not None,
            "appointment_at": instant(request.appointment_at) if request.appointment_at else None,
            "recalls": 0,
            # Only a request with several tickets needs holds kept on its other tickets, and
            # only its tickets are called under the request's serving slot (ADR 0190).
            "multi": len(request.services) > 1 or shared,
            "channel": request.channel.value,
            # Masked only (************1234): what the officer checks against the card.
            "nik_masked": request.citizen.nik_masked,
        }

    async def check_in(self, event: Event[RequestCheckedIn]) -> bool:
        """A booking's holder arrived: its tickets join their lines from the check-in time.
        Idempotent: a ticket already in line keeps its place. True when none had to join (the
        event was handled before)."""
        data = event.data
        docs = await self.store.for_request(data.request_id)
        if not docs:
            # The request's own event has not been handled yet (events of one request are
            # handled in order per consumer, so this means it is still in flight): try again.
            raise Unprocessable(f"no tickets for request {data.request_id} yet")
        # It joins at the place it kept (never later than its check-in): the wait it is
        # credited with is at most the catalogue's grace, since it lapses after that.
        joined = False
        for doc in docs:
            if doc.get("arrived", True):
                continue
            at = data.checked_in_at
            if doc.get("place_at"):
                at = min(at, from_instant(doc["place_at"]))
            await self.store.tickets.update_one(
                {"_id": doc["_id"], "arrived": False},
                {"$set": {"arrived": True, "queued_at": instant(at)}},
            )
            self.memory.joined({**doc, "arrived": True, "queued_at": instant(at)})
            joined = True
        self._sessions.pop(event.site, None)
        await self.store.note_session(event.site, data.session_id, None, None, data.checked_in_at)
        self.touched(event.site)
        return not joined

    async def cancel_request(self, event: Event[RequestCancelled]) -> bool:
        """The citizen or an admin (session cancelled) withdrew the request: every ticket still
        open is cancelled with the reason; finished ones are history and stay as they are.
        True when none was left to cancel (the event was handled before, or came too late)."""
        now = self.clock()
        cancelled_any = False
        for doc in await self.store.for_request(event.data.request_id):
            status = TicketStatus(doc["status"])
            if status in domain.TERMINAL:
                continue
            cancelled = new_event(
                TicketCancelled(
                    **facts_of(doc), reason=event.data.reason, cancelled_at=event.data.cancelled_at
                ),
                site=doc["site"],
                source=SOURCE,
                at=now,
            )
            moved = await self.store.transition(
                doc["_id"],
                from_status=status,
                set_fields={"status": "cancelled", "cancelled_at": instant(now), "held": False},
                events=[cancelled],
            )
            if moved is not None:
                self.memory.left(doc)
                self.memory.moved_to(moved)
                cancelled_any = True
            await self.store.release_visit(doc["request_id"], doc["_id"])
        self.touched(event.site)
        return not cancelled_any

    # --- reads ---------------------------------------------------------------------------------

    async def current_session(self, site: str) -> str | None:
        """The session counters at `site` serve now: the latest whose window (widened) holds
        now; else, for producers that send no window, the one with the latest arrival today."""
        cached = self._sessions.get(site)
        moment = time.monotonic()
        if cached is not None and cached[0] > moment:
            return cached[1]
        found = await self._current_session(site)
        self._sessions[site] = (moment + QUIET_TTL, found)
        return found

    async def _current_session(self, site: str) -> str | None:
        now = self.clock()
        sessions = await self.store.sessions_of(site)
        running = [
            s
            for s in sessions
            if s.get("opens_at")
            and from_instant(s["opens_at"]) - EARLY <= now <= from_instant(s["closes_at"]) + LATE
        ]
        if running:
            return str(max(running, key=lambda s: (s["opens_at"], s["_id"]))["_id"])
        recent = [
            s
            for s in sessions
            if not s.get("opens_at")
            and s.get("last_arrival")
            and now - from_instant(s["last_arrival"]) <= ARRIVAL_FALLBACK
        ]
        if recent:
            return str(max(recent, key=lambda s: (s["last_arrival"], s["_id"]))["_id"])
        return None

    async def _capacity(self, site: str, session_id: str, service: str) -> float:
        open_counters = [
            c["services"]
            for c in (await self.memory.counters(site)).values()
            if c["status"] == "open" and c.get("session_id") in (session_id, None)
        ]
        return eta.line_capacity(open_counters, service)

    async def _eta(
        self, site: SiteDef, session_id: str, service: str, ahead: int, now: datetime
    ) -> datetime | None:
        key = (session_id, service)
        capacity = await self._capacity(site.site, session_id, service)
        cached = self._paces.get(key)
        if cached is not None and cached[0] > time.monotonic():
            paces = cached[1]
        else:
            paces = await self.store.service_seconds(session_id, service, eta.RECENT)
            self._paces[key] = (time.monotonic() + PACE_TTL, paces)
            _forget_expired(self._paces)
        return eta.estimate(
            position=ahead,
            capacity=capacity,
            service_seconds=paces,
            default=self.default_service,
            now=now,
        )

    async def ticket(self, ticket_id: str) -> TicketView:
        doc = await self.store.get(ticket_id)
        if doc is None:
            raise domain.TicketNotFound(ticket_id)
        return await self.with_place(doc)

    async def with_place(self, doc: Document) -> TicketView:
        """A waiting ticket's position and a fresh ETA (recorded as quoted)."""
        if doc["status"] != "waiting" or not doc.get("arrived", True):
            return ticket_view(doc)
        now = self.clock()
        ahead = await self.store.ahead_of(doc)
        site = self.site(doc["site"])
        quoted = await self._eta(site, doc["session_id"], doc["service"], ahead, now)
        if quoted is not None:
            await self.store.record_quote(doc["_id"], now, quoted, ahead)
        return ticket_view(doc, position=ahead, eta=quoted)

    async def request_status(self, site: str, request_id: str) -> list[TicketView]:
        docs = [d for d in await self.store.for_request(request_id) if d["site"] == site]
        return [await self.with_place(d) for d in docs]


def _forget_expired(cache: dict[Any, Any], limit: int = 256) -> None:
    """Keep a cache small over months of sessions: past `limit` entries, drop expired ones
    (each value is a tuple starting with its expiry, or the expiry itself)."""
    if len(cache) <= limit:
        return
    now = time.monotonic()
    for key in [k for k, v in cache.items() if (v[0] if isinstance(v, tuple) else v) <= now]:
        del cache[key]
