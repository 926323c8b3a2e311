"""Notification figures from cells on the real embedded store (ADR 0224): each delivery counted
once in its current state under duplicates, redelivery after a crash, receipts before their
`sent`, two instances and replay; another site's event moves nothing; the day summary's reads do
not grow with the day's notifications; days folded before the cells existed are filled once."""

from __future__ import annotations

import asyncio
import io
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from giliran.contracts import (
    DeliveryOutcome,
    Event,
    NotificationFailed,
    NotificationReceipt,
    NotificationSent,
    new_event,
)
from giliran.settings import Settings
from giliran.store import STORE_COMMANDS, connect
from services.reporting.cells import CellKey, Contribution
from services.reporting.figures import ChannelFigures
from services.reporting.handlers import Reporting
from services.reporting.rebuild import rebuild
from services.reporting.store import FactStore
from tests.conftest import eventually, publish, running

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
OTHER_SITE = "botram-babelan"
DAY = date(2026, 11, 29)
AT = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)  # 10:00 WIB


class Crash(Exception):
    pass


class CrashBeforeCells(FactStore):
    """The real store, except that the next `crashes` notification cell writes die before they
    reach it, as a kill -9 after the facts were written would."""

    crashes = 0

    async def add_notification_cells(self, contributions: Any) -> None:
        if self.crashes:
            self.crashes -= 1
            raise Crash
        await super().add_notification_cells(contributions)


def _facts(delivery_id: str, channel: str) -> dict[str, Any]:
    return {"delivery_id": delivery_id, "cause_event_id": "e", "ticket_id": f"t-{delivery_id}",
            "cause_type": "giliran.ticket.called.v1", "channel": channel,
            "template": "ticket_called"}  # fmt: skip


def sent(
    delivery_id: str, channel: str = "sms", cost: int = 2, at: datetime = AT, site: str = SITE
) -> Event[NotificationSent]:
    data = NotificationSent(**_facts(delivery_id, channel), cost_units=cost, sent_at=at)
    return new_event(data, site=site, at=at)


def receipt(
    delivery_id: str, outcome: DeliveryOutcome, channel: str = "sms", site: str = SITE
) -> Event[NotificationReceipt]:
    at = AT + timedelta(minutes=1)
    data = NotificationReceipt(**_facts(delivery_id, channel), outcome=outcome, reported_at=at)
    return new_event(data, site=site, at=at)


def failed(
    delivery_id: str, channel: str = "sms", refused: bool = False, site: str = SITE
) -> Event[NotificationFailed]:
    data = NotificationFailed(
        **_facts(delivery_id, channel), reason="no", failed_at=AT, refused=refused
    )
    return new_event(data, site=site, at=AT)


def a_day() -> list[Event[Any]]:
    """Every state a delivery ends in: sent and delivered, sent and undelivered (its report
    first in stream order), refused, failed then sent on retry (a later success wins), sent with
    no report yet."""
    return [
        sent("d1"),
        receipt("d1", DeliveryOutcome.DELIVERED),
        receipt("d2", DeliveryOutcome.UNDELIVERED),
        sent("d2"),
        failed("d3", channel="whatsapp", refused=True),
        failed("d4"),
        sent("d4", cost=3),
        sent("d5", channel="whatsapp", cost=0),
    ]


EXPECTED = {
    "sms": ChannelFigures(sent=3, cost_units=7, delivered=1, undelivered=1),
    "whatsapp": ChannelFigures(sent=1, failed=1, refused=1),
}


async def _store(settings: Settings, name: str, kind: type[FactStore] = FactStore) -> Any:
    store = kind(connect(settings.mongo_url)[f"{settings.db_prefix}_{name}"])
    await store.ensure_indexes()
    return store


