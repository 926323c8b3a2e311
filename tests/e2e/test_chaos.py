"""Chaos: lifecycles flow while every service, then nats-server, then the store is killed -9 and
restarted; afterwards the invariants hold, checked with counts against the event stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import nats
import pytest
from pymongo import AsyncMongoClient

from giliran.contracts.subjects import DLQ_STREAM, PERSONAL_STREAM, STREAM, personal_events
from giliran.settings import SERVICES, Settings
from giliran_ops.embedded import ManagedProcess, mongo_wire_store
from tests.conftest import eventually, issue_token, service_process
from tests.e2e.personal_data import personal_data_in

pytestmark = pytest.mark.e2e

SITE = "cikarang-utara"
API = f"/api/v1/sites/{SITE}"
# `make chaos` repeats the fault cycle; `make test` runs it once (about a minute).
ROUNDS = int(os.environ.get("GILIRAN_CHAOS_ROUNDS", "1"))
SOAK_SECONDS = float(os.environ.get("GILIRAN_SOAK_SECONDS", "0"))
DOWN_SECONDS = 1.5


@dataclass
class Stack:
    """The whole system as OS processes on fixed ports, so each can be killed and restarted."""

    settings: Settings
    nats: ManagedProcess
    store: ManagedProcess
    services: dict[str, ManagedProcess]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.services[name].port}"

    def logs(self) -> list[Path]:
        own = [p.log_path for p in (*self.services.values(), self.nats, self.store)]
        return [*own, self.store.log_path.parent.parent / "store" / "nx-27017.log"]


@asynccontextmanager
async def stack(settings: Settings, nats_proc: ManagedProcess, tmp: Path) -> AsyncIterator[Stack]:
    store = mongo_wire_store(tmp / "chaos-store").start()
    await store.wait_listening()
    settings = settings.model_copy(
        update={"mongo_url": f"mongodb://127.0.0.1:{store.port}/?directConnection=true"}
    )
    services = {name: service_process(name, settings, tmp / "logs") for name in SERVICES}
    for process in services.values():
        assert process.env is not None
        # A session open now; failed deliveries retried quickly; intake answers 202 at once
        # when the queue is slow (its outbox holds the request).
        process.env.update(
            {
                "GILIRAN_DEMO": "true",
                "GILIRAN_TICKET_WAIT_SECONDS": "0.5",
                "GILIRAN_RETRY_BACKOFF_SECONDS": "[0.2, 0.5, 1.0, 2.0]",
                "GILIRAN_MAX_DELIVER": "8",
            }
        )
        process.start()
    running = Stack(settings, nats_proc, store, services)
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            for name in SERVICES:
                await eventually(lambda n=name: _ready(http, running.url(n)), within=60)  # type: ignore[misc]
        yield running
    finally:
        for process in services.values():
            process.stop()
        store.stop()


async def staff_client(system: Stack) -> httpx.AsyncClient:
    """The load generator acts as the site's supervisor (counter actions, the day's figures)
    with an API token; registering at the kiosk needs none."""
    token = await issue_token(system.settings, "supervisor", "cikarang-utara", label="chaos")
    return httpx.AsyncClient(timeout=8, headers={"Authorization": f"Bearer {token}"})


async def _ready(http: httpx.AsyncClient, url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return (await http.get(f"{url}/readyz")).status_code == 200
    return False


@dataclass
class Load:
    """Lifecycles at a steady rate: a kiosk registers citizens, counter 1 calls and completes."""

    stack: Stack
    rate_per_second: float = 3.0
    accepted: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    called: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def kiosk(self, http: httpx.AsyncClient) -> None:
        i = 0
        while not self.stopping.is_set():
            i += 1
            body = {
                "site": SITE,
                "services": ["KTP-CETAK"],
                "name": f"Warga {i}",
                "nik": f"321609451290{i % 10000:04d}",
                "phone": f"08123456{i % 10000:04d}",
                "consent": True,
            }
            try:
                r = await http.post(f"{self.stack.url('intake')}/api/v1/requests", json=body)
                if r.status_code in (201, 202):
                    self.accepted.append(r.json()["request_id"])
                else:
                    self.refused[str(r.status_code)] += 1
            except httpx.HTTPError as exc:
                self.refused[type(exc).__name__] += 1
            await asyncio.sleep(1 / self.rate_per_second)

    async def counter(self, http: httpx.AsyncClient) -> None:
        queue = self.stack.url("queue")
        quiet = 0
        while True:
            if self.stopping.is_set():
                # Serve the line out; tickets still in an outbox appear a little later.
                quiet = 0 if await self._waiting(http) else quiet + 1
                if quiet >= 5:
                    return
                if quiet:
                    await asyncio.sleep(1.0)
                    continue
            try:
                r = await http.post(f"{queue}{API}/counters/1/call-next")
            except httpx.HTTPError:
                await asyncio.sleep(0.3)
                continue
            if r.status_code == 409 and r.json().get("error", {}).get("code") == "counter_busy":
                # A call whose answer a crash lost: the counter seats a ticket this officer was
                # never shown. The console shows it (as it would the officer): serve it.
                ticket = await self._seated(http)
                if ticket is None:
                    await asyncio.sleep(0.2)
                    continue
            elif r.status_code != 200:
                await asyncio.sleep(0.2)
                continue
            else:
                ticket = r.json()["ticket"]["ticket_id"]
            self.called.append(ticket)
            while True:  # complete it, through whatever fails meanwhile
                with contextlib.suppress(httpx.HTTPError):
                    done = await http.post(f"{queue}/api/v1/tickets/{ticket}/complete")
                    if done.status_code == 200:
                        self.completed.append(ticket)
                        break
                    if done.status_code == 409:  # already completed before a lost answer
                        break
                await asyncio.sleep(0.3)

    async def _seated(self, http: httpx.AsyncClient) -> str | None:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError, TypeError):
            detail = (await http.get(f"{self.stack.url('queue')}{API}/counters/1")).json()
            return str(detail["current"]["ticket"]["ticket_id"])
        return None

    async def _waiting(self, http: httpx.AsyncClient) -> bool:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            board = (await http.get(f"{self.stack.url('queue')}{API}/board")).json()
            return sum(line["waiting"] for line in board["lines"]) > 0
        return True


async def crash_and_restart(process: ManagedProcess) -> None:
    process.kill()  # SIGKILL
    await asyncio.sleep(DOWN_SECONDS)
    process.start()
    await process.wait_listening(within=60)


async def read_stream(
    url: str, stream: str = STREAM, subjects: str = "giliran.*.*.*"
) -> list[dict[str, Any]]:
    """Every event in the stream, in order: the independent record of what happened."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        sub = await js.pull_subscribe(subjects, stream=stream)
        events: list[dict[str, Any]] = []
        while True:
            try:
                batch = await sub.fetch(500, timeout=1.0)
            except TimeoutError:
                break
            for msg in batch:
                events.append(json.loads(msg.data))
                await msg.ack()
        await sub.unsubscribe()
        return events
    finally:
        await client.close()


