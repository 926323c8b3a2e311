"""Intake follows tickets with one conditional write per event and no inbox (ADR 0175), against
a real nats-server, the embedded store and TWO intake instances sharing the consumer: events out
of order and each delivered twice leave one entry at its furthest status; a kiosk answer whose
ticket the other instance wrote still shows it (the store read after the in-process wait), and
that wait reads the store at most twice (ADR 0195); a fetched batch with duplicates and events
out of order is one bulk write and leaves each ticket at its furthest status."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from giliran.settings import Settings
from tests.conftest import RunningService, eventually, publish, running
from tests.integration.test_intake_registration import bus_events
from tests.integration.test_intake_status import quick, registered, ticket_events  # noqa: F401

pytestmark = pytest.mark.integration

REQUEST = {
    "site": "cikarang-utara",
    "services": ["KTP-CETAK", "KK-UBAH"],
    "name": "Siti Aminah",
    "nik": "3216094512900001",
    "consent": False,
}


async def test_out_of_order_and_twice_delivered_events_leave_one_entry_at_its_furthest(
    quick: Settings,  # noqa: F811
) -> None:
    async with running("intake", quick) as one, running("intake", quick) as other:
        request = await registered(one)
        issued, called, completed = ticket_events(request)
        # Newest first, each twice (distinct Nats-Msg-Id, so JetStream does not drop the copy),
        # spread over both instances by the shared durable consumer.
        for copy, event in enumerate((completed, called, issued, called, completed, issued)):
            await publish(quick, event, msg_id=f"{event.id}-{copy}")

        async def furthest() -> dict[str, Any] | None:
            doc = await one.app.state.intake.store.get(request["request_id"])
            tickets = doc["tickets"] if doc else {}
            entry = tickets.get(issued.data.ticket_id)
            return tickets if entry and entry["status"] == "completed" else None

        tickets = await eventually(furthest)
        await asyncio.sleep(1.0)  # any copy still on its way has arrived by now
        tickets = await furthest()
        assert tickets is not None and list(tickets) == [issued.data.ticket_id]
        entry = tickets[issued.data.ticket_id]
        assert (entry["number"], entry["counter"]) == ("B-001", "2")
        # Every copy reached a handler (applied, or found to change nothing); no inbox for it.
        handled = 0
        for svc in (one, other):
            metrics = (await svc.http.get("/metrics")).text
            handled += sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("giliran_events_handled_total{")
                and 'consumer="intake-tickets"' in line
                and ('outcome="handled"' in line or 'outcome="duplicate"' in line)
            )
        assert handled == 6
        inbox = one.runtime.db["inbox_intake_tickets"]  # created empty by the runtime at start
        assert await inbox.find_one({}) is None


async def test_a_ticket_written_by_the_other_instance_is_in_the_kiosk_answer(
    settings: Settings,
) -> None:
    """The instance that took the registration does not consume ticket events here: the
    answer's wait finds nothing in process and reads the ticket the other instance wrote."""
    async with (
        running("intake", settings) as kiosk_side,
        running("intake", settings),
        running("queue", settings),
    ):
        for consumer in kiosk_side.runtime.consumers:
            await consumer.stop()
        submitted = await kiosk_side.http.post("/api/v1/requests", json=REQUEST)
        assert submitted.status_code == 201, submitted.text
        assert [t["number"] for t in submitted.json()["tickets"]] == ["B-001", "F-001"]


