"""Report cells on the real embedded store: a fact is counted exactly once when its event is
redelivered after a crash, arrives again as another event, or is handled by two instances."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from giliran.settings import Settings
from giliran.store import connect
from services.reporting.cells import CellKey, Contribution, tally
from services.reporting.sketch import bucket
from services.reporting.store import FactStore

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
