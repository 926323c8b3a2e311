"""What one queue process keeps in memory of each site (ADR 0160): the heads of its sessions'
lines, its counters, its latest calls and the tickets this process moved lately. Loaded from the
store once, kept current by this process's own writes, and forgotten (re-read on next use) as
soon as the bus shows an event that another queue instance wrote at the site.

Why that is safe: the queue is the only writer of tickets and counters. This process applies
its own writes here as it makes them; every write of another instance carries an event (the
in-document outbox), and the relay publishes it with its event id, which this process does not
know as its own, so the site is forgotten and re-read. The watch has no delivery guarantee, so
nothing here is trusted where a stale value would do harm: a call is claimed by a conditional
write on the ticket (a stale candidate only loses the claim, and the site is then re-read), a
counter by its revision (a stale counter only loses the compare-and-set), "nothing waits" is
confirmed against the store (the counter's lines read again, ADR 0217), and a counter that looks
busy is checked against the store.
Memory is bounded: at most `HEAD` (+ `HEAD` of slack) tickets per line however long the line
is, the last `RECENT_CALLS` calls and the counters of each site, and a bounded TTL cache of the
tickets this process moved.
"""

from __future__ import annotations

import asyncio
import time
from bisect import insort
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from cachetools import TTLCache

from giliran.contracts.subjects import site_of
from giliran.store import Document

# Tickets kept per line head: call-next needs the oldest 4 callable of a line (2 for priority),
# the board the first 3. Past twice this the head is cut back and the rest re-read later.
HEAD = 16
RECENT_CALLS = 8
# Tickets this process moved (called, completed...): a point read saved on the next action on
# them; only a hint for their terminal statuses (see `Desk._busy`).
MOVED_KEPT = 4096
# Tickets put in lines that a site's memory remembers, for the line heads being read meanwhile
# (far more than are put in during one read).
JOINS_KEPT = 256
MOVED_SECONDS = 600.0
# The bus watch can lose a message (plain NATS, e.g. across a reconnect): a site's memory is
# read again at least this often whatever happens, so a lost event is a bounded staleness.
SITE_MAX_AGE = 30.0


class LinesStore(Protocol):
    """The reads memory is loaded with (services.queue.store.TicketStore; a fake in tests)."""

    def own_event(self, event_id: str) -> bool: ...

    async def line_head(
        self, session_id: str, service: str, limit: int, *, priority_only: bool
    ) -> list[Document]: ...

    async def waiting_arrived(self, session_id: str, service: str) -> int: ...

    async def counters_of(self, site: str) -> list[Document]: ...

    async def recent_calls(self, site: str, limit: int) -> list[Document]: ...


def line_order(doc: Document) -> tuple[str, str]:
    """The order of a line, as call-next reads it: arrival, then id."""
    return (str(doc.get("queued_at") or ""), str(doc["_id"]))


@dataclass
class LineHead:
    """The oldest arrived waiting tickets of one line (held ones included, flagged), in order;
    `complete` when they are the whole line."""

    tickets: list[Document]
    complete: bool
    waiting: int | None  # how many wait in the whole line (None: not counted yet)
    # When the read it came from left for the store (time.monotonic()).
    read_at: float = 0.0

    def add(self, doc: Document) -> None:
        if any(t["_id"] == doc["_id"] for t in self.tickets):
            return
        if self.waiting is not None:
            self.waiting += 1
        if self.complete or (self.tickets and line_order(doc) < line_order(self.tickets[-1])):
            insort(self.tickets, doc, key=line_order)
            if len(self.tickets) > 2 * HEAD:  # keep it bounded: the rest is read again later
                del self.tickets[HEAD:]
                self.complete = False

    def remove(self, ticket_id: str) -> None:
        kept = [t for t in self.tickets if t["_id"] != ticket_id]
        self.tickets = kept
        if self.waiting is not None:
            self.waiting = max(0, self.waiting - 1)

    def callable(self, limit: int) -> list[Document] | None:
        """The first `limit` callable (not held) tickets; None when the head cannot tell (it is
        not the whole line and holds fewer than that)."""
        found = [t for t in self.tickets if not t.get("held")][:limit]
        if len(found) < limit and not self.complete:
            return None
        return found


