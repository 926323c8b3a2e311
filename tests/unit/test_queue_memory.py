"""The queue's in-process state (ADR 0160) against an in-memory fake of its store: loaded once,
kept current by the process's own writes, bounded however long a line is, and forgotten (read
again) when another instance's event shows up, even in the middle of a read."""

from __future__ import annotations

import asyncio
from typing import Any

from giliran.store import Document
from services.queue.memory import HEAD, RECENT_CALLS, SITE_MAX_AGE, QueueMemory

SITE = "cikarang-utara"
SESSION = "s1"


def ticket(n: int, service: str = "KIA", **fields: Any) -> Document:
    return {
        "_id": f"r{n:05d}-{service}", "site": SITE, "session_id": SESSION,
        "request_id": f"r{n:05d}", "service": service, "number": f"K-{n:03d}",
        "status": "waiting", "arrived": True, "held": False, "is_priority": False,
        "queued_at": f"20261207T0900{n:05d}Z", **fields,
    }  # fmt: skip


class FakeStore:
    """The reads QueueMemory makes, answered from a list, each one counted."""

    def __init__(self, tickets: list[Document] | None = None) -> None:
        self.tickets = tickets or []
        self.counters: list[Document] = []
        self.reads = 0
        self.own: set[str] = set()
        self.during_read: Any = None

    def own_event(self, event_id: str) -> bool:
        return event_id in self.own

    def _line(self, session_id: str, service: str, priority_only: bool) -> list[Document]:
        return sorted(
            (
                t
                for t in self.tickets
                if t["session_id"] == session_id
                and t["service"] == service
                and t["status"] == "waiting"
                and t["arrived"]
                and (t["is_priority"] or not priority_only)
            ),
            key=lambda t: (t["queued_at"], t["_id"]),
        )

    async def line_head(
        self, session_id: str, service: str, limit: int, *, priority_only: bool
    ) -> list[Document]:
        self.reads += 1
        if self.during_read is not None:
            self.during_read()
        return [dict(t) for t in self._line(session_id, service, priority_only)[:limit]]

    async def waiting_arrived(self, session_id: str, service: str) -> int:
        self.reads += 1
        return len(self._line(session_id, service, False))

    async def counters_of(self, site: str) -> list[Document]:
        self.reads += 1
        return [dict(c) for c in self.counters]

    async def recent_calls(self, site: str, limit: int) -> list[Document]:
        self.reads += 1
        called = [t for t in self.tickets if t.get("last_call_at")]
        return sorted(called, key=lambda t: t["last_call_at"], reverse=True)[:limit]


async def test_a_line_is_read_once_then_kept_by_the_processs_own_writes() -> None:
    store = FakeStore([ticket(1), ticket(2)])
    memory = QueueMemory(store)
    assert [t["_id"] for t in (await memory.head(SITE, SESSION, "KIA", False)).tickets] == [
        "r00001-KIA",
        "r00002-KIA",
    ]
    memory.joined(ticket(3))
    memory.left(ticket(1))
    waiting, first = await memory.waiting(SITE, SESSION, "KIA")
    assert (waiting, [t["_id"] for t in first]) == (2, ["r00002-KIA", "r00003-KIA"])
    assert store.reads == 1


async def test_a_long_line_is_held_by_its_head_only() -> None:
    store = FakeStore([ticket(n) for n in range(1, 100_001)])
    memory = QueueMemory(store)
    head = await memory.head(SITE, SESSION, "KIA", False)
    assert len(head.tickets) == HEAD and not head.complete
    waiting, _ = await memory.waiting(SITE, SESSION, "KIA")
    assert waiting == 100_000
    # A ticket joining at the end of a long line is counted, not kept.
    memory.joined(ticket(100_001))
    assert len(head.tickets) == HEAD and head.waiting == 100_001
    # A transfer keeps its earlier arrival: it goes into the head, in order.
    memory.joined(ticket(0, queued_at="20261207T090000005Z"))
    assert head.tickets[4]["_id"] == "r00000-KIA" and len(head.tickets) == HEAD + 1
    reads = store.reads
    for n in range(100_002, 100_100):  # joiners of a complete head never grow it unbounded
        memory.joined(ticket(n, queued_at="20261207T090000001Z"))
    assert len(head.tickets) <= 2 * HEAD and store.reads == reads


