"""Queue service on real NATS and the embedded store: issue, call, complete, commands."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from giliran.contracts import CallNext, CommandReply, CompleteTicket, utcnow
from giliran.settings import REPO_ROOT, Settings
from tests.conftest import eventually, nats_client, publish, request_event, running

pytestmark = pytest.mark.integration


async def _waiting(queue: object, count: int) -> list[str]:
    """Ids of tickets issued so far, once there are `count` of them."""
    from services.queue.handlers import Queue

    assert isinstance(queue, Queue)

    async def enough() -> list[str] | None:
        docs = await queue.store.tickets.find({}, {"_id": 1}).to_list()
        return [d["_id"] for d in docs] if len(docs) >= count else None

    found: list[str] = await eventually(enough, within=15)
    return found


async def test_numbers_run_per_line_and_session(settings: Settings) -> None:
    async with running("queue", settings) as svc:
        for services in (["KTP-CETAK"], ["KTP-CETAK", "KIA"], ["KTP-CETAK"]):
            await publish(settings, request_event(services))
        await publish(settings, request_event(["KTP-CETAK"], session_id="another-session"))
        queue = svc.app.state.queue
        await _waiting(queue, 5)
        docs = await queue.store.tickets.find({}).sort("seq", 1).to_list()
        numbers = sorted((d["session_id"], d["number"]) for d in docs)
        assert numbers == [
            ("another-session", "B-001"),
            ("test-session", "B-001"),
            ("test-session", "B-002"),
            ("test-session", "B-003"),
            ("test-session", "K-001"),
        ]


async def test_call_next_complete_over_http(settings: Settings) -> None:
    async with running("queue", settings) as svc:
        empty = await svc.http.post("/api/v1/sites/cikarang-utara/counters/1/call-next")
        assert empty.status_code == 204
        await publish(settings, request_event(["KK-UBAH"]))
        await _waiting(svc.app.state.queue, 1)
        called = await svc.http.post("/api/v1/sites/cikarang-utara/counters/1/call-next")
        assert called.status_code == 200
        ticket = called.json()["ticket"]
        assert set(ticket) >= {"ticket_id", "request_id", "number", "service", "status"}
        assert ticket["status"] == "called"

        done = await svc.http.post(f"/api/v1/tickets/{ticket['ticket_id']}/complete")
        assert done.json()["ticket"]["status"] == "completed"
        again = await svc.http.post(f"/api/v1/tickets/{ticket['ticket_id']}/complete")
        assert again.status_code == 409
        error = again.json()["error"]
        assert error["code"] == "illegal_transition"
        assert "dipanggil" in error["message_id"] and "called" in error["message_en"]

        unknown = await svc.http.post("/api/v1/sites/cikarang-utara/counters/99/call-next")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "unknown_counter"
        missing = await svc.http.post("/api/v1/tickets/nope/complete")
        assert missing.status_code == 404


async def test_counter_commands_over_nats_request_reply(settings: Settings) -> None:
    async with running("queue", settings) as svc, nats_client(settings) as client:
        await publish(settings, request_event(["IKD"]))
        await _waiting(svc.app.state.queue, 1)
        site = "cikarang-utara"
        reply = await client.request(
            CallNext.subject(site),
            CallNext(site=site, counter="3").model_dump_json().encode(),
            timeout=5,
        )
        called = CommandReply.model_validate_json(reply.data)
        assert called.ok and called.ticket is not None
        assert called.ticket.number == "N-001" and called.ticket.counter == "3"

        reply = await client.request(
            CompleteTicket.subject(site),
            CompleteTicket(site=site, ticket_id=called.ticket.ticket_id).model_dump_json().encode(),
            timeout=5,
        )
        completed = CommandReply.model_validate_json(reply.data)
        assert completed.ok and completed.ticket is not None
        assert completed.ticket.status == "completed"

        nothing = CommandReply.model_validate_json(
            (
                await client.request(
                    CallNext.subject(site),
                    CallNext(site=site, counter="3").model_dump_json().encode(),
                    timeout=5,
                )
            ).data
        )
        assert nothing.ok and nothing.ticket is None

        bad = await client.request(CallNext.subject(site), json.dumps({"x": 1}).encode(), timeout=5)
        problem = CommandReply.model_validate_json(bad.data)
        assert not problem.ok and problem.error is not None
        assert problem.error.code == "invalid_command"


async def test_simultaneous_calls_never_share_a_ticket(settings: Settings, tmp_path: Path) -> None:
    """5 counters calling and completing at once over 20 waiting tickets: each called once;
    a counter still serving a ticket is refused another (409) instead of holding two."""
    site = yaml.safe_load((REPO_ROOT / "deploy" / "sites" / "cikarang-utara.yaml").read_text())
    fifth = {**site["counters"][0], "id": "5", "name": {"id": "Loket 5", "en": "Counter 5"}}
    site["counters"].append(fifth)
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site))
    settings = settings.model_copy(update={"catalogue_dir": tmp_path})
    async with running("queue", settings) as svc:
        for _ in range(20):
            await publish(settings, request_event(["KTP-REKAM"]))
        await _waiting(svc.app.state.queue, 20)

        async def work(counter: int) -> list[str]:
            served = []
            while True:
                r = await svc.http.post(
                    f"/api/v1/sites/cikarang-utara/counters/{counter}/call-next"
                )
                if r.status_code == 204:
                    return served
                assert r.status_code == 200, r.text
                ticket_id: str = r.json()["ticket"]["ticket_id"]
                busy = await svc.http.post(
                    f"/api/v1/sites/cikarang-utara/counters/{counter}/call-next"
                )
                assert busy.status_code == 409 and busy.json()["error"]["code"] == "counter_busy"
                done = await svc.http.post(f"/api/v1/tickets/{ticket_id}/complete")
                assert done.status_code == 200, done.text
                served.append(ticket_id)

        called = [
            t for batch in await asyncio.gather(*(work(c) for c in range(1, 6))) for t in batch
        ]
        assert len(called) == 20 and len(set(called)) == 20


async def test_a_counter_prefers_its_first_line_and_keeps_each_line_in_order(
    settings: Settings,
) -> None:
    """Counter 4 opened for [KIA, KTP-CETAK]: waits count 25% less per position in that order,
    so K-002 (8 min) goes before B-001 (9 min, second line); within a line, arrival order."""
    async with running("queue", settings) as svc:
        queue = svc.app.state.queue
        start = utcnow()
        for issued, (minute, services) in enumerate(
            ((0, ["KIA"]), (1, ["KTP-CETAK"]), (2, ["KIA"])), start=1
        ):
            queue.clock = lambda m=minute: start + timedelta(minutes=m)
            await publish(settings, request_event(services))
            await _waiting(queue, issued)
        queue.clock = lambda: start + timedelta(minutes=10)
        opened = await svc.http.post(
            "/api/v1/sites/cikarang-utara/counters/4/open",
            json={"services": ["KIA", "KTP-CETAK"]},
        )
        assert opened.json()["counter"]["services"] == ["KIA", "KTP-CETAK"]
        order = []
        for _ in range(3):
            r = await svc.http.post("/api/v1/sites/cikarang-utara/counters/4/call-next")
            order.append(r.json()["ticket"]["number"])
            await svc.http.post(f"/api/v1/tickets/{r.json()['ticket']['ticket_id']}/complete")
        assert order == ["K-001", "K-002", "B-001"]