@dataclass
class SiteMemory:
    generation: int = 0
    since: float = field(default_factory=time.monotonic)
    heads: dict[tuple[str, str, bool], LineHead] = field(default_factory=dict)
    counters: dict[str, Document] | None = None
    calls: list[Document] | None = None
    # Per counter, the ticket called there last (None: none), as this process last wrote or
    # read it: whether the counter seats a ticket, and its priority ratio (ADR 0203).
    last_calls: dict[str, Document | None] = field(default_factory=dict)
    # Calls this process made while the latest calls were not in memory (a read of them may be
    # on its way, from before these writes): added to what that read brings.
    unread_calls: dict[str, Document] = field(default_factory=dict)
    # The tickets this process put in a line lately, numbered: a line head read while one was
    # put in may not hold it (the read left before the insert), so what was put in after the
    # read left is added to what it brings.
    joins: deque[tuple[int, Document]] = field(default_factory=lambda: deque(maxlen=JOINS_KEPT))
    joined: int = 0
    # How often each line head was dropped to be read again (`read_lines_again`): a read that
    # left before a drop is not kept after it.
    dropped: dict[tuple[str, str, bool], int] = field(default_factory=dict)


class QueueMemory:
    """The in-process state of every site this process serves (see the module docstring)."""

    def __init__(self, store: LinesStore) -> None:
        self.store = store
        self.sites: dict[str, SiteMemory] = {}
        self.moved: TTLCache[str, Document] = TTLCache(MOVED_KEPT, MOVED_SECONDS)
        self.forgotten = 0  # how often another instance's write made a site be re-read
        # Line heads being read: the read, and how many tickets this process had put in lines
        # of the site when it left.
        self._reading: dict[
            tuple[object, ...], tuple[asyncio.Future[list[Document]], int, float]
        ] = {}
        # Tickets a counter of this process is calling right now: the other counters of this
        # process choose among the rest instead of all racing for the oldest ticket (each lost
        # race costs store writes). Only a courtesy between counters of one process: between
        # instances the ticket's conditional write decides.
        self.claiming: set[str] = set()

    def site(self, site: str) -> SiteMemory:
        memory = self.sites.get(site)
        if memory is None:  # (not `setdefault`: a board rendering asks 16 times and more)
            memory = self.sites[site] = SiteMemory()
        if time.monotonic() - memory.since > SITE_MAX_AGE:
            self.forget(site)
        return memory

    # --- another instance wrote -----------------------------------------------------------

    def on_event(self, subject: str, event_id: str | None) -> None:
        """A bus event of a ticket or counter: forget its site unless this process wrote it."""
        site = site_of(subject)
        if site is None or (event_id is not None and self.store.own_event(event_id)):
            return
        self.forget(site)

    def forget(self, site: str) -> None:
        memory = self.sites.setdefault(site, SiteMemory())
        memory.since = time.monotonic()
        memory.generation += 1
        memory.heads.clear()
        memory.dropped.clear()  # (the generation tells reads apart from now on)
        memory.counters = None
        memory.calls = None
        memory.last_calls = {}
        memory.unread_calls = {}
        for ticket_id in [k for k, d in self.moved.items() if d.get("site") == site]:
            self.moved.pop(ticket_id, None)
        self.forgotten += 1

    # --- line heads -------------------------------------------------------------------------

    async def head(
        self, site: str, session_id: str, service: str, priority: bool, *, need: int = 0
    ) -> LineHead:
        """The head of a line; read (again) when it is not in memory, is drained, or cannot
        tell its first `need` callable tickets (a long line's head called down to fewer than
        that: read once more here, instead of call-next reading the line's oldest from the
        store on every call until the head drained)."""
        memory = self.site(site)
        key = (session_id, service, priority)
        found = memory.heads.get(key)
        # (A head still full that cannot tell is full of held tickets: reading it again would
        # not help, call-next reads the line's callable ones from the store.)
        if (
            found is not None
            and (found.tickets or found.complete)
            and (not need or found.callable(need) is not None or len(found.tickets) >= HEAD)
        ):
            return found
        generation = memory.generation
        dropped = memory.dropped.get(key, 0)
        # Ten counters clicking at once after a forget read each line once, not ten times: a
        # read in flight is shared by whoever asks in the same generation (a later generation
        # must not take an answer read before the write that made it).
        flight = (site, *key, generation, dropped)
        shared = self._reading.get(flight)
        if shared is None:
            started: asyncio.Future[list[Document]] = asyncio.ensure_future(
                self.store.line_head(session_id, service, HEAD + 1, priority_only=priority)
            )
            shared = self._reading[flight] = (started, memory.joined, time.monotonic())
            started.add_done_callback(lambda _: self._reading.pop(flight, None))
        reading, joined_before, read_at = shared
        # A ticket this process moved on (called, cancelled) while the read was on its way is
        # not waiting any more, whatever the read says: left out, or a counter here would choose
        # it, lose its write and have the whole site read again.
        read = await asyncio.shield(reading)
        docs = [dict(d) for d in read if not self._moved_on(d["_id"])]
        # A drained head read again in the same generation keeps its count: this process's own
        # writes kept it exact, and counting a long line again is what a head spares (ADR 0191).
        kept = found.waiting if found is not None else None
        loaded = LineHead(
            tickets=docs[:HEAD], complete=len(read) <= HEAD, waiting=None, read_at=read_at
        )
        # Put in this line by this process after the read left (a transfer keeps its arrival,
        # so it may belong at the front): the read may not hold them. `kept` counted them.
        for number, doc in memory.joins:
            if number < joined_before or not self._in_line(doc, key):
                continue
            if not self._moved_on(doc["_id"]):
                loaded.add(dict(doc))
        loaded.waiting = len(loaded.tickets) if loaded.complete else kept
        # Joins forgotten before this read came back (more than JOINS_KEPT of them): cannot
        # tell whether one is missing, so it serves this call but is not kept.
        complete_joins = not memory.joins or memory.joins[0][0] <= joined_before
        # Kept if nobody else wrote meanwhile, and the line was not dropped to be read again.
        if (
            memory.generation == generation
            and memory.dropped.get(key, 0) == dropped
            and complete_joins
        ):
            if len(memory.heads) > 64 * 16:  # sessions end: never grow without bound
                memory.heads.clear()
            memory.heads[key] = loaded
        return loaded

    def read_lines_again(
        self, site: str, session_id: str, services: Iterable[str], since: float
    ) -> None:
        """Call-next found nothing to call in these lines: they are read again from the store
        before an officer is told so (another instance may have put a ticket in them whose event
        has not come, or was lost), and nothing else of the site is: its counters and latest
        calls stay (ADR 0217; before, the whole site was forgotten and every counter's latest
        call read again). A read of them already on its way may have left before that ticket
        was written: it is not shared with the next call. A line read from the store since
        `since` (the asking call began; another counter's check, say) is that check already, as
        is a read of it on its way that left since then: shared, not read once more."""
        memory = self.site(site)
        for service in services:
            for priority in (False, True):
                key = (session_id, service, priority)
                head = memory.heads.get(key)
                if head is not None and head.read_at >= since:
                    continue
                flight = (site, *key, memory.generation, memory.dropped.get(key, 0))
                on_its_way = self._reading.get(flight)
                if on_its_way is not None and on_its_way[2] >= since:
                    continue
                memory.heads.pop(key, None)
                memory.dropped[key] = memory.dropped.get(key, 0) + 1

    def _moved_on(self, ticket_id: str) -> bool:
        moved = self.moved.get(ticket_id)
        return moved is not None and moved.get("status") != "waiting"

    async def waiting(self, site: str, session_id: str, service: str) -> tuple[int, list[Document]]:
        """How many wait in a line (held ones included) and its first tickets in order."""
        head = await self.head(site, session_id, service, False)
        if head.waiting is None:
            generation = self.site(site).generation
            counted = await self.store.waiting_arrived(session_id, service)
            if self.site(site).generation == generation:
                head.waiting = counted
            return counted, head.tickets
        return head.waiting, head.tickets

    @staticmethod
    def _in_line(doc: Document, key: tuple[str, str, bool]) -> bool:
        session_id, service, priority = key
        return (
            doc["session_id"] == session_id
            and doc["service"] == service
            and (not priority or bool(doc.get("is_priority")))
        )

    def _heads_of(self, doc: Document) -> Iterable[LineHead]:
        heads = self.site(doc["site"]).heads
        for priority in (False, True):
            if priority and not doc.get("is_priority"):
                continue
            head = heads.get((doc["session_id"], doc["service"], priority))
            if head is not None:
                yield head

    def joined(self, doc: Document) -> None:
        """This process put an arrived ticket in its line (issued, checked in, transferred)."""
        if doc.get("status") != "waiting" or not doc.get("arrived", True):
            return
        memory = self.site(doc["site"])
        memory.joins.append((memory.joined, dict(doc)))
        memory.joined += 1
        for head in self._heads_of(doc):
            head.add(dict(doc))

    def left(self, doc: Document) -> None:
        """This process took `doc` (as it was before) out of its line: called or cancelled."""
        if doc.get("status") != "waiting" or not doc.get("arrived", True):
            return
        for head in self._heads_of(doc):
            head.remove(doc["_id"])

    def waits(self, site: str, ticket_id: str) -> bool:
        """Whether a line head in memory still shows the ticket waiting."""
        return any(t["_id"] == ticket_id for h in self.site(site).heads.values() for t in h.tickets)

    def held(self, site: str, request_id: str, held: bool, except_ticket: str | None) -> None:
        """This process held (or freed) the waiting tickets of a request."""
        for head in self.site(site).heads.values():
            for ticket in head.tickets:
                if ticket["request_id"] == request_id and ticket["_id"] != except_ticket:
                    ticket["held"] = held

    # --- counters ---------------------------------------------------------------------------

    async def counters(self, site: str) -> dict[str, Document]:
        memory = self.site(site)
        if memory.counters is not None:
            return memory.counters
        generation = memory.generation
        found = {d["counter"]: d for d in await self.store.counters_of(site)}
        if memory.generation == generation:
            memory.counters = found
        return found

    async def counter(self, site: str, counter: str) -> Document | None:
        return (await self.counters(site)).get(counter)

    def counter_saved(self, site: str, doc: Document) -> None:
        memory = self.site(site)
        if memory.counters is not None:
            memory.counters[doc["counter"]] = doc

    def counter_stale(self, site: str) -> None:
        """A compare-and-set on a counter failed: another instance changed it."""
        self.forget(site)

    # --- the latest call at each counter (ADR 0203) ------------------------------------------

    def last_call(self, site: str, counter: str) -> tuple[bool, Document | None]:
        """Whether memory knows the ticket called at `counter` last, and that ticket."""
        calls = self.site(site).last_calls
        return (counter in calls, calls.get(counter))

    def generation(self, site: str) -> int:
        return self.site(site).generation

    def keep_last_call(
        self, site: str, counter: str, doc: Document | None, generation: int
    ) -> None:
        """A read of the last call at `counter`, kept unless another instance's write was seen
        since it began (`generation`)."""
        memory = self.site(site)
        if memory.generation == generation:
            memory.last_calls[counter] = doc

    def _called_at_counter(self, doc: Document) -> None:
        """This process moved a ticket called at a counter: the latest call there, unless memory
        knows a later one. (Calls at one counter follow each other: a counter calls again only
        once its seat is free, so the ticket it seats, or left last, is its latest.)"""
        counter, called_at = doc.get("counter"), doc.get("called_at")
        if not counter or not called_at:
            return
        calls = self.site(doc["site"]).last_calls
        known = calls.get(counter)
        if known is None or str(known.get("called_at") or "") <= str(called_at):
            calls[counter] = doc

    # --- tickets this process moved, and the latest calls ------------------------------------

    def ticket(self, ticket_id: str) -> Document | None:
        return self.moved.get(ticket_id)

    async def recent_calls(self, site: str) -> list[Document]:
        memory = self.site(site)
        if memory.calls is not None:
            return memory.calls
        generation = memory.generation
        found = await self.store.recent_calls(site, RECENT_CALLS)
        if memory.generation != generation:
            return found
        # A call this process made while the read was on its way may be missing from it (the
        # read left the store first): kept, that call would never reach the boards.
        late = memory.unread_calls
        memory.unread_calls = {}
        if late:
            merged = {d["_id"]: d for d in found} | late
            found = sorted(
                (d for d in merged.values() if d.get("last_call_at")),
                key=lambda d: str(d["last_call_at"]),
                reverse=True,
            )[:RECENT_CALLS]
        memory.calls = found
        return found

    def moved_to(self, doc: Document) -> None:
        """This process wrote `doc` (the ticket as it is now)."""
        self.moved[doc["_id"]] = doc
        self._called_at_counter(doc)
        memory = self.site(doc["site"])
        calls = memory.calls
        if calls is None:
            if doc.get("last_call_at"):
                memory.unread_calls.pop(doc["_id"], None)
                memory.unread_calls[doc["_id"]] = doc  # newest last
                while len(memory.unread_calls) > RECENT_CALLS:  # only the latest can be shown
                    del memory.unread_calls[next(iter(memory.unread_calls))]
            return
        others = [c for c in calls if c["_id"] != doc["_id"]]
        if doc.get("last_call_at"):
            others.append(doc)
        elif len(others) == len(calls):
            return
        others.sort(key=lambda d: str(d.get("last_call_at") or ""), reverse=True)
        self.site(doc["site"]).calls = others[:RECENT_CALLS]
