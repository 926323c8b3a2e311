"""Report cells on the real embedded store: a fact is counted exactly once when its event is
redelivered after a crash, arrives again as another event, or is handled by two instances."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from giliran.contracts import TicketCalled, TicketCompleted, TicketIssued, TicketStarted, new_event
from giliran.settings import Settings
from giliran.store import connect
from services.reporting.cells import CellKey, Contribution, tally
from services.reporting.handlers import Reporting
from services.reporting.sketch import bucket
from services.reporting.store import FactStore
from services.reporting.subscribers import FETCH_BATCH

pytestmark = pytest.mark.integration

KEY = CellKey("cikarang-utara", "2026-11-29", "s", "KIA", "09", "1")
CALLED = Contribution("called", KEY, {"called": 1}, {"wait": 120.0})


class Crash(Exception):
    pass


class CrashOnce:
    """A collection whose first update_one raises, before or after reaching the store."""

    def __init__(self, inner: Any, *, after_write: bool) -> None:
        self.inner, self.after_write, self.crashed = inner, after_write, False

    async def update_one(self, *args: Any, **kwargs: Any) -> Any:
        if not self.crashed and "$inc" in args[1]:
            self.crashed = True
            if self.after_write:
                await self.inner.update_one(*args, **kwargs)
            raise Crash
        return await self.inner.update_one(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def _store(settings: Settings, name: str) -> FactStore:
    store = FactStore(connect(settings.mongo_url)[f"{settings.db_prefix}_{name}"])
    await store.ensure_indexes()
    return store


async def _figures(store: FactStore) -> tuple[int, int, int]:
    total = tally(await store.ticket_cells.find({}).to_list())
    return total.count("called"), total.sketch("wait").n, total.sketch("wait").sum_ms


@pytest.mark.parametrize("after_write", [False, True])
async def test_a_crash_then_redelivery_counts_once(settings: Settings, after_write: bool) -> None:
    store = await _store(settings, f"crash{int(after_write)}")
    real = store.ticket_cells
    store.ticket_cells = CrashOnce(real, after_write=after_write)  # type: ignore[assignment]
    with pytest.raises(Crash):
        await store.contribute_ticket("t1", CALLED)
    await store.contribute_ticket("t1", CALLED)  # the redelivery
    await store.contribute_ticket("t1", CALLED)  # and once more
    assert await _figures(store) == (1, 1, 120_000)


async def test_concurrent_instances_and_other_tickets(settings: Settings) -> None:
    store = await _store(settings, "concurrent")
    other = await _store(settings, "concurrent")  # a second instance: its own cache of cells
    await asyncio.gather(
        *(store.contribute_ticket("t1", CALLED) for _ in range(6)),
        *(other.contribute_ticket("t1", CALLED) for _ in range(6)),
        *(other.contribute_ticket("t2", CALLED) for _ in range(3)),
    )
    assert await _figures(store) == (2, 2, 240_000)
    completed = Contribution("completed", KEY, {"completed": 1}, {"service": 300.0})
    await store.contribute_ticket("t1", completed)
    [cell] = await store.ticket_cells.find({}).to_list()
    assert cell["n"] == {"called": 2, "completed": 1}
    assert cell["sketch"]["service"] == {"n": 1, "sum_ms": 300_000, "min": 300.0,
                                         "max": 300.0, "b": {bucket(300.0): 1}}  # fmt: skip
    assert len(cell["seen"]) == 3  # (t1, called), (t2, called), (t1, completed)


async def test_a_dropped_database_under_a_running_service(settings: Settings) -> None:
    store = await _store(settings, "dropped")
    await store.contribute_ticket("t1", CALLED)
    await store.ticket_cells.delete_many({})
    await store.contribute_ticket("t2", CALLED)  # the cache says the cell exists; it does not
    assert await _figures(store) == (1, 1, 120_000)


@pytest.mark.parametrize(
    ("filter_fields", "inc_paths", "set_paths", "nested"),
    [(2, 63, 0, True), (2, 64, 0, False), (2, 2, 61, True), (2, 2, 62, False),
     (2, 1, 63, False), (49, 8, 48, True), (49, 16, 48, False), (2, 0, 100, True)],
)  # fmt: skip
async def test_the_embedded_server_nests_an_updates_paths_only_below_64(
    settings: Settings, filter_fields: int, inc_paths: int, set_paths: int, nested: bool
) -> None:
    """Why cell writes are cut by their update paths (ADR 0224), pinned on the real embedded
    server: ONE update naming 64 paths or more across `$inc` and `$set` stores the `$inc` paths
    as literal dotted keys ("n.k0"), which no read of `n` sees; how many fields the filter names
    does not matter, and `$set` alone is stored right. If the server is fixed, this fails and
    the cut (PATHS_PER_WRITE) may go."""
    cells = connect(settings.mongo_url)[f"{settings.db_prefix}_dotted"]["cells"]
    await cells.insert_one({"_id": "x", "seen": {}})
    query = {"_id": "x", **{f"seen.m{i}": {"$exists": False} for i in range(filter_fields - 1)}}
    update: dict[str, Any] = {"$set": {f"seen.s{i}": 1 for i in range(set_paths)}}
    if inc_paths:
        update["$inc"] = {f"n.k{i}": 1 for i in range(inc_paths)}
    assert (await cells.update_one(query, update)).matched_count == 1
    doc = await cells.find_one({"_id": "x"})
    assert doc is not None
    dotted = [k for k in doc if "." in k]
    assert (len(doc.get("n", {})), len(doc["seen"]), not dotted) == (
        (inc_paths, set_paths, True) if nested else (0, set_paths, False)
    )


@pytest.mark.parametrize("calls", [30, 100])
async def test_a_busy_counters_calls_in_one_write_are_all_counted(
    settings: Settings, calls: int
) -> None:
    """`calls` calls at one counter in one hour added in one batch (a backlog after an outage),
    each with its own wait: every call adds its mark and often a sketch bucket, so thirty calls
    passed the embedded server's 64 update paths and the cell lost every count and wait. Each
    is counted once, and again nothing more (a redelivery)."""
    store = await _store(settings, f"busy{calls}")
    waits = [
        (f"t{i}", Contribution("called", KEY, {"called": 1}, {"wait": 5400.0 * (i + 1) / calls}))
        for i in range(calls)
    ]
    for _ in range(2):
        await store.add_ticket_cells(waits)
        [cell] = await store.ticket_cells.find({}).to_list()
        assert not [k for k in cell if "." in k]
        assert (cell["n"], cell["sketch"]["wait"]["n"], len(cell["seen"])) == (
            {"called": calls}, calls, calls,
        )  # fmt: skip


async def test_one_counters_backlog_batch_counts_every_ticket(settings: Settings) -> None:
    """A one-counter site's hour folded as one full consumer batch (a backlog after reporting
    was down): FETCH_BATCH / 4 tickets issued, called, started and completed at counter 1,
    each with its own wait and service time. The day summary shows every one called and
    completed with every wait and service time, and the same after the batch comes again."""
    site, t0 = KEY.site, datetime(2026, 11, 29, 2, 0, tzinfo=UTC)  # 09:00 WIB
    events: list[Any] = []
    n = FETCH_BATCH // 4
    for i in range(n):
        base = {"ticket_id": f"t{i}", "request_id": f"r{i}", "session_id": "s",
                "service": "KTP-CETAK", "number": f"B-{i + 1:03d}", "issued_at": t0}  # fmt: skip
        called = t0 + timedelta(seconds=60 * (i + 1) + 7 * i)
        done = called + timedelta(seconds=45 * (i + 1))
        at_counter = {**base, "counter": "1", "called_at": called}
        events += [
            new_event(TicketIssued(**base, waiting_ahead=i), site=site, at=t0),
            new_event(TicketCalled(**at_counter), site=site, at=called),
            new_event(TicketStarted(**at_counter, started_at=called), site=site, at=called),
            new_event(TicketCompleted(**at_counter, completed_at=done), site=site, at=done),
        ]
    reporting = Reporting(store=await _store(settings, "backlog"))
    for _ in range(2):
        await reporting.fold(events)
        day = await reporting.day_summary(site, t0.date())
        assert (day.issued, day.called, day.completed) == (n, n, n)
        waits, services = day.wait_seconds, day.service_seconds
        longest_wait, longest_service = 60.0 * n + 7 * (n - 1), 45.0 * n
        assert (waits.count, waits.max, services.count, services.max) == (
            n, longest_wait, n, longest_service,
        )  # fmt: skip