async def test_a_drained_head_is_read_again() -> None:
    store = FakeStore([ticket(n) for n in range(1, 40)])
    memory = QueueMemory(store)
    head = await memory.head(SITE, SESSION, "KIA", False)
    for t in list(head.tickets):
        memory.left(t)
        store.tickets.remove(next(x for x in store.tickets if x["_id"] == t["_id"]))
    again = await memory.head(SITE, SESSION, "KIA", False)
    assert again.tickets[0]["_id"] == f"r{HEAD + 1:05d}-KIA" and store.reads == 2


async def test_a_lines_count_is_kept_by_own_writes_and_survives_a_drained_head() -> None:
    """ADR 0191: what a joining ticket has ahead comes from memory. Counted once per line, kept
    exact by this process's joins and calls, and not counted again when the head drains and is
    read again (that count was a scan of the whole line every 16 calls of a long one)."""
    store = FakeStore([ticket(n) for n in range(1, 40)])
    memory = QueueMemory(store)
    assert (await memory.waiting(SITE, SESSION, "KIA"))[0] == 39
    reads = store.reads  # the head and one count
    joined = ticket(40)
    store.tickets.append(joined)
    memory.joined(joined)
    head = await memory.head(SITE, SESSION, "KIA", False)
    for t in list(head.tickets):
        memory.left(t)
        store.tickets.remove(next(x for x in store.tickets if x["_id"] == t["_id"]))
    assert (await memory.waiting(SITE, SESSION, "KIA"))[0] == 40 - HEAD == len(store.tickets)
    assert store.reads == reads + 1  # the head read again, the line not counted again


async def test_a_lines_count_follows_another_instances_write_once_its_event_is_seen() -> None:
    """Two instances (ADR 0160's promise): the other's joiner is not in this one's count until
    its event arrives; then the site is read again and the count is the store's."""
    store = FakeStore([ticket(n) for n in range(1, 40)])
    memory = QueueMemory(store)
    assert (await memory.waiting(SITE, SESSION, "KIA"))[0] == 39
    store.tickets.append(ticket(40))  # written by the other instance
    assert (await memory.waiting(SITE, SESSION, "KIA"))[0] == 39
    memory.on_event(f"giliran.{SITE}.ticket.issued", "evt-of-the-other-instance")
    assert (await memory.waiting(SITE, SESSION, "KIA"))[0] == 40


async def test_callable_skips_held_and_cannot_tell_from_a_short_incomplete_head() -> None:
    store = FakeStore([ticket(n) for n in range(1, 40)])
    memory = QueueMemory(store)
    head = await memory.head(SITE, SESSION, "KIA", False)
    memory.held(SITE, "r00001", True, None)
    assert [t["_id"] for t in head.callable(4) or []] == [f"r{n:05d}-KIA" for n in (2, 3, 4, 5)]
    for n in range(1, HEAD - 1):
        memory.held(SITE, f"r{n:05d}", True, None)
    assert head.callable(4) is None  # only two callable left in an incomplete head
    memory.held(SITE, "r00001", False, None)
    assert head.callable(3) is not None


async def test_another_instances_event_forgets_the_site_its_own_do_not() -> None:
    store = FakeStore([ticket(1)])
    memory = QueueMemory(store)
    await memory.head(SITE, SESSION, "KIA", False)
    await memory.counters(SITE)
    store.own.add("mine")
    memory.on_event(f"giliran.{SITE}.ticket.called", "mine")
    await memory.head(SITE, SESSION, "KIA", False)
    await memory.counters(SITE)
    assert store.reads == 2
    memory.on_event("giliran.other-site.ticket.called", "theirs")  # another site: kept
    await memory.head(SITE, SESSION, "KIA", False)
    assert store.reads == 2
    store.tickets.append(ticket(2))  # another instance issued it
    memory.on_event(f"giliran.{SITE}.ticket.issued", "theirs")
    waiting, _ = await memory.waiting(SITE, SESSION, "KIA")
    await memory.counters(SITE)
    assert waiting == 2 and store.reads == 4


async def test_a_read_overtaken_by_another_instances_write_is_not_kept() -> None:
    store = FakeStore([ticket(1)])
    memory = QueueMemory(store)
    store.during_read = lambda: memory.on_event(f"giliran.{SITE}.ticket.issued", "theirs")
    await memory.head(SITE, SESSION, "KIA", False)
    store.during_read = None
    await memory.head(SITE, SESSION, "KIA", False)
    assert store.reads == 2  # the first answer served its caller but was not kept