async def _notifications(store: FactStore, site: str = SITE) -> dict[str, ChannelFigures]:
    return (await Reporting(store=store).day_summary(site, DAY)).notifications


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_each_delivery_counts_once_in_its_current_state_whatever_the_order(
    settings: Settings, seed: int
) -> None:
    """The day's events shuffled, some twice, cut into batches: a receipt may come before its
    `sent`, a `sent` before the failure it overrides."""
    store = await _store(settings, f"ncells_order{seed}")
    rng = random.Random(seed)
    events = a_day()
    delivered = events + rng.sample(events, 4)
    rng.shuffle(delivered)
    reporting = Reporting(store=store)
    while delivered:
        size = rng.randint(1, 4)
        batch, delivered = delivered[:size], delivered[size:]
        await reporting.fold(batch)
    assert await _notifications(store) == EXPECTED


async def test_a_receipt_before_its_sent_counts_nothing_until_the_sent_arrives(
    settings: Settings,
) -> None:
    store = await _store(settings, "ncells_early_receipt")
    reporting = Reporting(store=store)
    await reporting.fold([receipt("d1", DeliveryOutcome.DELIVERED)])
    assert await _notifications(store) == {}
    await reporting.fold([sent("d1")])
    assert await _notifications(store) == {"sms": ChannelFigures(sent=1, cost_units=2, delivered=1)}
    # ... and a receipt after its sent, in another batch, adds only the report.
    await reporting.fold([sent("d2"), sent("d1")])
    await reporting.fold([receipt("d2", DeliveryOutcome.UNDELIVERED)])
    assert await _notifications(store) == {
        "sms": ChannelFigures(sent=2, cost_units=4, delivered=1, undelivered=1)
    }


async def test_a_crash_between_facts_and_cells_is_made_good_by_the_redelivery(
    settings: Settings,
) -> None:
    store = await _store(settings, "ncells_crash", CrashBeforeCells)
    reporting = Reporting(store=store)
    events = a_day()
    first, rest = events[:4], events[4:]
    await reporting.fold(first)
    store.crashes = 1
    with pytest.raises(Crash):
        await reporting.fold(rest)  # facts written, cells not: the batch is not acked
    await reporting.fold(rest)  # redelivered whole
    assert await _notifications(store) == EXPECTED
    await reporting.fold(list(reversed(events)))  # and everything once more
    assert await _notifications(store) == EXPECTED


async def test_two_instances_folding_the_same_events_at_once(settings: Settings) -> None:
    """Each instance gets every event (as after redeliveries), in its own order and batches, at
    the same time against one database: a `sent` in one and its receipt in the other."""
    events = a_day() + [sent(f"x{i}", cost=1) for i in range(6)]
    events += [receipt(f"x{i}", DeliveryOutcome.DELIVERED) for i in range(6)]
    stores = [await _store(settings, "ncells_two") for _ in range(2)]
    rng = random.Random(7)

    async def instance(store: FactStore) -> None:
        mine = events[:]
        rng.shuffle(mine)
        reporting = Reporting(store=store)
        while mine:
            size = rng.randint(1, 5)
            batch, mine = mine[:size], mine[size:]
            await reporting.fold(batch)

    await asyncio.gather(*(instance(s) for s in stores))
    sms = EXPECTED["sms"].model_copy(update={"sent": 9, "cost_units": 13, "delivered": 7})
    assert await _notifications(stores[0]) == {**EXPECTED, "sms": sms}


