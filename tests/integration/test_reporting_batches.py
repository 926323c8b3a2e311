"""Reporting's batch fold on the real embedded store (ADR 0170): a crash between the facts and
the cells, a batch that overlaps facts already counted, and two instances folding the same
events in different batches all end with every fact counted once."""

from __future__ import annotations

import asyncio
import random
from datetime import date
from typing import Any

import pytest

from giliran.settings import Settings
from giliran.store import connect
from services.reporting.cells import Contribution, tally
from services.reporting.handlers import Reporting
from services.reporting.store import FactStore
from tests.unit.test_projection_properties import lifecycle

pytestmark = pytest.mark.integration
DAY = date(2026, 11, 29)
SITE = "cikarang-utara"


class Crash(Exception):
    pass


class CrashBeforeCells(FactStore):
    """The real store, except that the next `crashes` cell writes die before reaching it, as a
    kill -9 after the facts were written would."""

    crashes = 0

    async def add_ticket_cells(self, contributions: Any) -> None:
        if self.crashes:
            self.crashes -= 1
            raise Crash
        await super().add_ticket_cells(contributions)


async def _store(settings: Settings, name: str, kind: type[FactStore] = FactStore) -> Any:
    store = kind(connect(settings.mongo_url)[f"{settings.db_prefix}_{name}"])
    await store.ensure_indexes()
    return store


def _day(n: int) -> list[Any]:
    return [e for i in range(1, n + 1) for e in lifecycle(i, 60 * i, 300, False, eta_error=30)]


async def _figures(reporting: Reporting) -> tuple[int, ...]:
    s = await reporting.day_summary(SITE, DAY)
    assert s.eta is not None
    return (s.submitted, s.issued, s.called, s.started, s.completed, s.wait_seconds.count,
            s.service_seconds.count, s.eta.quoted)  # fmt: skip


@pytest.mark.parametrize("tickets", [3, 7])  # a findAndModify per ticket; one bulk write for all
async def test_a_crash_between_facts_and_cells_is_made_good_by_the_redelivery(
    settings: Settings, tickets: int
) -> None:
    store = await _store(settings, f"batch_crash{tickets}", CrashBeforeCells)
    reporting = Reporting(store=store)
    events = _day(tickets)
    store.crashes = 1
    with pytest.raises(Crash):
        await reporting.fold(events)  # facts written, cells not: the batch is not acked
    # Redelivered whole: the facts have folded every ticket and request event already, so they
    # are named duplicates — and their cell contributions are made all the same.
    duplicates = await reporting.fold(events)
    remembered = {e.id for e in events if type(e.data).__name__.startswith(("Ticket", "Request"))}
    assert duplicates == remembered
    assert await _figures(reporting) == (tickets,) * 8
    # And once more (a second redelivery): nothing moves.
    await reporting.fold(list(reversed(events)))
    assert await _figures(reporting) == (tickets,) * 8


async def test_a_batch_overlapping_facts_already_counted_adds_only_the_new_ones(
    settings: Settings,
) -> None:
    store = await _store(settings, "batch_overlap")
    key_events = _day(2)
    reporting = Reporting(store=store)
    first_ticket = [e for e in key_events if getattr(e.data, "ticket_id", "") == "t1"]
    await reporting.fold(first_ticket)  # t1's facts counted in its cells
    await reporting.fold(key_events)  # one write per cell would match nothing: settled per fact
    assert await _figures(reporting) == (2, 2, 2, 2, 2, 2, 2, 2)
    total = tally(await store.ticket_cells.find({}).to_list())
    assert total.sketch("wait").sum_ms == 60_000 + 120_000