async def test_a_fetched_batch_is_one_store_command_and_its_redelivery_changes_nothing(
    quick: Settings,  # noqa: F811
) -> None:
    """The consumer's batch handler called as the consumer calls it, against the real store:
    issued and called for three requests in one command; the same batch again (a redelivery
    after kill -9) is refused by the filters and changes nothing."""
    async with running("intake", quick) as svc:
        intake = svc.app.state.intake
        requests = [await registered(svc, n) for n in (1, 2, 3)]
        batch = []
        for n, request in enumerate(requests, start=1):
            issued, called, _ = ticket_events(request, n)
            batch += [issued, called]

        async def updates() -> float:
            metrics = (await svc.http.get("/metrics")).text
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("giliran_store_commands_total{")
                and 'collection="requests"' in line
                and 'command="update"' in line
            )

        before = await updates()
        assert await intake.record_tickets(batch) == set()
        # One command for six events (the relay may remove a registration's events meanwhile).
        assert await updates() - before <= 2

        async def states() -> list[tuple[str, str | None]]:
            found = []
            for request in requests:
                doc = await intake.store.get(request["request_id"])
                found += [(t["status"], t["counter"]) for t in doc["tickets"].values()]
            return found

        assert await states() == [("called", "2")] * 3
        unchanged = await intake.record_tickets(batch)
        assert unchanged == {e.id for e in batch if e.type.endswith("issued.v1")}
        assert await states() == [("called", "2")] * 3


async def test_a_registrations_events_leave_at_once_without_the_relays_query(
    quick: Settings,  # noqa: F811
) -> None:
    """ADR 0178: submit publishes what it stored itself; with the relay's loop stopped the event
    still reaches the bus and the request's outbox is emptied."""
    async with (
        running("intake", quick) as svc,
        bus_events(quick, "giliran.cikarang-utara.request.submitted") as published,
    ):
        relay = svc.runtime.relay
        assert relay is not None
        await relay.stop()
        request = await registered(svc)

        async def out() -> bool:
            return any(e["data"]["request_id"] == request["request_id"] for e in published)

        await eventually(out)
        stored = await svc.app.state.intake.store.requests.find_one({"_id": request["request_id"]})
        assert stored["outbox_n"] == 0 and not stored.get("outbox")


async def store_commands(svc: RunningService, command: str, collection: str) -> float:
    """How many `command`s on `collection` the service has sent (its PyMongo monitoring)."""
    metrics = (await svc.http.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("giliran_store_commands_total{")
        and f'collection="{collection}"' in line
        and f'command="{command}"' in line
    )


async def test_a_kiosk_wait_whose_ticket_never_comes_reads_the_store_twice_at_most(
    settings: Settings,
) -> None:
    """ADR 0195: no queue, so no ticket comes; the answer waits its full second and looks in
    the store at half the wait and at its end only (it used to read after every quiet 0.25 s:
    four reads here). The relay's idle polls, also `find requests`, are stopped to count."""
    waiting = settings.model_copy(update={"ticket_wait_seconds": 1.0})
    async with running("intake", waiting) as svc:
        relay = svc.runtime.relay
        assert relay is not None
        await relay.stop()
        before = await store_commands(svc, "find", "requests")
        submitted = await svc.http.post("/api/v1/requests", json=REQUEST)
        assert submitted.status_code == 202, submitted.text
        assert submitted.json()["tickets"] == []
        assert await store_commands(svc, "find", "requests") - before <= 2


async def test_a_kiosk_answer_its_own_consumer_ticketed_reads_no_request(
    settings: Settings,
) -> None:
    """One intake instance and the real queue: the answer is built from the request as stored
    and the entries its own consumer wrote, so the registration reads no request at all."""
    async with running("intake", settings) as svc, running("queue", settings):
        relay = svc.runtime.relay
        assert relay is not None
        await relay.stop()  # its idle polls are `find requests` too; relay_now still publishes
        before = await store_commands(svc, "find", "requests")
        submitted = await svc.http.post("/api/v1/requests", json=REQUEST)
        assert submitted.status_code == 201, submitted.text
        assert [t["number"] for t in submitted.json()["tickets"]] == ["B-001", "F-001"]
        assert await store_commands(svc, "find", "requests") - before == 0


