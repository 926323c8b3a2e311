"""Counter actions: open/pause/close a counter, call the next or a given ticket, recall, start,
complete, no-show, re-check-in, transfer and cancel. One code path for HTTP and NATS commands."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from giliran import telemetry
from giliran.catalogue import SiteDef
from giliran.contracts import (
    CounterClosed,
    CounterOpened,
    CounterView,
    EventData,
    Outcome,
    TicketCalled,
    TicketCancelled,
    TicketCompleted,
    TicketIssued,
    TicketNoShow,
    TicketRecalled,
    TicketStarted,
    TicketStatus,
    TicketTransferred,
    TicketView,
    new_event,
)
from giliran.contracts.envelope import Event
from giliran.store import Document, from_instant, instant
from giliran.telemetry import JOURNEY
from services.queue import calling, domain, rules
from services.queue.calling import CounterState
from services.queue.handlers import SOURCE, Queue
from services.queue.memory import QueueMemory
from services.queue.store import (
    TicketStore,
    counter_key,
    counter_state,
    counter_view,
    facts_of,
    ticket_at,
    ticket_view,
    typed_ticket,
)

# Lost races before call-next gives up for this click (each lost race is another counter's
# progress, so this is only reached under extreme contention; the officer clicks again).
MAX_ROUNDS = 8
# Candidates looked at again from memory after a lost race, at most (each is another counter's
# progress, and costs no store read).
MAX_ATTEMPTS = 64
CLAIM_SETTLE_SECONDS = 0.005


class _Moved:
    """The counter changed under a call (another instance acted at it): look again."""


MOVED = _Moved()


@dataclass(frozen=True)
class DeskPolicy:
    call: rules.CallPolicy = field(default_factory=rules.CallPolicy)
    no_show_after_recalls: int = 2
    recheck_grace: timedelta = timedelta(minutes=30)
    recheck_penalty: timedelta = timedelta(minutes=15)


@dataclass
class Desk:
    queue: Queue
    policy: DeskPolicy = DeskPolicy()
    # One action at a time per counter in this process: a double-click cannot call two tickets.
    _locks: dict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))

    @property
    def store(self) -> TicketStore:
        return self.queue.store

    def _event(
        self, site: str, data: EventData, now: datetime, about: Document | None = None
    ) -> Event[Any]:
        """An event of this desk; one `about` a ticket continues the citizen's request (its
        correlation id and trace, kept on the ticket since it was issued)."""
        with telemetry.resumed((about or {}).get(JOURNEY), data.type_name()):
            return new_event(data, site=site, source=SOURCE, at=now)

    # --- counters ------------------------------------------------------------------------------

    async def counter(self, site_slug: str, counter_id: str) -> CounterView:
        site = self.queue.site(site_slug)
        counter = domain.counter_of(site, counter_id)
        doc = await self.memory.counter(site.site, counter.id)
        current = await self.store.at_counter(site.site, counter.id)
        if doc is None:
            return CounterView(counter=counter.id, status="closed", services=counter.services)
        return counter_view(doc, current["_id"] if current else None)

    async def open(
        self,
        site_slug: str,
        counter_id: str,
        services: Sequence[str] | None = None,
        session_id: str | None = None,
    ) -> CounterView:
        """Open (or resume) a counter for a session, serving `services` in the given order
        (default: its catalogue services). Without a session: the one running now."""
        site = self.queue.site(site_slug)
        counter = domain.counter_of(site, counter_id)
        if services is not None:
            unknown = domain.unknown_services(site, services)
            if unknown:
                raise domain.UnknownService(site.site, unknown)
        if session_id:
            await self.queue.own_session(site.site, session_id)
        async with self._locks[f"{site.site}:{counter.id}"]:
            doc = await self._open(site, counter.id, services, session_id, pinned=bool(session_id))
        self.queue.touched(site.site)
        return counter_view(doc)

    async def _open(
        self,
        site: SiteDef,
        counter_id: str,
        services: Sequence[str] | None,
        session_id: str | None,
        *,
        pinned: bool,
        known: Document | None = None,
    ) -> Document:
        # Before the first citizen of the day arrives no session is known yet: the counter opens
        # anyway and binds to the session at its first call.
        session = session_id or await self.queue.current_session(site.site)
        catalogue_services = domain.counter_of(site, counter_id).services
        while True:
            doc, known = known or await self.memory.counter(site.site, counter_id), None
            chosen = list(services or (doc["services"] if doc else catalogue_services))
            if (
                doc is not None
                and doc["status"] == "open"
                and doc.get("session_id") == session
                and doc["services"] == chosen
            ):
                return doc
            now = self.queue.clock()
            events: list[Event[Any]] = []
            if (
                doc is not None
                and doc["status"] == "open"
                and doc.get("session_id") not in (None, session)
            ):
                events.append(
                    self._event(
                        site.site,
                        CounterClosed(counter=counter_id, session_id=doc["session_id"], at=now),
                        now,
                    )
                )
            if session is not None:  # announced once it is bound to a session
                events.append(
                    self._event(
                        site.site,
                        CounterOpened(
                            counter=counter_id, session_id=session, services=chosen, at=now
                        ),
                        now,
                    )
                )
            fields: Document = {
                "status": "open",
                "session_id": session,
                "pinned": pinned,
                "services": chosen,
                "opened_at": instant(now),
            }
            saved = await self.store.save_counter(
                site.site, counter_id, fields, events, doc["revision"] if doc else None
            )
            if saved is not None:
                self.memory.counter_saved(site.site, saved)
                return saved
            # another instance changed the counter meanwhile: look again
            self.memory.counter_stale(site.site)

    async def pause(self, site_slug: str, counter_id: str) -> CounterView:
        return await self._close(site_slug, counter_id, paused=True)

    async def close(self, site_slug: str, counter_id: str) -> CounterView:
        return await self._close(site_slug, counter_id, paused=False)

    async def _close(self, site_slug: str, counter_id: str, *, paused: bool) -> CounterView:
        site = self.queue.site(site_slug)
        counter = domain.counter_of(site, counter_id)
        status = "paused" if paused else "closed"
        async with self._locks[f"{site.site}:{counter.id}"]:
            while True:
                doc = await self.memory.counter(site.site, counter.id)
                if doc is None or doc["status"] == status:
                    return await self.counter(site.site, counter.id)
                now = self.queue.clock()
                events = (
                    [
                        self._event(
                            site.site,
                            CounterClosed(
                                counter=counter.id,
                                session_id=doc["session_id"],
                                at=now,
                                paused=paused,
                            ),
                            now,
                        )
                    ]
                    if doc.get("session_id")
                    else []  # never announced as opened: nothing to announce
                )
                saved = await self.store.save_counter(
                    site.site, counter.id, {"status": status}, events, doc["revision"]
                )
                if saved is not None:
                    self.memory.counter_saved(site.site, saved)
                    break
                self.memory.counter_stale(site.site)
        self.queue.touched(site.site)
        return counter_view(saved)

    # --- calling -------------------------------------------------------------------------------

    async def call_next(self, site_slug: str, counter_id: str) -> TicketView | None:
        """The ticket the call rules choose for this counter, claimed atomically; None when
        nothing is callable. Opens (or resumes) the counter for the running session."""
        site = self.queue.site(site_slug)
        counter = domain.counter_of(site, counter_id)
        # The lock only saves this process lost compare-and-sets on a double click; between
        # instances the counter's revision decides (ADR 0161).
        async with self._locks[f"{site.site}:{counter.id}"]:
            for _ in range(MAX_ROUNDS):
                doc = await self.memory.counter(site.site, counter.id)
                busy = await self._busy(site, counter.id)
                if busy is not None:
                    raise domain.CounterBusy(counter.id, busy["number"])
                session = await self._serving_session(site, counter.id, doc)
                if session is None:
                    return None
                state = await self._open(
                    site,
                    counter.id,
                    None,
                    session,
                    pinned=bool(doc and doc.get("pinned")),
                    known=doc,
                )
                called = await self._call_chosen(site, counter_state(state))
                if called is not MOVED:
                    break
                # The seat was taken and freed again meanwhile (another instance called and
                # completed at this counter): look again.
                self.memory.counter_stale(site.site)
            else:
                return None
        self.queue.touched(site.site)
        return called if isinstance(called, TicketView) else None

    @property
    def memory(self) -> QueueMemory:
        return self.queue.memory

    async def _busy(self, site: SiteDef, counter: str) -> Document | None:
        """The ticket the counter is calling or serving, if any: the ticket called there last,
        if it is still seated there (ADR 0203). From memory when it says the counter is free:
        a stale "free" only costs the call's write, which the seat refuses; a ticket memory
        says is seated there is checked against the store (another instance may have
        completed it), only then."""
        last = await self._last_call(site, counter)
        if calling.counter_now(site.site, counter, ticket_at(last)) != calling.CounterNow.BUSY:
            return None
        assert last is not None
        now = await self.store.get(last["_id"])
        if now is not None:
            self.memory.keep_last_call(site.site, counter, now, self.memory.generation(site.site))
        if calling.counter_now(site.site, counter, ticket_at(now)) == calling.CounterNow.BUSY:
            return now
        return None

    async def _last_call(self, site: SiteDef, counter: str) -> Document | None:
        """The ticket called at `counter` last (ADR 0203): from memory, else one read along an
        index, kept unless another instance's write was seen while it was read."""
        known, last = self.memory.last_call(site.site, counter)
        if known:
            return last
        generation = self.memory.generation(site.site)
        last = await self.store.last_call(site.site, counter)
        self.memory.keep_last_call(site.site, counter, last, generation)
        return last

    async def _ratio(self, site: SiteDef, counter: str, session_id: str) -> rules.CounterMemory:
        """The counter's memory for the priority ratio: normal calls since its last priority
        call, as its last call in this session left it (none yet: 0, as a counter opened for
        a new session starts). Kept on each called ticket (ADR 0203): the counter's calls follow
        each other, so the last one's is the counter's."""
        last = await self._last_call(site, counter)
        if last is None or last.get("session_id") != session_id:
            return rules.CounterMemory()
        return rules.CounterMemory(int(last.get("counter_ratio", 0)))

    async def _serving_session(
        self, site: SiteDef, counter_id: str, doc: Document | None
    ) -> str | None:
        if doc is not None and doc.get("pinned") and doc["status"] == "open":
            return str(doc["session_id"])
        return await self.queue.current_session(site.site)

    async def _candidates(
        self,
        site: SiteDef,
        session_id: str,
        services: Sequence[str],
        now: datetime,
        *,
        want_priority: bool,
        want_appointments: bool,
    ) -> list[Document]:
        """What the call rules choose from: per line its oldest callable tickets (and its oldest
        priority ones when due), from the heads of the lines in memory; a line whose head
        cannot tell is read from the store, and so are the appointments due now."""
        found: dict[str, Document] = {}
        unknown: list[str] = []
        for service in services:
            for priority, limit in ((False, 4), (True, 2)):
                if priority and not want_priority:
                    continue
                head = await self.memory.head(site.site, session_id, service, priority, need=limit)
                docs = head.callable(limit)
                if docs is None:
                    unknown.append(service)
                    continue
                found |= {d["_id"]: d for d in docs}
        if unknown or want_appointments:
            read = await self.store.callable_candidates(
                site.site,
                session_id,
                sorted(set(unknown)) or list(services),
                now,
                self.policy.call.appointment_grace,
                want_priority=want_priority,
                want_appointments=want_appointments,
            )
            found |= {d["_id"]: d for d in read}
        return [
            d
            for d in found.values()
            if d.get("site") == site.site and d["_id"] not in self.memory.claiming
        ]

    async def _call_chosen(self, site: SiteDef, state: CounterState) -> TicketView | _Moved | None:
        services = state.services
        assert state.session_id is not None  # opened for the running session just before
        memory = await self._ratio(site, state.counter, state.session_id)
        # Priority tickets only matter when one is due by the ratio (or nothing else waits);
        # aged ones are found among the oldest anyway. Appointments only if the session has any.
        ratio_due = memory.normal_since_priority >= self.policy.call.normal_per_priority
        # A session that never had a priority ticket has none to look for (ADR 0084): without
        # this every call after the third read each line twice.
        assert state.session_id is not None  # opened for the running session just before
        session_id = state.session_id
        flags = await self.queue.session_flags(session_id)
        ratio_due = ratio_due and flags.priorities
        appointments = flags.appointments
        confirmed = False  # "nothing to call" is only said after the store confirms it
        began = time.monotonic()  # a line read from the store since confirms it as well
        reads = 0  # candidates read again from the store (memory re-reads cost nothing)
        elsewhere: set[str] = set()  # citizens found at another counter during this call
        for _ in range(MAX_ATTEMPTS):
            now = self.queue.clock()
            docs = await self._candidates(
                site,
                session_id,
                services,
                now,
                want_priority=ratio_due,
                want_appointments=appointments,
            )
            by_id = {d["_id"]: d for d in docs}
            waiting = [_waiting(d) for d in docs]
            lost_race = False
            while True:
                choice = rules.choose(waiting, services, elsewhere, memory, now, self.policy.call)
                if choice is None:
                    if lost_race:
                        break  # look again: the lines moved under us
                    if not docs and self.memory.claiming:
                        # What waits is being called by this process's other counters: look
                        # again once their calls are decided (one may fail and leave it).
                        await asyncio.sleep(CLAIM_SETTLE_SECONDS)
                        break
                    if not confirmed and not docs:
                        # Memory may lag behind another instance: ask the store (these lines)
                        # before telling an officer nothing waits.
                        self.memory.read_lines_again(site.site, session_id, services, began)
                        confirmed = True
                        break
                    return None
                doc = by_id[choice.ticket_id]
                if doc["_id"] in self.memory.claiming:  # another counter here took it meanwhile
                    waiting = [w for w in waiting if w.ticket_id != doc["_id"]]
                    lost_race = True
                    continue
                self.memory.claiming.add(doc["_id"])
                try:
                    result, called = await self._claim(
                        site, state.counter, doc, memory.after(choice)
                    )
                finally:
                    self.memory.claiming.discard(doc["_id"])
                if result == "busy":
                    await self._refuse_busy(site, state.counter)
                    return MOVED  # (freed meanwhile: look again)
                if called is not None:
                    return ticket_view(called)
                if result == "elsewhere":
                    elsewhere.add(doc["request_id"])
                    continue
                lost_race = True
                if self.memory.waits(site.site, doc["_id"]):
                    # Another instance called it (a counter of this process would have taken
                    # it out of memory): read the site again.
                    self.memory.forget(site.site)
                    reads += 1
                    if reads >= MAX_ROUNDS:
                        return None
                    break
                # Taken by another counter of this process: memory already knows, look again.
                break
        return None

    async def _claim(
        self, site: SiteDef, counter: str, doc: Document, after: rules.CounterMemory
    ) -> tuple[str, Document | None]:
        """Call one waiting ticket at this counter: take its citizen's serving slot if its
        request has other tickets (ADR 0190), then call the ticket into the counter's seat in
        one conditional write (ADR 0203), with the counter's ratio memory `after` this call.
        ("called", ticket), ("elsewhere", None) when the citizen is at another counter,
        ("taken", None) when another counter won the ticket, ("busy", None) when the counter
        seats another ticket (another instance called there)."""
        took = await self._take_slot(doc)
        if took is None:
            return "elsewhere", None
        result, called = await self._call_reserved(site, counter, doc, after)
        if result == "busy" and took:  # a slot another call of this ticket holds is its own
            await self.store.release_visit(doc["request_id"], doc["_id"])
        return result, called

    async def _refuse_busy(self, site: SiteDef, counter: str) -> None:
        """The counter's seat was another ticket's: 409 with that ticket's number, or back to
        the caller if it was freed meanwhile."""
        seated = await self.store.at_counter(site.site, counter)
        if seated is not None:
            self.memory.keep_last_call(
                site.site, counter, seated, self.memory.generation(site.site)
            )
            raise domain.CounterBusy(counter, seated["number"])

    async def _call_reserved(
        self, site: SiteDef, counter: str, doc: Document, after: rules.CounterMemory
    ) -> tuple[str, Document | None]:
        """`_claim_ticket`, and once more under the request's serving slot if the ticket turned
        out shared since `doc` was read (ADR 0190: its request got another ticket meanwhile)."""
        result, found = await self._claim_ticket(site, counter, doc, after)
        if result != "changed":
            return result, found
        assert found is not None  # the ticket as it is now, still waiting
        took = await self._take_slot(found)
        if took is None:
            return "elsewhere", None
        result, found = await self._claim_ticket(site, counter, found, after)
        if result == "busy" and took:
            await self.store.release_visit(doc["request_id"], doc["_id"])
        return ("taken", None) if result == "changed" else (result, found)

    async def _take_slot(self, doc: Document) -> bool | None:
        """The serving slot of `doc`'s request, when its calls need one (ADR 0190): True when
        taken now, False when not needed or already the ticket's (another call of it is in
        flight), None when another ticket of the request has it."""
        if not calling.needs_slot(typed_ticket(doc)):
            return False
        # The claim is dated when it is taken, not when this call began: a slow call (lock
        # waits, several candidates tried) must not take a slot that already looks abandoned to
        # _heal_visit, which another counter could free while this call is still completing.
        took = await self.store.take_visit(doc["request_id"], doc["_id"], self.queue.clock())
        if took is None:
            if not await self._heal_visit(doc["request_id"]):
                return None
            took = await self.store.take_visit(doc["request_id"], doc["_id"], self.queue.clock())
        return took

    async def _claim_ticket(
        self, site: SiteDef, counter: str, doc: Document, after: rules.CounterMemory
    ) -> tuple[str, Document | None]:
        """Call a ticket the counter points at (its serving slot taken when it needs one):
        ("called", ticket) when it is called at `counter` now, by this call or by another
        instance completing the same reservation; ("taken", None) when another counter has it;
        ("changed", ticket as it is now) when it still waits but changed since `doc` was read
        (ADR 0190)."""
        # The call happens now, after the slot is ours: so a citizen's calls and completions
        # are ordered in time as they are in fact (the slot is freed after a completion).
        now = self.queue.clock()
        called = self._event(
            site.site,
            TicketCalled(
                **facts_of(doc),
                counter=counter,
                called_at=now,
                queued_at=from_instant(doc["queued_at"]) if doc.get("queued_at") else None,
                priority=doc.get("priority"),
            ),
            now,
            about=doc,
        )
        alone = not calling.needs_slot(typed_ticket(doc))
        moved = await self.store.transition(
            doc["_id"],
            from_status=TicketStatus.WAITING,
            set_fields={
                "status": "called",
                "counter": counter,
                "called_at": instant(now),
                "last_call_at": instant(now),
                "held": False,
                # The counter's ratio memory after this call: the next call here reads it
                # from this ticket (ADR 0203).
                "counter_ratio": after.normal_since_priority,
            },
            events=[called],
            # Called without the slot only while it is still alone in its request: should its
            # request have got another ticket since `doc` was read, this write fails.
            extra_match={"multi": False} if alone else None,
            # Into the counter's seat: should another ticket be seated there (another instance
            # called at this counter meanwhile), this write fails (ADR 0203).
            seat=counter_key(site.site, counter),
        )
        if moved is None:
            now_doc = await self.store.get(doc["_id"])
            match calling.after_lost_call(counter, ticket_at(now_doc), called_alone=alone):
                case calling.LostCall.CALLED_HERE:
                    assert now_doc is not None
                    return "called", now_doc
                case calling.LostCall.GONE if not alone:
                    # (A lone ticket's call took no slot: nothing to free, ADR 0190.)
                    await self.store.release_visit(doc["request_id"], doc["_id"])
                case calling.LostCall.CHANGED:
                    # (Only a call made without the slot can find it so: nothing to free.)
                    return "changed", now_doc
                case calling.LostCall.SEAT_TAKEN:
                    return "busy", None
            return "taken", None
        self.memory.left(doc)
        self.memory.moved_to(moved)
        if not alone:
            await self.store.set_held(doc["request_id"], True, except_ticket=doc["_id"])
            self.memory.held(site.site, doc["request_id"], True, doc["_id"])
        return "called", moved

    async def _heal_visit(self, request_id: str) -> bool:
        """Free a serving slot left by a crash (its ticket is no longer being served); True if
        the slot is free now."""
        holder = await self.store.visit_holder(request_id)
        if holder is None:
            return True
        doc = await self.store.get(holder)
        if doc is not None and TicketStatus(doc["status"]) in domain.BEING_SERVED:
            return False
        if doc is not None and doc["status"] == "waiting":
            # Claimed, then the process died before the ticket moved: only free it once the
            # claim is old enough that no live call can still be completing it.
            visit = await self.store.visits.find_one({"_id": request_id})
            since = from_instant(visit["since"]) if visit and visit.get("since") else None
            if since is not None and self.queue.clock() - since < timedelta(seconds=10):
                return False
        await self.store.release_visit(request_id, holder)
        return True

    async def heal(self) -> None:
        await self.repair()

    async def repair(self) -> int:
        """Periodic repair after crashes: free stale serving slots and un-hold tickets whose
        citizen is no longer at any counter. Returns how many requests it repaired."""
        repaired = 0
        for visit in await self.store.stale_visits():
            if visit.get("ticket_id") and await self._heal_visit(visit["_id"]):
                await self.store.set_held(visit["_id"], False)
                repaired += 1
        # (A counter's pointer is written before its ticket is called, ADR 0161: a crash
        # between the two leaves a reserved waiting ticket, which the counter's next action
        # calls; there is no pointer to repair any more.)
        for doc in await self.store.held_tickets():
            if await self.store.visit_holder(doc["request_id"]) is None:
                await self.store.set_held(doc["request_id"], False)
                repaired += 1
        if repaired:
            for site in self.queue.catalogue.sites:
                self.queue.changes.bump(site)
        return repaired

    async def call(self, site_slug: str, counter_id: str, ticket_id: str) -> TicketView:
        """Call a given waiting ticket of this counter's lines (the officer picked it)."""
        site = self.queue.site(site_slug)
        counter = domain.counter_of(site, counter_id)
        async with self._locks[f"{site.site}:{counter.id}"]:
            for _ in range(MAX_ROUNDS):
                known = await self.memory.counter(site.site, counter.id)
                busy = await self._busy(site, counter.id)
                if busy is not None:
                    raise domain.CounterBusy(counter.id, busy["number"])
                doc = await self._ticket(site, ticket_id)
                domain.check_action("call", doc["number"], TicketStatus(doc["status"]))
                state = await self._open(
                    site, counter.id, None, doc["session_id"], pinned=False, known=known
                )
                if doc["service"] not in counter_state(state).services:
                    raise domain.NotThisCounter(doc["number"], counter.id)
                if not doc.get("arrived", True):
                    raise domain.NotCheckedIn(doc["number"])
                assert state.get("session_id") is not None
                ratio = await self._ratio(site, counter.id, str(state["session_id"]))
                result, _ = await self._claim(site, counter.id, doc, ratio.after(_waiting(doc)))
                if result == "busy":
                    await self._refuse_busy(site, counter.id)
                    self.memory.counter_stale(site.site)  # freed meanwhile: look again
                    continue
                if result == "elsewhere":
                    raise domain.CitizenElsewhere(doc["number"])
                if result == "taken":
                    current = await self._ticket(site, ticket_id)
                    domain.check_action("call", current["number"], TicketStatus(current["status"]))
                break
            else:
                raise domain.CounterBusy(counter.id, "-")
        self.queue.touched(site.site)
        return await self.queue.ticket(ticket_id)

    # --- acting on the ticket at the counter -----------------------------------------------

    async def _ticket(self, site: SiteDef, ticket_id: str) -> Document:
        doc = await self.store.get(ticket_id)
        if doc is None or doc["site"] != site.site:
            raise domain.TicketNotFound(ticket_id)
        return doc

    async def _at_counter(
        self, site_slug: str, counter: str | None, ticket_id: str
    ) -> tuple[SiteDef, Document, datetime]:
        """The site, the ticket (which must belong to `counter` when one is named) and now:
        what every action on a ticket at a counter starts from."""
        site = self.queue.site(site_slug)
        doc = await self._ticket(site, ticket_id)
        self._mine(doc, counter)
        return site, doc, self.queue.clock()

    def _mine(self, doc: Document, counter: str | None) -> None:
        if counter is not None and doc.get("counter") not in (None, counter):
            raise domain.NotThisCounter(doc["number"], counter)

    async def _move(
        self,
        site: SiteDef,
        action: domain.Action,
        doc: Document,
        set_fields: Document,
        event: EventData,
        now: datetime,
        *,
        inc: Document | None = None,
        release: bool = False,
    ) -> Document:
        """Apply a transition that the ticket's status allows, with its event; a 409 with the
        reason when someone else moved the ticket first."""
        status = TicketStatus(doc["status"])
        domain.check_action(action, doc["number"], status)
        moved = await self.store.transition(
            doc["_id"],
            from_status=status,
            set_fields=set_fields,
            events=[self._event(site.site, event, now, about=doc)],
            inc=inc,
        )
        if moved is None:
            current = await self._ticket(site, doc["_id"])
            domain.check_action(action, current["number"], TicketStatus(current["status"]))
            raise domain.IllegalTransition(action, doc["number"], TicketStatus(current["status"]))
        self.memory.left(doc)
        self.memory.moved_to(moved)
        # A ticket alone in its request took no serving slot and holds no other ticket
        # (ADR 0190). Read from the ticket as this write left it: a request that got another
        # ticket meanwhile flagged it shared before this write, or frees the slot itself after.
        if release and calling.needs_slot(typed_ticket(moved)):
            await self.store.release_visit(doc["request_id"], doc["_id"])
            await self.store.set_held(doc["request_id"], False)
            self.memory.held(site.site, doc["request_id"], False, None)
        self.queue.touched(site.site)
        return moved

    async def recall(self, site_slug: str, counter: str | None, ticket_id: str) -> TicketView:
        """Call the same ticket again (the citizen did not come); counted, and announced again."""
        site, doc, now = await self._at_counter(site_slug, counter, ticket_id)
        moved = await self._move(
            site,
            "recall",
            doc,
            {"last_call_at": instant(now)},
            TicketRecalled(**facts_of(doc), counter=doc.get("counter") or "-", recalled_at=now),
            now,
            inc={"recalls": 1},
        )
        return ticket_view(moved)

    async def start(self, site_slug: str, counter: str | None, ticket_id: str) -> TicketView:
        site, doc, now = await self._at_counter(site_slug, counter, ticket_id)
        moved = await self._move(
            site,
            "start",
            doc,
            {"status": "serving", "started_at": instant(now)},
            TicketStarted(
                **facts_of(doc),
                counter=doc.get("counter") or "-",
                called_at=from_instant(doc.get("called_at") or now),
                started_at=now,
            ),
            now,
        )
        return ticket_view(moved)

    async def complete(
        self,
        site_slug: str | None,
        ticket_id: str,
        counter: str | None = None,
        outcome: Outcome = Outcome.SERVED,
    ) -> TicketView:
        # The ticket as this process last wrote it, if it did: what a completion reads of it
        # (number, counter, call time) no longer changes once it is called. Should another
        # instance have moved it since, the conditional write fails and it is read again.
        remembered = self.memory.ticket(ticket_id)
        if remembered is not None:
            try:
                return await self._complete(site_slug, remembered, counter, outcome)
            except domain.IllegalTransition:
                pass
        doc = await self.store.get(ticket_id)
        if doc is None:
            raise domain.TicketNotFound(ticket_id)
        return await self._complete(site_slug, doc, counter, outcome)

    async def _complete(
        self, site_slug: str | None, doc: Document, counter: str | None, outcome: Outcome
    ) -> TicketView:
        if site_slug is not None and doc["site"] != site_slug:
            raise domain.TicketNotFound(doc["_id"])
        site = self.queue.site(doc["site"])
        self._mine(doc, counter)
        # Checked before the event is built: only a called or served ticket has a counter.
        domain.check_action("complete", doc["number"], TicketStatus(doc["status"]))
        now = self.queue.clock()
        moved = await self._move(
            site,
            "complete",
            doc,
            {"status": "completed", "completed_at": instant(now), "outcome": outcome.value},
            TicketCompleted(
                **facts_of(doc),
                counter=doc["counter"],
                called_at=from_instant(doc["called_at"]),
                completed_at=now,
                outcome=outcome,
            ),
            now,
            release=True,
        )
        self.queue.served(moved)
        return ticket_view(moved)

    async def no_show(self, site_slug: str, counter: str | None, ticket_id: str) -> TicketView:
        """The citizen did not come after the required recalls: their place is given up (they
        may re-check-in within the grace period)."""
        site, doc, now = await self._at_counter(site_slug, counter, ticket_id)
        domain.check_action("no_show", doc["number"], TicketStatus(doc["status"]))
        recalls = int(doc.get("recalls", 0))
        if recalls < self.policy.no_show_after_recalls:
            raise domain.RecallsNeeded(doc["number"], self.policy.no_show_after_recalls, recalls)
        moved = await self._move(
            site,
            "no_show",
            doc,
            {"status": "no_show", "no_show_at": instant(now)},
            TicketNoShow(**facts_of(doc), counter=doc["counter"], marked_at=now, recalls=recalls),
            now,
            release=True,
        )
        return ticket_view(moved)

    async def recheck_in(self, site_slug: str, ticket_id: str) -> TicketView:
        """A no-show who comes back within the grace period returns to the line, with the same
        number, as if they had arrived `recheck_penalty` later (never later than now)."""
        site = self.queue.site(site_slug)
        doc = await self._ticket(site, ticket_id)
        new_id = domain.rechecked_id(ticket_id)
        again = await self.store.get(new_id)
        if again is not None:  # a retried re-check-in: the same answer
            return ticket_view(again)
        domain.check_action("recheck_in", doc["number"], TicketStatus(doc["status"]))
        now = self.queue.clock()
        if now - from_instant(doc["no_show_at"]) > self.policy.recheck_grace:
            raise domain.RecheckTooLate(doc["number"], self.policy.recheck_grace.seconds / 60)
        queued = min(now, from_instant(doc["queued_at"]) + self.policy.recheck_penalty)
        return await self._reissue(
            site, doc, new_id, doc["service"], queued, now, rechecked_from=doc["_id"]
        )

    async def _reissue(
        self,
        site: SiteDef,
        doc: Document,
        new_id: str,
        service: str,
        queued: datetime,
        now: datetime,
        **origin: str,
    ) -> TicketView:
        """A new ticket made from `doc` (re-check-in, transfer): same citizen and number."""
        # From now on the request has two tickets: one at a time at a counter (ADR 0190).
        await self.queue.share(doc["_id"], doc["request_id"], ticket_at(doc))
        issued = TicketIssued(
            ticket_id=new_id,
            request_id=doc["request_id"],
            session_id=doc["session_id"],
            service=service,
            number=doc["number"],
            issued_at=now,
            waiting_ahead=await self.queue.waiting_ahead(site.site, doc["session_id"], service),
            priority=doc.get("priority"),
            arrived=True,
            **origin,
        )
        target = site.service(service)
        assert target is not None
        new_doc = {
            **{k: doc.get(k) for k in ("site", "session_id", "request_id", "number", "priority",
                                       "is_priority", "channel", "nik_masked", JOURNEY)},
            "_id": new_id,
            "service": service,
            "prefix": target.prefix,
            "status": "waiting",
            "issued_at": instant(now),
            "arrived": True,
            "queued_at": instant(queued),
            # the citizen may still be at this counter (transfer): the slot is freed right after
            "held": await self.store.visit_holder(doc["request_id"]) not in (None, new_id),
            "appointment_at": None,
            "recalls": 0,
            "multi": True,  # the request now has more than one ticket
            **origin,
        }  # fmt: skip
        reissued = self._event(site.site, issued, now, about=doc)
        if not await self.store.insert_with_events(new_doc, [reissued]):
            existing = await self.store.get(new_id)
            assert existing is not None
            return ticket_view(existing)
        self.memory.joined(new_doc)
        self.queue.touched(site.site)
        return ticket_view(new_doc)

    async def transfer(
        self, site_slug: str, counter: str | None, ticket_id: str, to_service: str
    ) -> TicketView:
        """Send the citizen to another line, keeping their original arrival time there.
        Returns the new ticket."""
        site, doc, now = await self._at_counter(site_slug, counter, ticket_id)
        if site.service(to_service) is None:
            raise domain.UnknownService(site.site, [to_service])
        if to_service == doc["service"]:
            raise domain.SameService(doc["number"])
        new_id = domain.transferred_id(ticket_id, to_service)
        if TicketStatus(doc["status"]) == TicketStatus.TRANSFERRED and doc.get("to") == new_id:
            return await self.queue.ticket(new_id)  # a retried transfer
        domain.check_action("transfer", doc["number"], TicketStatus(doc["status"]))
        # New ticket first: a crash in between leaves the old one at the counter (the officer
        # sees it and repeats the transfer, which finds the new ticket), never a citizen lost.
        new = await self._reissue(
            site,
            doc,
            new_id,
            to_service,
            from_instant(doc["queued_at"]),
            now,
            transferred_from=doc["_id"],
        )
        await self._move(
            site,
            "transfer",
            doc,
            {"status": "transferred", "transferred_at": instant(now), "to": new_id},
            TicketTransferred(
                **facts_of(doc),
                counter=doc.get("counter") or "-",
                to_service=to_service,
                new_ticket_id=new_id,
                transferred_at=now,
            ),
            now,
            release=True,
        )
        # The new ticket joined held (its citizen was still here): free it now, whatever the
        # request looked like before the transfer gave it a second ticket.
        await self.store.set_held(doc["request_id"], False)
        self.memory.held(site.site, doc["request_id"], False, None)
        return await self.queue.ticket(new.ticket_id)

    async def cancel(
        self, site_slug: str, counter: str | None, ticket_id: str, reason: str
    ) -> TicketView:
        site = self.queue.site(site_slug)
        doc = await self._ticket(site, ticket_id)
        if TicketStatus(doc["status"]) in domain.BEING_SERVED:
            self._mine(doc, counter)
        now = self.queue.clock()
        moved = await self._move(
            site,
            "cancel",
            doc,
            {"status": "cancelled", "cancelled_at": instant(now), "held": False},
            TicketCancelled(**facts_of(doc), reason=reason, cancelled_at=now),
            now,
            release=True,
        )
        return ticket_view(moved)


def _waiting(doc: Document) -> rules.Waiting:
    return rules.Waiting(
        ticket_id=doc["_id"],
        request_id=doc["request_id"],
        service=doc["service"],
        queued_at=from_instant(doc["queued_at"]),
        priority=bool(doc.get("is_priority")),
        appointment_at=from_instant(doc["appointment_at"]) if doc.get("appointment_at") else None,
    )
