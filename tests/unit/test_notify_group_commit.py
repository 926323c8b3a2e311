"""Notify's group commit (ADR 0219, 0220) without a store: the writes a batch's flows make at the
same step go out as one command, each flow gets its own outcome, and no write waits for a flow
that is busy elsewhere longer than the window."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from giliran.contracts import Event
from services.notify import batching
from services.notify.batching import GroupCommit
from services.notify.subscribers import EachOnce
from tests.unit.test_notify_batches import issued, submitted


class Writes:
    """A fake store command: records each call's items; an item "bad" fails alone."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    async def __call__(self, items: Sequence[str]) -> list[str | Exception]:
        self.commands.append(list(items))
        await asyncio.sleep(0)  # a round trip
        return [ValueError(i) if i == "bad" else f"ok:{i}" for i in items]


async def test_the_flows_writes_of_one_step_are_one_command_and_each_gets_its_own_outcome() -> None:
    writes = Writes()
    commit = GroupCommit(flows=3)
    got: dict[str, Any] = {}

    async def flow(name: str) -> None:
        with commit.flow():
            try:
                got[name] = await batching.submit(writes, name)
            except ValueError as exc:
                got[name] = exc
            got[name + "2"] = await batching.submit(writes, name + "2")

    await asyncio.gather(flow("a"), flow("bad"), flow("c"))
    assert writes.commands == [["a", "bad", "c"], ["a2", "bad2", "c2"]]
    assert got["a"] == "ok:a" and got["c"] == "ok:c" and isinstance(got["bad"], ValueError)
    assert got["a2"] == "ok:a2"


async def test_a_flow_that_finishes_or_writes_nothing_holds_nobody_up() -> None:
    writes = Writes()
    commit = GroupCommit(flows=3, window=3600)  # only "everyone waits or is done" flushes

    async def writer(name: str) -> None:
        with commit.flow():
            await batching.submit(writes, name)

    async def idle() -> None:
        with commit.flow():
            await asyncio.sleep(0)

    await asyncio.wait_for(asyncio.gather(writer("a"), idle(), writer("b")), 5)
    assert writes.commands == [["a", "b"]]


async def test_a_write_waits_no_longer_than_the_window_for_a_flow_busy_elsewhere() -> None:
    """A record is written at most the window after its message was answered, even while
    another flow of the batch still waits on its gateway: the busy flow goes on only once the
    other's write was flushed without it (no clock asserted: the order proves it)."""
    writes = Writes()
    commit = GroupCommit(flows=2, window=0.01)
    flushed_without_busy = asyncio.Event()

    async def quick() -> None:
        with commit.flow():
            await batching.submit(writes, "answered")
            flushed_without_busy.set()

    async def busy() -> None:
        with commit.flow():
            await flushed_without_busy.wait()  # still "on the wire" until the other is logged
            await batching.submit(writes, "late")

    await asyncio.wait_for(asyncio.gather(quick(), busy()), 5)
    assert writes.commands == [["answered"], ["late"]]


async def test_outside_a_batch_each_write_goes_alone() -> None:
    writes = Writes()
    assert await batching.submit(writes, "x") == "ok:x"
    assert writes.commands == [["x"]]


async def test_each_once_runs_each_request_as_one_flow_of_the_batchs_group_commit() -> None:
    """The consumer's batch handler gives its requests one group commit: the first write of
    each request's events goes out as one command, one request's events still in order."""
    writes = Writes()
    requests = [submitted() for _ in range(3)]
    events: list[Event[Any]] = [issued(r, 1) for r in requests] + [issued(requests[0], 2)]
    ran: list[str] = []

    async def handle(event: Event[Any]) -> bool:
        ran.append(event.data.number)
        await batching.submit(writes, event.data.ticket_id)
        return False

    each = EachOnce({type(events[0].data): handle})
    assert await each(events) == set()
    assert [len(c) for c in writes.commands] == [3, 1]  # K-002 after its request's K-001
    assert writes.commands[1] == [events[3].data.ticket_id]


async def test_a_flush_cancelled_at_shutdown_leaves_no_writer_waiting() -> None:
    """Both kinds' writers are woken (cancelled) when the flush is cancelled mid-command: no
    flow of a stopping consumer waits for ever."""
    started = asyncio.Event()

    async def hangs(items: Sequence[str]) -> list[str]:
        started.set()
        await asyncio.Event().wait()
        return list(items)

    writes = Writes()
    commit = GroupCommit(flows=2, window=3600)

    async def flow(flusher: Any, item: str) -> None:
        with commit.flow():
            await batching.submit(flusher, item)

    flows = [asyncio.ensure_future(flow(hangs, "a")), asyncio.ensure_future(flow(writes, "b"))]
    await started.wait()
    for task in list(commit._flushes):
        task.cancel()
    done = await asyncio.wait_for(asyncio.gather(*flows, return_exceptions=True), 5)
    assert all(isinstance(d, asyncio.CancelledError) for d in done), done
    assert writes.commands == []


async def test_a_flush_cancelled_before_its_first_step_leaves_no_writer_waiting() -> None:
    """A flush task cancelled before it ever ran (a stopping consumer, right after the flush was
    scheduled) never enters `_flush`: its writers are woken (cancelled) all the same."""
    writes = Writes()
    commit = GroupCommit(flows=2, window=3600)

    async def flow(item: str) -> None:
        with commit.flow():
            await batching.submit(writes, item)

    flows = [asyncio.ensure_future(flow("a")), asyncio.ensure_future(flow("b"))]
    await asyncio.sleep(0)  # both flows submitted: the flush is scheduled, not yet started
    pending = list(commit._flushes)
    assert pending and not any(task.done() for task in pending)
    for task in pending:
        task.cancel()
    done = await asyncio.wait_for(asyncio.gather(*flows, return_exceptions=True), 5)
    assert all(isinstance(d, asyncio.CancelledError) for d in done), done
    assert writes.commands == []  # nothing was written, and nobody was told it was
