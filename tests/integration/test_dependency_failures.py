"""Nothing lost when a dependency fails: NATS killed mid-load, the store killed mid-load."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import pytest
from pydantic import SecretStr

from giliran.contracts.subjects import STREAM
from giliran.settings import Settings
from giliran.store import OUTBOX_COUNT, count
from giliran_ops.embedded import ManagedProcess, mongo_wire_store
from tests.conftest import RunningService, eventually, running

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
SERVICES = ["KTP-CETAK", "KIA"]


def registration(i: int) -> dict[str, Any]:
    return {"site": SITE, "services": SERVICES, "name": f"Warga {i}", "consent": True}


async def subject_counts(url: str) -> Counter[str]:
    """How many messages the stream holds per subject: the independent count."""
    client = await nats.connect(url)
    try:
        info = await client.jetstream().stream_info(STREAM, subjects_filter=">")
        return Counter(info.state.subjects or {})
    finally:
        await client.close()


def by_event(counts: Counter[str]) -> Counter[str]:
    """giliran.<site>.<entity>.<event> counts summed over sites: `entity.event` -> n."""
    out: Counter[str] = Counter()
    for subject, n in counts.items():
        out[".".join(subject.split(".")[2:4])] += n
    return out


async def outbox_pending(svc: RunningService) -> int:
    total = 0
    for collection in svc.runtime._outbox:
        total += await count(collection, {OUTBOX_COUNT: {"$gt": 0}})
    return total


async def test_nats_killed_while_registrations_and_calls_flow_loses_and_doubles_nothing(
    settings: Settings, nats_proc: ManagedProcess
) -> None:
    """kill -9 of nats-server in the middle of a stream of registrations and counter calls: every
    request answered 201/202 is ticketed exactly once when it returns, every call is published
    once, and each service's outbox (intake, queue, notify) empties."""
    settings = settings.model_copy(update={"ticket_wait_seconds": 0.3})
    total = 24
    async with (
        running("intake", settings) as intake,
        running("queue", settings) as queue,
        running("notify", settings) as notify,
    ):
        accepted: list[str] = []
        calls: list[str] = []

        async def register(i: int) -> None:
            r = await intake.http.post("/api/v1/requests", json=registration(i))
            assert r.status_code in (201, 202), r.text
            accepted.append(r.json()["request_id"])

        async def call(counter: str) -> None:
            r = await queue.http.post(f"/api/v1/sites/{SITE}/counters/{counter}/call-next")
            assert r.status_code in (200, 204), r.text
            if r.status_code == 200:
                calls.append(r.json()["ticket"]["ticket_id"])

        for i in range(total):
            if i == total // 3:
                nats_proc.kill()  # SIGKILL, mid-stream
            if i == 2 * total // 3:
                # While NATS is down: a call writes ticket.called into the queue's outbox.
                await call("1")
                assert await outbox_pending(queue) > 0
                assert await outbox_pending(intake) > 0
                await nats_proc.start().wait_listening()
            await register(i)
            await asyncio.sleep(0.05)

        async def all_ticketed() -> bool:
            for request_id in accepted:
                r = await intake.http.get(f"/api/v1/requests/{request_id}")
                if len(r.json()["tickets"]) != len(SERVICES):
                    return False
            return True

        await eventually(all_ticketed, within=40)
        await call("2")
        await eventually(lambda: _all_drained(intake, queue, notify), within=30)

        assert len(accepted) == total
        tickets = queue.app.state.queue.store.tickets
        assert await tickets.count_documents({}) == total * len(SERVICES)
        numbers = [d["number"] for d in await tickets.find({}).to_list()]
        assert len(set(numbers)) == len(numbers), "a number was issued twice"

        async def stream_settled() -> Counter[str] | None:
            events = by_event(await subject_counts(settings.nats_url))
            sent = await notify.app.state.notify_store.deliveries.count_documents(
                {"status": "sent"}
            )
            return events if events["notification.sent"] == sent and sent > 0 else None

        events = await eventually(stream_settled, within=30)
        assert events["request.submitted"] == total
        assert events["ticket.issued"] == total * len(SERVICES)
        assert events["ticket.called"] == len(calls) == 2
        # Exactly once per (ticket, template, channel) in notify's delivery log.
        deliveries = await notify.app.state.notify_store.deliveries.find({}).to_list()
        keys = Counter(
            (d.get("ticket_id"), d.get("template"), d.get("channel")) for d in deliveries
        )
        assert keys and max(keys.values()) == 1, keys.most_common(3)