async def dead_letter_count(url: str) -> int:
    client = await nats.connect(url)
    try:
        try:
            return int((await client.jetstream().stream_info(DLQ_STREAM)).state.messages)
        except Exception:
            return 0
    finally:
        await client.close()


def by_type(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(".".join(e["type"].split(".")[1:3]) for e in events)


@pytest.mark.timeout(120 + 60 * ROUNDS)
async def test_kill_9_every_part_in_turn_under_load_breaks_no_invariant(
    settings: Settings, nats_proc: ManagedProcess, tmp_path: Path
) -> None:
    async with stack(settings, nats_proc, tmp_path) as system, await staff_client(system) as http:
        load = Load(system)
        kiosk = asyncio.create_task(load.kiosk(http))
        counter = asyncio.create_task(load.counter(http))
        faults: list[str] = []
        for _ in range(ROUNDS):
            for name in SERVICES:
                await asyncio.sleep(2.0)
                await crash_and_restart(system.services[name])
                faults.append(name)
            await asyncio.sleep(2.0)
            await crash_and_restart(system.nats)
            faults.append("nats-server")
            await asyncio.sleep(2.0)
            await crash_and_restart(system.store)
            faults.append("store")
        await asyncio.sleep(3.0)
        load.stopping.set()
        await kiosk
        async with asyncio.timeout(60):
            await counter
        report = await check_invariants(system, load, http)
        report["faults"] = faults
        print(f"chaos: {json.dumps(report, sort_keys=True)}")
        found = personal_data_in(system.logs())
        assert not found, f"personal data in logs: {found[:5]}"


async def check_invariants(system: Stack, load: Load, http: httpx.AsyncClient) -> dict[str, Any]:
    url = system.settings.nats_url
    for name in SERVICES:
        await eventually(lambda n=name: _ready(http, system.url(n)), within=60)  # type: ignore[misc]
    day = datetime.now(ZoneInfo("Asia/Jakarta")).date().isoformat()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(system.settings.mongo_url)
    notify_db = mongo[system.settings.database_name("notify")]

    last: dict[str, Any] = {}

    async def settled() -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        # A part just restarted may still refuse (JetStream recovering, a 503): look again.
        try:
            return await observe()
        except Exception as exc:
            last["error"] = f"{type(exc).__name__}: {exc}"
            return None

    async def observe() -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        events = await read_stream(url)
        counts = by_type(events)
        summary = (
            await http.get(f"{system.url('reporting')}{API}/summary", params={"date": day})
        ).json()
        figures: dict[str, Any] = {
            "submitted": counts["request.submitted"],
            "issued": counts["ticket.issued"],
            "called": counts["ticket.called"],
            "completed": counts["ticket.completed"],
        }
        last.update(stream=dict(counts), reporting={k: summary.get(k) for k in figures})
        if any(summary.get(k) != v for k, v in figures.items()):
            return None
        # A request accepted just before intake was killed waits in intake's outbox until the
        # restarted relay publishes it: settled only once every accepted request is on the bus.
        on_bus = {
            e["data"]["request_id"]
            for e in events
            if e["type"].startswith("giliran.request.submitted")
        }
        issued_for = {
            e["data"]["request_id"] for e in events if e["type"] == "giliran.ticket.issued.v1"
        }
        last.update(
            accepted_not_on_bus=len(set(load.accepted) - on_bus),
            accepted_not_issued=sorted(set(load.accepted) - issued_for)[:3],
        )
        if not set(load.accepted) <= on_bus or not set(load.accepted) <= issued_for:
            return None
        wanted = counts["ticket.issued"] + counts["ticket.called"] + counts["ticket.completed"]
        sent = await notify_db.deliveries.count_documents(
            {"template": {"$in": ["ticket_issued", "ticket_called", "ticket_completed"]}}
        )
        # Each sent delivery has its notification.sent event; one delivered late after a crash
        # may be dropped as stale (the ticket moved on, ADR 0005) and then has none.
        statuses = Counter(
            d["status"] for d in await notify_db.deliveries.find({}, {"status": 1}).to_list()
        )
        last.update(deliveries=sent, wanted=wanted, statuses=dict(statuses))
        if sent != wanted or statuses["sending"] or counts["notification.sent"] != statuses["sent"]:
            return None
        figures["deliveries_by_status"] = dict(statuses)
        return events, figures

    try:
        try:
            events, figures = await eventually(settled, within=90, interval=1.0)
        except AssertionError as exc:
            raise AssertionError(
                f"did not settle: {last}, dead letters: {await dead_letter_count(url)}"
            ) from exc
        counts = by_type(events)
        # 1. Every accepted request has its ticket, in the queue and in intake's record.
        for request_id in load.accepted:
            tickets = (await http.get(f"{system.url('queue')}{API}/requests/{request_id}")).json()
            if len(tickets) != 1:
                queue_db = mongo[system.settings.database_name("queue")]
                stored = await queue_db.tickets.find({"request_id": request_id}).to_list()
                seen = [e["type"] for e in events if e["data"].get("request_id") == request_id]
                raise AssertionError(f"{request_id}: {tickets}; queue has {stored}; bus {seen}")
        # 2. One submitted per request, one issued per ticket, no ticket called twice.
        per_request = Counter(
            e["data"]["request_id"]
            for e in events
            if e["type"].startswith("giliran.request.submitted")
        )
        assert set(load.accepted) <= set(per_request) and max(per_request.values()) == 1
        for kind in ("issued", "called", "completed"):
            per_ticket = Counter(
                e["data"]["ticket_id"] for e in events if e["type"] == f"giliran.ticket.{kind}.v1"
            )
            assert not per_ticket or max(per_ticket.values()) == 1, (
                kind,
                per_ticket.most_common(2),
            )
        assert set(load.called) <= {
            e["data"]["ticket_id"] for e in events if e["type"] == "giliran.ticket.called.v1"
        }
        # 3. Each consumer applied each event once: its inbox holds each handled id once and
        # nothing was parked; reporting's totals (below) equal the stream's.
        assert await dead_letter_count(url) == 0
        inboxes: dict[str, int] = {}
        # Contacts are events too, on their own stream (ADR 0115): notify files each once.
        contacts = await read_stream(url, PERSONAL_STREAM, personal_events())
        ids = {e["id"] for e in events} | {e["id"] for e in contacts}
        for name in SERVICES:
            db = mongo[system.settings.database_name(name)]
            for collection in await db.list_collection_names():
                if collection.startswith("inbox_"):
                    handled = [
                        d["_id"] for d in await db[collection].find({}, {"_id": 1}).to_list()
                    ]
                    assert len(handled) == len(set(handled)) and set(handled) <= ids
                    inboxes[collection] = len(handled)
        # The queue's requests consumer keeps no inbox (ADR 0192): each ticket names the
        # request.submitted event that issued it, so every such event was handled, once (one
        # ticket per service it asked for; a ticket id is its request's and service's).
        queue_db = mongo[system.settings.database_name("queue")]
        issued_by = Counter(
            d["request_event"]
            for d in await queue_db.tickets.find(
                {"request_event": {"$exists": True}}, {"request_event": 1}
            ).to_list()
        )
        submitted = [e for e in events if e["type"].startswith("giliran.request.submitted")]
        assert len(submitted) == counts["request.submitted"]
        assert issued_by == Counter({e["id"]: len(e["data"]["services"]) for e in submitted})
        assert len(contacts) == counts["request.submitted"]  # every kiosk citizen consented
        # Notify's contact book keeps no inbox (ADR 0185): its one record per request names the
        # contact event that filed it, so each contact is filed, once, in its request's record.
        filed = [
            d["contact_event"]
            for d in await notify_db.contacts.find(
                {"contact_event": {"$exists": True}}, {"contact_event": 1}
            ).to_list()
        ]
        assert len(filed) == len(set(filed)) == len(contacts)
        assert set(filed) == {e["id"] for e in contacts}
        # 4. Notifications: exactly one per ticket event, template and channel.
        deliveries = await notify_db.deliveries.find({}).to_list()
        per_key = Counter((d.get("ticket_id"), d["template"], d["channel"]) for d in deliveries)
        assert max(per_key.values()) == 1, per_key.most_common(3)
        # 5. Reporting totals equal an independent count from the stream (settled() waited for
        # it, and it must stay so).
        return {
            "accepted": len(load.accepted),
            "refused_while_down": dict(load.refused),
            "called": len(load.called),
            "completed": len(load.completed),
            "stream": dict(counts),
            "reporting": figures,
            "deliveries": len(deliveries),
            "inboxes": inboxes,
        }
    finally:
        await mongo.close()


@pytest.mark.skipif(not SOAK_SECONDS, reason="make soak (GILIRAN_SOAK_SECONDS) only")
@pytest.mark.timeout(SOAK_SECONDS + 300)
async def test_soak_steady_rate_memory_flat(
    settings: Settings, nats_proc: ManagedProcess, tmp_path: Path
) -> None:
    """`make soak`: lifecycles at a steady rate for GILIRAN_SOAK_SECONDS; every process's
    resident memory sampled every 10 s; the invariants checked at the end."""
    rate = float(os.environ.get("GILIRAN_SOAK_RATE", "10"))
    async with stack(settings, nats_proc, tmp_path) as system, await staff_client(system) as http:
        load = Load(system, rate_per_second=rate)
        tasks = [asyncio.create_task(load.kiosk(http)), asyncio.create_task(load.counter(http))]
        samples: dict[str, list[int]] = {name: [] for name in system.services}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SOAK_SECONDS
        while loop.time() < deadline:
            for name, process in system.services.items():
                samples[name].append(_rss_kib(process))
            await asyncio.sleep(10)
        load.stopping.set()
        async with asyncio.timeout(120):
            await asyncio.gather(*tasks)
        report = await check_invariants(system, load, http)
        report["rss_kib"] = {n: (s[1] if len(s) > 1 else s[0], s[-1]) for n, s in samples.items()}
        print(f"soak: {json.dumps(report, sort_keys=True)}")
        for name, series in samples.items():
            # Flat: after warm-up, the last sample is within 50% of the second.
            assert series[-1] < 1.5 * series[min(1, len(series) - 1)], (name, series)


def _rss_kib(process: ManagedProcess) -> int:
    assert process.process is not None
    status = Path(f"/proc/{process.process.pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1])