async def test_latest_calls_follow_the_processs_calls_newest_first_and_bounded() -> None:
    store = FakeStore()
    memory = QueueMemory(store)
    assert await memory.recent_calls(SITE) == []
    for n in range(1, 20):
        memory.moved_to(ticket(n, status="called", counter="1", last_call_at=f"T{n:03d}"))
    calls = await memory.recent_calls(SITE)
    assert [c["_id"] for c in calls] == [f"r{n:05d}-KIA" for n in range(19, 19 - RECENT_CALLS, -1)]
    memory.moved_to(ticket(15, status="completed", counter="1", last_call_at="T015"))
    assert (await memory.recent_calls(SITE))[4]["status"] == "completed"
    assert memory.ticket("r00015-KIA") is not None and store.reads == 1


async def test_a_site_is_read_again_after_its_max_age_whatever_the_bus_said() -> None:
    """A lost watch message (plain NATS) leaves memory stale for at most SITE_MAX_AGE."""
    store = FakeStore([ticket(1)])
    memory = QueueMemory(store)
    await memory.head(SITE, SESSION, "KIA", False)
    store.tickets.append(ticket(2))  # another instance's write whose event was lost
    assert (await memory.waiting(SITE, SESSION, "KIA"))[0] == 1
    memory.sites[SITE].since -= SITE_MAX_AGE + 1
    assert (await memory.waiting(SITE, SESSION, "KIA"))[0] == 2


async def test_counters_asking_at_once_share_one_read_of_a_line() -> None:
    store = FakeStore([ticket(1)])
    memory = QueueMemory(store)
    heads = await asyncio.gather(*(memory.head(SITE, SESSION, "KIA", False) for _ in range(10)))
    assert store.reads == 1 and all(h.tickets[0]["_id"] == "r00001-KIA" for h in heads)
    # A read started before another instance's write is not handed to a later asker.
    store.during_read = lambda: memory.on_event(f"giliran.{SITE}.ticket.issued", "theirs")
    memory.forget(SITE)
    first = asyncio.ensure_future(memory.head(SITE, SESSION, "KIA", False))
    await asyncio.sleep(0)
    store.during_read = None
    store.tickets.append(ticket(2))
    later = await memory.head(SITE, SESSION, "KIA", False)
    await first
    assert len(later.tickets) == 2


async def test_a_head_called_down_below_what_is_needed_is_read_again_once() -> None:
    """ADR 0202: call-next needs a line's first 4 callable tickets; a long line's head called
    down to 3 is read again (and kept), not left for call-next to read the line's oldest from
    the store on every call until it drained."""
    store = FakeStore([ticket(n) for n in range(1, 60)])
    memory = QueueMemory(store)
    head = await memory.head(SITE, SESSION, "KIA", False, need=4)
    for t in list(head.tickets)[: HEAD - 3]:
        memory.left(t)
        store.tickets.remove(next(x for x in store.tickets if x["_id"] == t["_id"]))
    assert head.callable(4) is None and store.reads == 1
    again = await memory.head(SITE, SESSION, "KIA", False, need=4)
    assert [t["_id"] for t in again.callable(4) or []] == [
        f"r{n:05d}-KIA" for n in range(HEAD - 2, HEAD + 2)
    ]
    assert len(again.tickets) == HEAD and store.reads == 2
    await memory.head(SITE, SESSION, "KIA", False, need=4)
    assert store.reads == 2  # kept
    # The board asks for what the head holds, whatever is callable: no read for it.
    assert (await memory.waiting(SITE, SESSION, "KIA"))[0] == 59 - (HEAD - 3)


async def test_a_full_head_of_held_tickets_is_not_read_again_for_nothing() -> None:
    """A head that cannot tell while full is full of held citizens (at another booth): reading
    it again would bring the same; call-next reads the callable ones from the store instead."""
    store = FakeStore([ticket(n) for n in range(1, 60)])
    memory = QueueMemory(store)
    head = await memory.head(SITE, SESSION, "KIA", False)
    for n in range(1, HEAD - 1):
        memory.held(SITE, f"r{n:05d}", True, None)
    assert head.callable(4) is None
    assert await memory.head(SITE, SESSION, "KIA", False, need=4) is head and store.reads == 1