async def _all_drained(*services: RunningService) -> bool:
    return all([await outbox_pending(s) == 0 for s in services])


async def test_store_killed_requests_fail_fast_in_both_languages_and_leave_nothing_half_done(
    settings: Settings, tmp_path: Path
) -> None:
    """kill -9 of the store under load: every request answers within a bound (503 with an
    Indonesian and an English message, or success), none hangs; after the store returns every
    stored request is fully ticketed and no ticket belongs to a request intake does not have."""
    store = mongo_wire_store(tmp_path / "own-store").start()
    await store.wait_listening()
    settings = settings.model_copy(
        update={
            "mongo_url": f"mongodb://127.0.0.1:{store.port}/?directConnection=true",
            "db_prefix": f"t{uuid.uuid4().hex[:12]}",
            "nik_hash_key": SecretStr("test-nik-hash-key-0123456789abcdefghij"),
        }
    )
    try:
        async with running("intake", settings) as intake, running("queue", settings) as queue:
            loop = asyncio.get_running_loop()
            outcomes: list[tuple[int, float, dict[str, Any]]] = []

            async def register(i: int) -> None:
                started = loop.time()
                r = await intake.http.post("/api/v1/requests", json=registration(i))
                outcomes.append((r.status_code, loop.time() - started, r.json()))

            first = [asyncio.create_task(register(i)) for i in range(8)]
            await asyncio.sleep(0.05)
            store.kill()
            during = [asyncio.create_task(register(100 + i)) for i in range(4)]
            await asyncio.gather(*first, *during)
            down = await intake.http.get("/api/v1/requests/nonexistent")
            called = await queue.http.post(f"/api/v1/sites/{SITE}/counters/1/call-next")
            for response in (down, called):
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "store_unavailable"
            failed = [o for o in outcomes if o[0] == 503]
            assert len(failed) >= 4, [o[0] for o in outcomes]
            for status, seconds, body in outcomes:
                assert status in (201, 202, 503), (status, body)
                # serverSelectionTimeout is 5 s: a bound, not a hang.
                assert seconds < 12, f"{status} took {seconds:.1f}s"
                if status == 503:
                    error = body["error"]
                    assert error["message_id"] and error["message_en"]
                    assert error["message_id"] != error["message_en"]
            slowest = max(seconds for _, seconds, _ in outcomes)
            print(f"store killed: {len(failed)}/{len(outcomes)} got 503, slowest {slowest:.2f}s")
            readiness = await intake.http.get("/readyz")
            assert readiness.status_code == 503
            assert readiness.json()["checks"]["store"] is False

            store.start()
            await store.wait_listening()
            accepted = {o[2]["request_id"] for o in outcomes if o[0] in (201, 202)}
            requests = intake.app.state.intake.store.requests
            tickets = queue.app.state.queue.store.tickets

            async def settled() -> bool:
                try:
                    stored = {d["_id"] for d in await requests.find({}).to_list()}
                    ticketed = Counter(d["request_id"] for d in await tickets.find({}).to_list())
                except Exception:
                    return False
                return all(ticketed[r] == len(SERVICES) for r in stored) and set(ticketed) <= (
                    stored
                )

            await eventually(settled, within=40, interval=0.3)
            stored = {d["_id"] for d in await requests.find({}).to_list()}
            assert accepted <= stored
            # A request whose answer was lost with the store may exist; it must be whole.
            assert len(stored - accepted) <= 8
            print(f"stored after restart: {len(stored)} ({len(stored - accepted)} unanswered)")
            again = await intake.http.post("/api/v1/requests", json=registration(999))
            assert again.status_code in (201, 202), again.text
    finally:
        store.stop()