async def test_another_sites_event_moves_no_figure_of_the_delivery_it_names(
    settings: Settings,
) -> None:
    """Events of OTHER_SITE naming SITE's delivery id (a mix-up, or a body forged by the one
    user allowed to publish notification events), before, amid and after SITE's own, in batches
    and one at a time: SITE's figures and fact stay as SITE's events alone make them, and
    OTHER_SITE's as its events alone make them — a delivery is its site's (ADR 0229). Before
    ADR 0224 the fact document took the other site; under ADR 0224 the first site to name the
    id took the delivery and the genuine site's later events were dropped."""
    store = await _store(settings, "ncells_other_site")
    reporting = Reporting(store=store)
    await reporting.fold([sent("d1"), receipt("d1", DeliveryOutcome.DELIVERED)])
    own = {"sms": ChannelFigures(sent=1, cost_units=2, delivered=1)}
    assert await _notifications(store) == own
    forged = [
        sent("d1", cost=50, site=OTHER_SITE),
        receipt("d1", DeliveryOutcome.UNDELIVERED, site=OTHER_SITE),
        failed("d1", refused=True, site=OTHER_SITE),
    ]
    await reporting.fold(forged)  # a later batch
    await reporting.fold([sent("d2"), *forged, sent("d2")])  # and amid SITE's own events
    for event in forged:
        await reporting.fold([event])  # and one at a time
    assert await _notifications(store) == {"sms": ChannelFigures(sent=2, cost_units=4, delivered=1)}
    alone = await _store(settings, "ncells_other_site_alone")
    await Reporting(store=alone).fold(forged)
    assert await _notifications(store, OTHER_SITE) == await _notifications(alone, OTHER_SITE)
    fact = await store.notifications.find_one({"site": SITE, "delivery_id": "d1"})
    assert fact is not None and fact["cost_units"] == 2 and fact["receipt"] == "delivered"


async def test_another_sites_event_first_does_not_take_the_delivery(settings: Settings) -> None:
    """OTHER_SITE's report naming a delivery reaches reporting before the delivery's own `sent`;
    SITE's `sent` and report follow in later batches: SITE counts the delivery, sent and
    delivered, and OTHER_SITE counts nothing (a report alone is no delivery). Under ADR 0224 the
    other site's event created the document and SITE's events were acknowledged unwritten."""
    store = await _store(settings, "ncells_other_first")
    reporting = Reporting(store=store)
    await reporting.fold([receipt("y1", DeliveryOutcome.UNDELIVERED, site=OTHER_SITE)])
    await reporting.fold([sent("y1")])
    await reporting.fold([receipt("y1", DeliveryOutcome.DELIVERED)])
    assert await _notifications(store) == {"sms": ChannelFigures(sent=1, cost_units=2, delivered=1)}
    assert await _notifications(store, OTHER_SITE) == {}


async def test_another_sites_event_first_in_a_batch_keeps_the_real_one(
    settings: Settings,
) -> None:
    """One batch holds OTHER_SITE's report naming SITE's sent delivery, then SITE's real report:
    the real one is written and counted (under ADR 0224 the batch's fold dropped it)."""
    store = await _store(settings, "ncells_other_in_batch")
    reporting = Reporting(store=store)
    await reporting.fold([sent("x1")])
    await reporting.fold(
        [
            receipt("x1", DeliveryOutcome.UNDELIVERED, site=OTHER_SITE),
            receipt("x1", DeliveryOutcome.DELIVERED),
        ]
    )
    fact = await store.notifications.find_one({"site": SITE, "delivery_id": "x1"})
    assert fact is not None and fact["receipt"] == "delivered"
    assert await _notifications(store) == {"sms": ChannelFigures(sent=1, cost_units=2, delivered=1)}
    assert await _notifications(store, OTHER_SITE) == {}


