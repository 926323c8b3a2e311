"""Two instances of each consuming service share the work through their durable pull consumers,
and every effect still happens exactly once: tickets, calls, notifications, report counts."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

import pytest

from giliran.contracts import CitizenRef
from giliran.settings import Settings
from giliran.store import count
from tests.conftest import (
    RunningService,
    eventually,
    nats_client,
    publish_many,
    request_event,
    running,
)

pytestmark = pytest.mark.integration
SITE = "cikarang-utara"
REQUESTS = 60


def handled(svc: RunningService) -> float:
    """Events this instance's consumers handled (from its own Prometheus registry)."""
    total = 0.0
    for metric in svc.runtime.registry.collect():
        if metric.name == "giliran_events_handled":
            total += sum(
                s.value
                for s in metric.samples
                if s.name.endswith("_total") and s.labels.get("outcome") == "handled"
            )
    return total


async def test_two_instances_of_each_service_do_everything_once(settings: Settings) -> None:
    events = [
        request_event(
            ["KTP-CETAK", "KIA"] if n % 3 == 0 else ["KTP-CETAK"],
            session_id="cikarang-utara-scale",
            citizen=CitizenRef(consent=True, phone=f"+62812{n:07d}"),
        )
        for n in range(REQUESTS)
    ]
    tickets_expected = sum(len(e.data.services) for e in events)
    async with AsyncExitStack() as stack:
        queues = [await stack.enter_async_context(running("queue", settings)) for _ in range(2)]
        notifies = [await stack.enter_async_context(running("notify", settings)) for _ in range(2)]
        reports = [
            await stack.enter_async_context(running("reporting", settings)) for _ in range(2)
        ]
        client = await stack.enter_async_context(nats_client(settings))
        await publish_many(settings, events)
        tickets = queues[0].app.state.queue.store.tickets

        async def all_issued() -> bool:
            return await count(tickets, {}) >= tickets_expected

        await eventually(all_issued, within=60)

        async def counter_loop(queue: RunningService, counter: str) -> int:
            served = 0
            idle = 0
            while idle < 10:
                r = await queue.http.post(f"/api/v1/sites/{SITE}/counters/{counter}/call-next")
                if r.status_code == 204:
                    idle += 1
                    await asyncio.sleep(0.05)
                    continue
                assert r.status_code == 200, r.text
                idle = 0
                ticket_id = r.json()["ticket"]["ticket_id"]
                done = await queue.http.post(
                    f"/api/v1/sites/{SITE}/counters/{counter}/tickets/{ticket_id}/complete"
                )
                assert done.status_code == 200, done.text
                served += 1
            return served

        # Counters 1-2 use instance A, 3-4 instance B: every action meets the other's writes.
        served = await asyncio.gather(
            *(counter_loop(queues[0 if c <= 2 else 1], str(c)) for c in range(1, 5))
        )
        assert sum(served) == tickets_expected
        assert await count(tickets, {"status": "completed"}) == tickets_expected

        deliveries = notifies[0].runtime.db["deliveries"]
        lifecycle = {"ticket_issued", "ticket_called", "ticket_completed"}

        async def all_sent() -> bool:
            done = await count(deliveries, {"status": "sent", "template": "ticket_completed"})
            return done >= tickets_expected

        await eventually(all_sent, within=90)
        docs = await deliveries.find(
            {}, {"cause_event_id": 1, "channel": 1, "ticket_id": 1, "template": 1, "status": 1}
        ).to_list()
        # Once per event, channel and ticket (a call also tells others they are close), and once
        # per ticket and template ("approaching" included).
        per_cause = Counter((d["cause_event_id"], d["channel"], d["ticket_id"]) for d in docs)
        assert set(per_cause.values()) == {1}
        assert set(Counter((d["ticket_id"], d["template"]) for d in docs).values()) == {1}
        per_ticket: dict[str, set[str]] = {}
        for d in docs:
            per_ticket.setdefault(d["ticket_id"], set()).add(d["template"])
        assert len(per_ticket) == tickets_expected
        assert all(lifecycle <= templates for templates in per_ticket.values())
        # A "called" message that would arrive after the ticket completed is dropped by design.
        assert {d["status"] for d in docs} <= {"sent", "dropped"}

        async def counted() -> dict[str, Any] | None:
            r = await reports[1].http.get(
                f"/api/v1/sites/{SITE}/summary", params={"date": _today()}
            )
            body: dict[str, Any] = r.json()
            done = body["completed"] == tickets_expected
            return body if done else None

        body = await eventually(counted, within=60)
        assert (body["issued"], body["called"], body["completed"]) == (tickets_expected,) * 3

        # In the stream (what every consumer reads), each ticket was called once. (Two relays
        # may both publish an event; JetStream keeps one by its Nats-Msg-Id.)
        calls: Counter[str] = Counter()
        stream = await client.jetstream().pull_subscribe(f"giliran.{SITE}.ticket.called")
        while sum(calls.values()) < tickets_expected:
            for msg in await stream.fetch(100, timeout=5):
                calls[json.loads(msg.data)["data"]["ticket_id"]] += 1
                await msg.ack()
        assert len(calls) == tickets_expected and set(calls.values()) == {1}
        # Both instances of each service took part.
        for pair in (queues, notifies, reports):
            assert all(handled(svc) > 0 for svc in pair), [handled(s) for s in pair]
        print(
            "\nhandled per instance: "
            + ", ".join(
                f"{p[0].runtime.service} {handled(p[0]):.0f}/{handled(p[1]):.0f}"
                for p in (queues, notifies, reports)
            )
        )


def _today() -> str:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.now(ZoneInfo("Asia/Jakarta")).date().isoformat()