async def test_two_instances_folding_the_same_events_in_different_batches(
    settings: Settings,
) -> None:
    """Each instance gets every event (as after redeliveries), cut into different batches in
    different orders, folded at the same time against one database."""
    events = _day(8)
    rng = random.Random(17)
    stores = [await _store(settings, "batch_two") for _ in range(2)]

    async def instance(store: FactStore) -> None:
        mine = events[:]
        rng.shuffle(mine)
        reporting = Reporting(store=store)
        while mine:
            size = rng.randint(1, 12)
            batch, mine = mine[:size], mine[size:]
            await reporting.fold(batch)

    await asyncio.gather(*(instance(s) for s in stores))
    reporting = Reporting(store=stores[0])
    assert await _figures(reporting) == (8, 8, 8, 8, 8, 8, 8, 8)
    # The same figures as one instance folding one event at a time into a fresh database.
    alone = Reporting(store=await _store(settings, "batch_alone"))
    for event in events:
        await alone.fold([event])
    assert await _figures(alone) == await _figures(reporting)
    assert (await alone.day_summary(SITE, DAY)) == (await reporting.day_summary(SITE, DAY))


async def test_a_cell_write_per_cell_not_per_fact(settings: Settings) -> None:
    """Counting what reaches the store: a batch of three tickets' calls at one counter is one
    cell write, not three."""
    store = await _store(settings, "batch_writes")
    writes: list[str] = []
    real = store.ticket_cells

    class Counting:
        def __getattr__(self, name: str) -> Any:
            attribute = getattr(real, name)
            if name in ("update_one", "bulk_write"):
                writes.append(name)
            return attribute

    store.ticket_cells = Counting()
    called = [Contribution("called", _key(), {"called": 1}, {"wait": float(s)}) for s in (1, 2, 3)]
    await store.add_ticket_cells([(f"t{i}", c) for i, c in enumerate(called)])
    # one to create the new cell, one to add the three facts
    assert writes == ["bulk_write", "update_one"]
    [cell] = await real.find({}).to_list()
    assert cell["n"] == {"called": 3} and len(cell["seen"]) == 3


def _key() -> Any:
    from services.reporting.cells import CellKey

    return CellKey(SITE, "2026-11-29", "s", "KIA", "09", "1")


async def test_the_running_service_folds_batches_without_touching_an_inbox(
    settings: Settings,
) -> None:
    """Through the real consumer: a lifecycle's events published at once are counted, timed per
    batch, a copy is named a duplicate, and reporting's inbox collection stays empty."""
    from tests.conftest import eventually, publish, running

    events = _day(2)
    async with running("reporting", settings) as svc:
        for event in events:
            await publish(settings, event)
        await publish(settings, events[1], msg_id=f"{events[1].id}-again")
        reporting: Reporting = svc.app.state.reporting

        async def counted() -> bool:
            s = await reporting.day_summary(SITE, DAY)
            return (s.submitted, s.completed) == (2, 2)

        await eventually(counted, within=20)

        async def copy_named() -> bool:
            metrics = (await svc.http.get("/metrics")).text
            return 'outcome="duplicate"' in metrics and 'type="batch"' in metrics

        await eventually(copy_named, within=20)
        db = svc.runtime.db
        assert await db["inbox_reporting_projections"].count_documents({}) == 0


@pytest.mark.parametrize("tickets", [1, 5])  # a findAndModify per document; one bulk write
async def test_event_ids_that_are_no_field_names_fold_and_are_known_again(
    settings: Settings, tickets: int
) -> None:
    # An id comes from a message body: `.` and `$` in it made the whole batch's write fail.
    store = await _store(settings, f"batch_ids_{tickets}")
    events = [
        e.model_copy(update={"id": f"x.{n}.$bad..{'y' * 40}"}) for n, e in enumerate(_day(tickets))
    ]
    reporting = Reporting(store=store)
    assert await reporting.fold(events) == set()
    again = await reporting.fold(events)  # a redelivery of all of them: each one named
    ticket_events = {e.id for e in events if type(e.data).__name__.startswith("Ticket")}
    assert ticket_events and ticket_events <= again
    assert await _figures(reporting) == (tickets,) * 8