async def test_a_read_that_raced_this_processs_own_call_does_not_bring_the_ticket_back() -> None:
    """A line read on its way while a counter of this process called its first ticket: the
    read says it still waits, this process knows better (another counter here would choose
    it, lose its write and make the whole site be read again)."""
    store = FakeStore([ticket(n) for n in range(1, 4)])
    memory = QueueMemory(store)
    called = {**ticket(1), "status": "called", "counter": "1", "last_call_at": "T001"}
    store.during_read = lambda: memory.moved_to(called)
    head = await memory.head(SITE, SESSION, "KIA", False)
    assert [t["_id"] for t in head.tickets] == ["r00002-KIA", "r00003-KIA"]
    assert head.complete and head.waiting == 2


async def test_a_call_made_while_the_latest_calls_are_read_is_not_lost() -> None:
    """The latest calls were forgotten and are being read again when a counter of this process
    calls a ticket; the read left the store before that write. The call is still among the
    latest calls memory keeps (else no board would ever show it)."""

    class SlowCalls(FakeStore):
        async def recent_calls(self, site: str, limit: int) -> list[Document]:
            found = await super().recent_calls(site, limit)  # what the store had then
            if self.during_read is not None:
                self.during_read()
            return found

    store = SlowCalls([ticket(1, status="called", counter="1", last_call_at="T001")])
    memory = QueueMemory(store)
    called = ticket(2, status="called", counter="2", last_call_at="T002")
    store.during_read = lambda: memory.moved_to(called)
    calls = await memory.recent_calls(SITE)
    assert [c["_id"] for c in calls] == ["r00002-KIA", "r00001-KIA"]
    store.during_read = None
    assert [c["_id"] for c in await memory.recent_calls(SITE)] == ["r00002-KIA", "r00001-KIA"]
    assert store.reads == 1


class ReadLeavesFirst(FakeStore):
    """A read that left the process before `during_read` happened: it does not see it."""

    async def line_head(
        self, session_id: str, service: str, limit: int, *, priority_only: bool
    ) -> list[Document]:
        self.reads += 1
        found = [dict(t) for t in self._line(session_id, service, priority_only)[:limit]]
        await asyncio.sleep(0)  # the answer is on its way back
        if self.during_read is not None:
            self.during_read()
        return found


def put_in(store: FakeStore, memory: QueueMemory, doc: Document) -> None:
    store.tickets.append(doc)
    memory.joined(doc)


async def test_a_ticket_put_in_while_a_called_down_head_is_read_again_is_called_first() -> None:
    """A transfer keeps the citizen's arrival, so it belongs at the front: put in while the head
    is being read again (the read left before it), it must not be passed over until the head
    drains."""
    store = ReadLeavesFirst([ticket(n) for n in range(10, 10 + HEAD + 2)])
    memory = QueueMemory(store)
    head = await memory.head(SITE, SESSION, "KIA", False, need=4)
    for t in list(head.tickets)[: HEAD - 3]:  # called down to 3: read again on the next call
        memory.left(t)
        store.tickets.remove(next(x for x in store.tickets if x["_id"] == t["_id"]))
    transferred = ticket(1)
    store.during_read = lambda: put_in(store, memory, transferred)
    again = await memory.head(SITE, SESSION, "KIA", False, need=4)
    store.during_read = None
    assert [t["_id"] for t in (again.callable(4) or [])][:2] == ["r00001-KIA", "r00023-KIA"]
    assert again.complete and again.waiting == len(store.tickets) == 6
    # Kept: the next call needs no read.
    reads = store.reads
    assert (await memory.head(SITE, SESSION, "KIA", False, need=4)) is again
    assert store.reads == reads


async def test_a_ticket_put_in_while_its_line_is_first_read_is_in_the_head() -> None:
    store = ReadLeavesFirst([ticket(n) for n in range(1, 4)])
    memory = QueueMemory(store)
    issued = ticket(4)
    store.during_read = lambda: put_in(store, memory, issued)
    head = await memory.head(SITE, SESSION, "KIA", False)
    store.during_read = None
    assert [t["_id"] for t in head.tickets][-1] == "r00004-KIA" and head.waiting == 4
    # Another line's ticket put in meanwhile stays out of this one.
    store.during_read = lambda: put_in(store, memory, ticket(5, service="KK"))
    memory.forget(SITE)
    head = await memory.head(SITE, SESSION, "KIA", False)
    assert [t["_id"] for t in head.tickets] == [f"r{n:05d}-KIA" for n in range(1, 5)]