async def test_duplicates_and_out_of_order_events_in_one_batch_leave_the_furthest_entry(
    quick: Settings,  # noqa: F811
) -> None:
    """One fetched batch holding, per request, completed before called before issued and each
    twice (a redelivery mixed with new events): each ticket ends completed at its counter, and
    the same batch again (kill -9 before the ack) changes nothing."""
    async with running("intake", quick) as svc:
        intake = svc.app.state.intake
        requests = [await registered(svc, n) for n in (1, 2)]
        batch = []
        for n, request in enumerate(requests, start=1):
            issued, called, completed = ticket_events(request, n)
            batch += [completed, called, issued, called, completed, issued]

        async def states() -> list[tuple[str, str, str | None]]:
            found = []
            for request in requests:
                doc = await intake.store.get(request["request_id"])
                found += [(t["number"], t["status"], t["counter"]) for t in doc["tickets"].values()]
            return found

        await intake.record_tickets(batch)
        assert await states() == [("B-001", "completed", "2"), ("B-002", "completed", "2")]
        unchanged = await intake.record_tickets(batch)
        # Only a completed event's own write may match again (same values); the others are
        # refused by the filter and reported as changing nothing.
        assert unchanged == {e.id for e in batch if not e.type.endswith("completed.v1")}
        assert await states() == [("B-001", "completed", "2"), ("B-002", "completed", "2")]


async def test_a_redelivered_batch_is_settled_in_one_read_and_no_write(
    quick: Settings,  # noqa: F811
) -> None:
    """ADR 0197: when a batch's bulk does not all match (here: every event already applied, a
    redelivery after kill -9 before the ack), its requests are read in one command and the
    events applied in process; nothing differs, so nothing is written. (Before: each issued
    event cost two refused writes and a read: 3 requests, 13 commands.)"""
    async with running("intake", quick) as svc:
        relay = svc.runtime.relay
        assert relay is not None
        intake = svc.app.state.intake
        requests = [await registered(svc, n) for n in (1, 2, 3)]
        await relay.stop()  # its idle polls are requests commands too
        batch = []
        for n, request in enumerate(requests, start=1):
            issued, called, _ = ticket_events(request, n)
            batch += [issued, called]
        assert await intake.record_tickets(batch) == set()

        async def commands() -> float:
            return sum(
                [await store_commands(svc, command, "requests") for command in ("find", "update")]
            )

        before = await commands()
        unchanged = await intake.record_tickets(batch)
        assert await commands() - before <= 2  # the bulk that did not all match, one read
        assert unchanged == {e.id for e in batch if e.type.endswith("issued.v1")}


def renamed(event: Any, ticket_id: str) -> Any:
    """The event for another ticket of the same request."""
    return event.model_copy(
        update={
            "id": f"{event.id}-{ticket_id}",
            "data": event.data.model_copy(update={"ticket_id": ticket_id}),
        }
    )


async def test_two_instances_settling_the_same_requests_at_once_lose_no_ticket(
    quick: Settings,  # noqa: F811
) -> None:
    """Two intake instances settle batches for the same requests at the same moment, each for
    ANOTHER ticket of each request (ticket ids with a dot, which no conditional write can
    address, so both take the read-and-decide path; a duplicate or out-of-order event takes it
    too). Both read the same version; the second write is refused, reads again and decides
    again: each request ends with both tickets, neither write lost."""
    async with running("intake", quick) as one, running("intake", quick) as other:
        requests = [await registered(one, n) for n in range(1, 7)]
        first, second = [], []
        for n, request in enumerate(requests, start=1):
            issued, called, completed = ticket_events(request, n)
            a, b = f"{request['request_id']}.a", f"{request['request_id']}.b"
            first += [renamed(e, a) for e in (completed, issued)]
            second += [renamed(e, b) for e in (called, issued, called)]
        await asyncio.gather(
            one.app.state.intake.record_tickets(first),
            other.app.state.intake.record_tickets(second),
        )
        for request in requests:
            doc = await one.app.state.intake.store.get(request["request_id"])
            found = {t: (e["status"], e["counter"]) for t, e in doc["tickets"].items()}
            assert found == {
                f"{request['request_id']}.a": ("completed", "2"),
                f"{request['request_id']}.b": ("called", "2"),
            }
