"""Two queue processes on one store and one nats-server (ADR 0161): two clicks on one counter at
once through the two make one call, two counters calling at once through the two never share a
ticket, and each instance's board and call-next see what the other wrote (ADR 0160)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from giliran.settings import Settings
from giliran.store import connect
from tests.conftest import eventually, issue_token, publish_many, request_event, service_process

pytestmark = pytest.mark.e2e
SITE = "cikarang-utara"
API = f"/api/v1/sites/{SITE}"
TICKETS = 16


@asynccontextmanager
async def two_queues(settings: Settings, tmp_path: Path) -> AsyncIterator[list[httpx.AsyncClient]]:
    processes = [service_process("queue", settings, tmp_path / name) for name in ("one", "two")]
    for directory in ("one", "two"):
        (tmp_path / directory).mkdir()
    auth = {"Authorization": f"Bearer {await issue_token(settings, 'supervisor', SITE)}"}
    try:
        for process in processes:
            process.start()
        async with AsyncExitStack() as stack:
            clients = []
            for process in processes:
                await process.wait_listening()
                client = await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=f"http://127.0.0.1:{process.port}", timeout=30, headers=auth
                    )
                )
                await eventually(lambda c=client: _ready(c), within=30)  # type: ignore[misc]
                clients.append(client)
            yield clients
    finally:
        for process in processes:
            process.stop()


async def _ready(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def _issue(settings: Settings, http: httpx.AsyncClient, n: int) -> list[str]:
    events = [request_event(["KTP-REKAM"]) for _ in range(n)]
    await publish_many(settings, events)
    ids = [e.data.request_id for e in events]

    async def all_issued() -> bool:
        for request_id in ids:
            if not (await http.get(f"{API}/requests/{request_id}")).json():
                return False
        return True

    await eventually(all_issued, within=30)
    return ids


async def _at_counter(settings: Settings, counter: str) -> list[dict[str, Any]]:
    """What the store says is called or served at a counter now."""
    client = connect(settings.mongo_url)
    try:
        tickets = client[f"{settings.db_prefix}_queue"]["tickets"]
        found: list[dict[str, Any]] = await tickets.find(
            {"counter": counter, "status": {"$in": ["called", "serving"]}}, {"outbox": 0}
        ).to_list()
        return found
    finally:
        await client.close()


async def test_two_clicks_on_one_counter_through_two_instances_call_once(
    settings: Settings, tmp_path: Path
) -> None:
    async with two_queues(settings, tmp_path) as (one, two):
        await _issue(settings, one, TICKETS)
        seen: list[str] = []
        for round_ in range(6):
            first, second = await asyncio.gather(
                one.post(f"{API}/counters/1/call-next"), two.post(f"{API}/counters/1/call-next")
            )
            answers = [r for r in (first, second) if r.status_code == 200]
            refused = [r for r in (first, second) if r.status_code != 200]
            assert answers, (first.text, second.text)
            for r in refused:  # the other click finds the counter busy with that call
                assert r.status_code == 409 and r.json()["error"]["code"] == "counter_busy", r.text
            called = {r.json()["ticket"]["ticket_id"] for r in answers}
            at_counter = await _at_counter(settings, "1")
            assert len(called) == 1 and [d["_id"] for d in at_counter] == list(called)
            ticket_id = called.pop()
            assert ticket_id not in seen
            seen.append(ticket_id)
            # The instance that did not call sees the call: its board, and its counter busy.
            other = two if round_ % 2 else one

            async def shown(http: httpx.AsyncClient = other, number: str = at_counter[0]["number"]
                            ) -> bool:  # fmt: skip
                board = (await http.get(f"{API}/board")).json()
                return any(c["counter"] == "1" and c["number"] == number for c in board["counters"])

            await eventually(shown, within=10)
            busy = await other.post(f"{API}/counters/1/call-next")
            assert busy.status_code == 409 and busy.json()["error"]["code"] == "counter_busy"
            done = await other.post(f"{API}/counters/1/tickets/{ticket_id}/complete")
            assert done.status_code == 200, done.text


async def test_two_counters_through_two_instances_never_share_a_ticket(
    settings: Settings, tmp_path: Path
) -> None:
    async with two_queues(settings, tmp_path) as (one, two):
        ids = await _issue(settings, one, TICKETS)
        served: list[str] = []

        async def counter_loop(http: httpx.AsyncClient, counter: str) -> None:
            idle = 0
            while idle < 5:
                r = await http.post(f"{API}/counters/{counter}/call-next")
                if r.status_code == 204:
                    idle += 1
                    await asyncio.sleep(0.05)
                    continue
                assert r.status_code == 200, r.text
                idle = 0
                ticket = r.json()["ticket"]
                served.append(ticket["ticket_id"])
                done = await http.post(
                    f"{API}/counters/{counter}/tickets/{ticket['ticket_id']}/complete"
                )
                assert done.status_code == 200, done.text

        await asyncio.gather(counter_loop(one, "1"), counter_loop(two, "2"))
        assert sorted(served) == sorted(f"{r}-KTP-REKAM" for r in ids)  # each exactly once
        # Both boards agree that the line is empty, whoever called.
        for http in (one, two):
            board = (await http.get(f"{API}/board")).json()
            line = next(x for x in board["lines"] if x["service"] == "KTP-REKAM")
            assert line["waiting"] == 0 and line["next"] == []


async def test_a_ticket_issued_by_one_instance_is_called_by_the_other(
    settings: Settings, tmp_path: Path
) -> None:
    """Memory never hides a ticket: whichever instance issued it, the other's board counts it
    and its call-next calls it, in order of arrival."""
    async with two_queues(settings, tmp_path) as (one, two):
        # Both instances have read the (empty) line before the tickets come.
        for http in (one, two):
            assert (await http.post(f"{API}/counters/3/open")).is_success
            assert (await http.post(f"{API}/counters/3/call-next")).status_code == 204
        ids = await _issue(settings, one, 4)
        for http in (one, two):

            async def counted(http: httpx.AsyncClient = http) -> bool:
                board = (await http.get(f"{API}/board")).json()
                line = next(x for x in board["lines"] if x["service"] == "KTP-REKAM")
                return bool(line["waiting"] == 4)

            await eventually(counted, within=10)
        tickets = [(await one.get(f"{API}/requests/{r}")).json()[0] for r in ids]
        arrival = [t["ticket_id"] for t in sorted(tickets, key=lambda t: t["queued_at"])]
        order = []
        for http in (two, one, two, one):
            r = await http.post(f"{API}/counters/3/call-next")
            assert r.status_code == 200, r.text
            ticket = r.json()["ticket"]
            order.append(ticket["ticket_id"])
            done = await http.post(f"{API}/counters/3/tickets/{ticket['ticket_id']}/complete")
            assert done.status_code == 200, done.text
        assert order == arrival  # called in their order of arrival, whoever issued them


async def test_first_clicks_on_unopened_counters_through_two_instances_call_once(
    settings: Settings, tmp_path: Path
) -> None:
    """The click that opens a counter races too: the instance whose open lost reads the counter
    again, and must find it busy with the other's call rather than reserve it afresh."""
    async with two_queues(settings, tmp_path) as (one, two):
        await _issue(settings, one, TICKETS)
        for counter in ("1", "2", "3", "4"):  # every counter of the site, each unopened
            first, second = await asyncio.gather(
                one.post(f"{API}/counters/{counter}/call-next"),
                two.post(f"{API}/counters/{counter}/call-next"),
            )
            called = {r.json()["ticket"]["ticket_id"] for r in (first, second) if r.is_success}
            at_counter = await _at_counter(settings, counter)
            assert len(called) == 1 and [d["_id"] for d in at_counter] == list(called), (
                first.text,
                second.text,
            )
