"""`Recent` (intake's kept session facts, ADR 0176/0207): readers that miss together share one
read; a write in between is never hidden by a read started before it; a failed shared read
fails its waiting readers at once; a cancelled one leaves each to read for itself."""

from __future__ import annotations

import asyncio

from services.intake.store import Recent


def test_readers_that_miss_together_share_one_read() -> None:
    async def run() -> None:
        recent: Recent[dict[str, int]] = Recent(ttl=60)
        reads = 0
        release = asyncio.Event()

        async def load() -> dict[str, int]:
            nonlocal reads
            reads += 1
            await release.wait()
            return {"version": reads}

        readers = [asyncio.create_task(recent.get("site", load)) for _ in range(20)]
        await asyncio.sleep(0.01)
        release.set()
        answers = await asyncio.gather(*readers)
        assert reads == 1, f"20 readers that missed together read {reads} times"
        assert all(a == {"version": 1} for a in answers)
        assert await recent.get("site", load) == {"version": 1}  # kept
        assert reads == 1

    asyncio.run(run())


def test_a_reader_after_a_write_never_shares_a_read_started_before_it() -> None:
    async def run() -> None:
        recent: Recent[str] = Recent(ttl=60)
        stored = "open"
        release = asyncio.Event()

        async def slow_load() -> str:
            seen = stored  # read before the write below
            await release.wait()
            return seen

        async def load() -> str:
            return stored

        before = asyncio.create_task(recent.get("site", slow_load))
        await asyncio.sleep(0.01)
        stored = "closed"  # an admin closes the date through this instance
        recent.wrote("site")
        after = await recent.get("site", load)
        assert after == "closed", "a reader after the write got the answer from before it"
        release.set()
        assert await before == "open"  # its own read, from before the write: its answer
        assert await recent.get("site", load) == "closed"  # and that one was not kept

    asyncio.run(run())


def test_a_failed_shared_read_fails_its_waiting_readers_at_once() -> None:
    """A store outage answers every reader within one timeout, not one timeout per reader in
    turn (the store-killed failure test saw 10 s and more with readers reading again)."""

    async def run() -> None:
        recent: Recent[str] = Recent(ttl=60)
        release = asyncio.Event()
        calls = 0

        async def load() -> str:
            nonlocal calls
            calls += 1
            if calls == 1:
                await release.wait()
                raise ConnectionError("store away")
            return "read again"

        first = asyncio.create_task(recent.get("site", load))
        await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(recent.get("site", load)) for _ in range(3)]
        await asyncio.sleep(0.01)
        release.set()
        outcomes = await asyncio.gather(first, *waiting, return_exceptions=True)
        assert all(isinstance(o, ConnectionError) for o in outcomes)
        assert calls == 1
        # Nothing kept and nothing in flight: the next reader reads for itself.
        assert await recent.get("site", load) == "read again" and calls == 2

    asyncio.run(run())


def test_a_cancelled_shared_read_leaves_each_reader_to_read_for_itself() -> None:
    async def run() -> None:
        recent: Recent[str] = Recent(ttl=60)
        calls = 0

        async def load() -> str:
            nonlocal calls
            calls += 1
            if calls == 1:
                await asyncio.sleep(60)
            return "read again"

        first = asyncio.create_task(recent.get("site", load))
        await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(recent.get("site", load)) for _ in range(3)]
        await asyncio.sleep(0.01)
        first.cancel()  # its reader gave up (the request was dropped)
        assert await asyncio.gather(*waiting) == ["read again"] * 3
        assert calls >= 2  # the first waiter read for itself; the others shared that read

    asyncio.run(run())