def _commands_since(before: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    return {k: n - before.get(k, 0) for k, n in STORE_COMMANDS.counts.items()
            if n != before.get(k, 0)}  # fmt: skip


@pytest.mark.parametrize("deliveries", [20, 600])
async def test_the_day_summary_reads_the_same_whatever_the_number_of_notifications(
    settings: Settings, deliveries: int
) -> None:
    """The summary's store commands, counted by PyMongo's command monitoring: the same for 20
    and 600 deliveries (it read every notification fact of the day before: find + getMore),
    and none of them touches the facts."""
    store = await _store(settings, f"ncells_reads{deliveries}")
    reporting = Reporting(store=store)
    events = [sent(f"d{i}", at=AT + timedelta(seconds=7 * i)) for i in range(deliveries)]
    for start in range(0, deliveries, 64):
        await reporting.fold(events[start : start + 64])
    before = dict(STORE_COMMANDS.counts)
    summary = await reporting.day_summary(SITE, DAY)
    commands = _commands_since(before)
    figures = ChannelFigures(sent=deliveries, cost_units=2 * deliveries)
    assert summary.notifications == {"sms": figures}
    assert not [k for k in commands if k[1] == "notification_facts"], commands
    assert commands == {
        ("find", "ticket_cells"): 1, ("find", "request_cells"): 1,
        ("find", "notification_cells"): 1,
    }  # fmt: skip


def _as_before_cells(facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fact documents as the code before ADR 0224 wrote them: one per delivery id, its `_id`."""
    return [
        {
            **{k: v for k, v in d.items() if k != "delivery_id"},
            "_id": d.get("delivery_id", d["_id"]),
        }
        for d in facts
    ]


async def _summary(svc: Any) -> dict[str, Any]:
    r = await svc.http.get(f"/api/v1/sites/{SITE}/summary", params={"date": DAY.isoformat()})
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


def _shown(summary: dict[str, Any]) -> dict[str, ChannelFigures]:
    return {k: ChannelFigures(**v) for k, v in summary["notifications"].items()}


async def test_days_folded_before_the_cells_existed_are_filled_once(settings: Settings) -> None:
    """Facts as the code before ADR 0224 left them (no cells): the running service fills the
    cells from them once it runs, once; a fill that died half-way runs again without counting a
    delivery twice, nor does the consumer folding the same deliveries again; the day summary
    shows the old day's figures, marked partial until the fill is done."""
    store = await _store(settings, "reporting")  # the database `running` uses
    assert settings.database_name("reporting") == f"{settings.db_prefix}_reporting"
    events = a_day()
    await store.notifications.insert_many(_as_before_cells(await _facts_of(events, settings)))
    async with running("reporting", settings) as svc:
        assert _shown(await _filled(svc)) == EXPECTED
    assert await store.fill_cells("Asia/Jakarta") == 0  # done: not again
    await store.fills.delete_many({})  # as if the fill had died before marking itself done
    assert await store.fill_cells("Asia/Jakarta") == 5
    await Reporting(store=store).fold(events)  # and the consumer folding the same deliveries
    assert await _notifications(store) == EXPECTED


async def _filled(svc: Any) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        summary = await _summary(svc)
        return None if summary["notifications_partial"] else summary

    found: dict[str, Any] = await eventually(done, within=30)
    return found


async def test_the_fill_does_not_hold_the_service_back(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fill is held (as a long history would hold it): the service starts all the same,
    HTTP answers with the notification figures marked partial, and the consumer folds a new
    delivery meanwhile; released, the fill completes and the mark goes, nothing counted twice.
    Before ADR 0229 the fill ran inside startup: neither HTTP nor the bus started until it
    ended (this test then times out starting the service)."""
    store = await _store(settings, "reporting")
    events = a_day()
    await store.notifications.insert_many(_as_before_cells(await _facts_of(events, settings)))
    release, started = asyncio.Event(), asyncio.Event()
    fill = FactStore.fill_cells

    async def held(self: FactStore, timezone: str) -> int:
        started.set()
        await release.wait()
        return await fill(self, timezone)

    monkeypatch.setattr(FactStore, "fill_cells", held)
    async with asyncio.timeout(60), running("reporting", settings) as svc:
        await asyncio.wait_for(started.wait(), 30)
        meanwhile = await _summary(svc)
        assert meanwhile["notifications_partial"] is True
        assert _shown(meanwhile) == {}  # the old day's cells are not filled yet
        await publish(settings, sent("new", channel="whatsapp", cost=4))
        await eventually(
            lambda: _summary_has(svc, "whatsapp", ChannelFigures(sent=1, cost_units=4))
        )
        release.set()
        done = await _filled(svc)
    whatsapp = EXPECTED["whatsapp"].model_copy(update={"sent": 2, "cost_units": 4})
    assert _shown(done) == {**EXPECTED, "whatsapp": whatsapp}


async def _summary_has(svc: Any, channel: str, figures: ChannelFigures) -> bool:
    return _shown(await _summary(svc)).get(channel) == figures


async def _facts_of(events: list[Event[Any]], settings: Settings) -> list[dict[str, Any]]:
    """The fact documents the consumer writes for these events, without their cells."""
    scratch = await _store(settings, f"scratch{uuid.uuid4().hex[:6]}")
    from services.reporting import fold

    await scratch.save_notifications(fold.fold(events, "Asia/Jakarta").notifications)
    found: list[dict[str, Any]] = await scratch.notifications.find({}).to_list()
    return found


async def test_replay_rebuilds_the_live_notification_cells(settings: Settings) -> None:
    """Through the running service: the day's events published with copies and a receipt ahead
    of its sent; once the live side has counted them, a replay gives equal documents."""
    events = a_day()
    async with running("reporting", settings) as svc:
        for event in events:
            await publish(settings, event)
        for event in events[::3]:  # copies under new message ids: redelivered events
            await publish(settings, event, msg_id=uuid.uuid4().hex)
        store = svc.app.state.reporting.store

        async def counted() -> bool:
            return await _notifications(store) == EXPECTED

        await eventually(counted, within=20)
        result = await rebuild(settings, f"{settings.db_prefix}_nr", out=io.StringIO())
        assert result.equal, result.comparisons
        cells = next(c for c in result.comparisons if c.collection == "notification_cells")
        assert cells.live == cells.rebuilt == 2  # sms and whatsapp, all in one hour


async def test_a_busy_cell_counts_every_fact_of_a_large_batch(settings: Settings) -> None:
    """200 facts into one cell in one batch (a backlog's batch, or the fill): every one counted
    in the cell's figures. The embedded server stores the figures under literal dotted keys
    ("n.called") when one update names 64 paths (figures and marks), which no cell read adds up;
    the cell write is cut in parts below that (ADR 0224)."""
    store = await _store(settings, "ncells_busy")
    key = CellKey(SITE, DAY.isoformat(), "s", "KIA", "09", "1")
    called = [(f"t{i}", Contribution("called", key, {"called": 1})) for i in range(200)]
    await store.add_ticket_cells(called)
    await store.add_ticket_cells(called)  # and again: nothing more
    [cell] = await store.ticket_cells.find({}, {"seen": 0}).to_list()
    assert cell["n"] == {"called": 200}
    assert not [k for k in cell if "." in k], cell
    events = [sent(f"d{i}", at=AT + timedelta(seconds=i)) for i in range(100)]
    await Reporting(store=store).fold(events)
    assert await _notifications(store) == {"sms": ChannelFigures(sent=100, cost_units=200)}


async def test_a_batch_of_reports_is_one_fact_write_one_read_and_one_cell_write(
    settings: Settings,
) -> None:
    """Counted by command monitoring: a batch of `sent` creates its documents and reads none of
    them back; a later batch of their delivery reports reads them once (the report's cell is its
    sent's hour) and adds to the cell with one write, not one per delivery."""
    store = await _store(settings, "ncells_writes")
    reporting = Reporting(store=store)
    before = dict(STORE_COMMANDS.counts)
    await reporting.fold([sent(f"d{i}") for i in range(5)])
    assert _commands_since(before) == {
        ("update", "notification_facts"): 1,
        ("update", "notification_cells"): 2,  # the new cell created, then counted into
    }
    before = dict(STORE_COMMANDS.counts)
    await reporting.fold([receipt(f"d{i}", DeliveryOutcome.DELIVERED) for i in range(5)])
    assert _commands_since(before) == {
        ("update", "notification_facts"): 1,
        ("find", "notification_facts"): 1,
        ("update", "notification_cells"): 1,
    }
    assert await _notifications(store) == {
        "sms": ChannelFigures(sent=5, cost_units=10, delivered=5)
    }
