"""ADR 0203 over the real store and NATS: a call is one conditional write of the ticket into its
counter's seat (a unique index), so a counter calls one ticket at a time whatever this
instance's memory missed, another site's counter of the same id is another seat, the ratio of
priority calls carries from ticket to ticket, and tickets called by the code before are seated
when the queue starts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from giliran.contracts import PriorityReason, TicketCalled, new_event, utcnow
from giliran.settings import Settings
from giliran.store import STORE_COMMANDS, connect, instant
from services.queue.desk import Desk as QueueDesk
from services.queue.handlers import Queue
from services.queue.store import TicketStore
from tests.conftest import RunningService, publish, request_event, running
from tests.integration.test_queue_actions import API, SITE, Desk, issued

pytestmark = pytest.mark.integration


def writes(command: str, collection: str) -> int:
    return STORE_COMMANDS.counts.get((command, collection), 0)


def other_instance(svc: RunningService) -> QueueDesk:
    """A second queue instance in this process: its own memory, the same store (its events stay
    in the outbox: the running service's relay publishes them)."""
    queue = svc.app.state.queue
    return QueueDesk(
        Queue(store=TicketStore(queue.store.tickets.database), catalogue=queue.catalogue)
    )


async def test_a_call_is_one_write_and_the_counter_is_not_written(settings: Settings) -> None:
    async with running("queue", settings) as svc:
        tickets = [(await issued(svc, request_event(["KTP-REKAM"])))[0] for _ in range(3)]
        desk = Desk(svc.http, "1")
        await desk.counter_action("open", services=["KTP-REKAM"])
        for ticket in tickets:
            before = writes("findAndModify", "tickets"), writes("findAndModify", "counters")
            called = await desk.call_next()
            assert called is not None and called["ticket_id"] == ticket["ticket_id"]
            # The ticket's write alone: no counter reservation (ADR 0161's, before).
            assert (writes("findAndModify", "tickets"), writes("findAndModify", "counters")) == (
                before[0] + 1,
                before[1],
            )
            await desk.ok(ticket["ticket_id"], "complete")


async def test_the_seat_holds_when_memory_missed_another_instances_call(
    settings: Settings,
) -> None:
    """The bus watch lost the other instance's call (plain NATS): this instance's memory says the
    counter is free; its call's write is refused by the seat and the click gets 409 with the
    other call's number. Forged bus events change nothing either: the store decides."""
    async with running("queue", settings) as svc:
        queue = svc.app.state.queue
        queue.memory.on_event = lambda *_: None  # every watch message lost
        first, second, third = [
            (await issued(svc, request_event(["KTP-REKAM"])))[0] for _ in range(3)
        ]
        desk = Desk(svc.http, "1")
        assert (await desk.call_next() or {})["ticket_id"] == first["ticket_id"]
        await desk.ok(first["ticket_id"], "complete")  # memory: counter 1 is free
        other = other_instance(svc)
        # The other instance's officer picks the third: this memory still has the second
        # waiting first, a ticket the seat alone can keep from being called at counter 1.
        by_other = await other.call(SITE, "1", third["ticket_id"])
        assert by_other.status == "called"
        # A forged event saying counter 1 called a ticket that does not exist.
        forged = new_event(
            TicketCalled(
                ticket_id="forged", request_id="forged", session_id=first["session_id"],
                service="KTP-REKAM", number="A-999", issued_at=utcnow(), counter="1",
                called_at=utcnow(),
            ),
            site=SITE,
        )  # fmt: skip
        await publish(settings, forged)
        r = await svc.http.post(f"{API}/counters/1/call-next")
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "counter_busy"
        assert third["number"] in r.json()["error"]["message_en"]
        seated = await queue.store.tickets.find(
            {"counter": "1", "status": {"$in": ["called", "serving"]}}
        ).to_list()
        assert [d["_id"] for d in seated] == [third["ticket_id"]]
        # Once the other instance's ticket leaves the counter, this one calls the next.
        await other.complete(SITE, third["ticket_id"])
        assert (await desk.call_next() or {})["ticket_id"] == second["ticket_id"]


def two_sites(directory: Path) -> None:
    """cikarang-utara and a copy of it under another slug: both have a counter "1"."""
    source = Settings().catalogue_dir
    for file in source.iterdir():
        (directory / file.name).write_text(file.read_text())
    text = (source / "cikarang-utara.yaml").read_text()
    (directory / "cikarang-barat.yaml").write_text(
        text.replace("site: cikarang-utara", "site: cikarang-barat")
        .replace("Cikarang Utara", "Cikarang Barat")
        .replace('"32.16.09"', '"32.16.10"')
    )


async def test_another_sites_counter_of_the_same_id_is_another_seat(
    settings: Settings, tmp_path: Path
) -> None:
    two_sites(tmp_path)
    settings = settings.model_copy(update={"catalogue_dir": tmp_path})
    async with running("queue", settings) as svc:
        [here] = await issued(svc, request_event(["KTP-REKAM"]))
        there = request_event(
            ["KTP-REKAM"], site="cikarang-barat", session_id="cikarang-barat-20261207"
        )
        await publish(settings, there)
        store = svc.app.state.queue.store

        async def issued_there() -> Any:
            return await store.tickets.find_one({"request_id": there.data.request_id})

        from tests.conftest import eventually

        there_ticket = await eventually(issued_there, within=15)
        assert (await Desk(svc.http, "1").call_next() or {})["ticket_id"] == here["ticket_id"]
        r = await svc.http.post(
            f"/api/v1/sites/cikarang-barat/counters/1/tickets/{there_ticket['_id']}/call"
        )
        assert r.status_code == 200, r.text
        # And a ticket of another site named at this site's counter is not found here.
        r = await svc.http.post(f"{API}/counters/2/tickets/{there_ticket['_id']}/call")
        assert r.status_code == 404, r.text


async def test_the_priority_ratio_carries_from_ticket_to_ticket_across_instances(
    settings: Settings,
) -> None:
    """The counter's memory of the ratio is kept on each called ticket: a call made by another
    instance continues it (three normal calls, then the priority one)."""
    async with running("queue", settings) as svc:
        kinds: dict[str, str] = {}
        for i in range(5):
            priority = PriorityReason.ELDERLY if i == 4 else None
            [t] = await issued(svc, request_event(["KTP-REKAM"], priority=priority))
            kinds[t["ticket_id"]] = "P" if priority else "N"
        desk, other = Desk(svc.http, "1"), other_instance(svc)
        await desk.counter_action("open", services=["KTP-REKAM"])
        order = ""
        for turn in range(4):
            if turn == 2:  # the third call through the other instance
                view = await other.call_next(SITE, "1")
                assert view is not None
                ticket_id = view.ticket_id
                await other.complete(SITE, ticket_id)
                svc.app.state.queue.memory.forget(SITE)  # as its event would
            else:
                called = await desk.call_next()
                assert called is not None
                ticket_id = called["ticket_id"]
                await desk.ok(ticket_id, "complete")
            order += kinds[ticket_id]
        assert order == "NNNP"


async def test_a_ticket_called_by_the_code_before_is_seated_at_start(settings: Settings) -> None:
    """A queue upgraded while a ticket was being served: the ticket takes its counter's seat when
    the queue starts, so the counter is busy until that ticket is done."""
    client = connect(settings.mongo_url)
    now = utcnow()
    try:
        await client[f"{settings.db_prefix}_queue"]["tickets"].insert_one(
            {
                "_id": "before-KTP-REKAM", "site": SITE, "session_id": "test-session",
                "request_id": "before", "service": "KTP-REKAM", "number": "A-900",
                "status": "serving", "counter": "1", "called_at": instant(now),
                "last_call_at": instant(now), "issued_at": instant(now - timedelta(minutes=5)),
                "queued_at": instant(now - timedelta(minutes=5)), "arrived": True,
                "held": False, "multi": False, "recalls": 0,
            }
        )  # fmt: skip
    finally:
        await client.close()
    async with running("queue", settings) as svc:
        await issued(svc, request_event(["KTP-REKAM"]))
        r = await svc.http.post(f"{API}/counters/1/call-next")
        assert r.status_code == 409 and "A-900" in r.json()["error"]["message_en"], r.text
        assert (await Desk(svc.http, "2").call_next()) is not None  # another counter calls
