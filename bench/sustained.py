"""Open-loop benchmark: citizens arrive at a fixed rate; latency, backlog and RSS of a whole stack.

Starts its own stack (nats-server, the embedded store and the four services, each its own process,
demo session open now, a copy of cikarang-utara with `--counters` counters) and drives it at a
fixed arrival rate, whatever the stack answers (open loop: a slow stack builds a backlog instead
of slowing the load down):

    .venv/bin/python bench/sustained.py --rate 50 --duration 60
    .venv/bin/python bench/sustained.py --rate 50 --duration 300
    .venv/bin/python bench/sustained.py --find-max 25,50,75,100,150,200 --duration 30

Each arrival submits a kiosk request; once intake answers with the ticket, the ticket is handed
to the counters, which call-next → complete as fast as they can (one citizen at a time each).
A real SSE client on the queue board's stream timestamps when each call appears on the board.
After the arrivals the bench waits for the counters to empty the line, for notify's deliveries
and for reporting's day summary, then checks that nothing was lost or done twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import yaml
from measure import percentile, sample
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from giliran.auth import AuthStore, Role
from giliran.settings import REPO_ROOT, SERVICES, Settings
from giliran.store import connect, count, from_instant
from giliran_ops.embedded import (
    ManagedProcess,
    free_port,
    mongo_wire_store,
    nats_server,
    service_process,
)

SITE = "cikarang-utara"
TEMPLATES = ("ticket_issued", "ticket_called", "ticket_completed")
REPORT_FIELDS = ("submitted", "issued", "called", "completed")
Json = dict[str, Any]
# After a 202 (intake waited and no ticket yet) the bench polls the request like a kiosk would;
# 0.1 s bounds the error of those slow answers' submit → ticket and keeps the polls cheap.
POLL_SECONDS = 0.1
# An overloaded stack (a rate above what it sustains) answers late but answers: wait for it, or
# the run would count as lost what is only late.
TICKET_WAIT_SECONDS = 900
# A counter told "nobody waiting" this long while a ticket of the run waits reports it as an error.
NOTHING_CALLABLE_SECONDS = 120.0


# --- the stack -------------------------------------------------------------------------------


@dataclass
class Stack:
    work: Path
    settings: Settings
    infra: list[ManagedProcess]
    services: dict[str, ManagedProcess]
    token: str = ""
    nats_monitor: str = ""

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.services[name].port}"

    def pids(self) -> dict[str, int]:
        found = {p.name: p.process.pid for p in self.infra if p.process is not None}
        found.update({n: p.process.pid for n, p in self.services.items() if p.process})
        return found

    def stop(self) -> None:
        for process in self.services.values():
            process.stop()
        for process in reversed(self.infra):
            process.stop()


def write_catalogue(directory: Path, counters: int) -> None:
    site = yaml.safe_load((REPO_ROOT / "deploy" / "sites" / f"{SITE}.yaml").read_text())
    codes = [s["code"] for s in site["services"]]
    site["counters"] = [
        {"id": str(n), "name": {"id": f"Loket {n}", "en": f"Counter {n}"}, "services": codes}
        for n in range(1, counters + 1)
    ]
    (directory / f"{SITE}.yaml").write_text(yaml.safe_dump(site, allow_unicode=True))


async def start_stack(args: argparse.Namespace) -> Stack:
    work = Path(tempfile.mkdtemp(prefix="giliran-sustained-"))
    catalogue = work / "sites"
    catalogue.mkdir()
    write_catalogue(catalogue, args.counters)
    monitor = free_port()
    nats = nats_server(work, monitor_port=monitor).start()
    store = mongo_wire_store(work).start()
    stack = Stack(work, Settings(), [nats, store], {}, nats_monitor=f"http://127.0.0.1:{monitor}")
    try:
        await nats.wait_listening()
        await store.wait_listening()
        stack.settings = Settings(
            nats_url=f"nats://127.0.0.1:{nats.port}",
            mongo_url=f"mongodb://127.0.0.1:{store.port}/?directConnection=true",
            db_prefix="bench",
            catalogue_dir=catalogue,
            nik_hash_key=SecretStr("bench-nik-hash-key-0123456789abcdefghij"),
            nik_encryption_key=SecretStr("2sklCeVOsLm_1IFPRqUGUAZ211p0OOuLY686SWDloUo="),
            session_key=SecretStr("bench-session-key-0123456789abcdefghij"),
            audit_key=SecretStr("bench-audit-key-of-sufficient-length-0123"),
        )
        env = {"GILIRAN_DEMO": "true", "GILIRAN_LOG_LEVEL": "WARNING", **dict(args.env)}
        for name in SERVICES:
            stack.services[name] = service_process(name, stack.settings, work / "logs", env=env)
            stack.services[name].start()
        for process in stack.services.values():
            await process.wait_listening(within=60)
        client = connect(stack.settings.mongo_url)
        _, stack.token = await AuthStore(client[stack.settings.auth_database]).issue_token(
            "bench", Role.SUPERVISOR, SITE
        )
        await client.close()
        async with httpx.AsyncClient(timeout=5) as http:
            for name in SERVICES:
                for _ in range(300):
                    try:
                        if (await http.get(f"{stack.url(name)}/readyz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.2)
                else:
                    raise TimeoutError(f"{name} not ready; see {work / 'logs'}")
    except BaseException:
        stack.stop()
        raise
    return stack


# --- one run at one rate ---------------------------------------------------------------------


@dataclass
class Life:
    """One citizen: arrival, ticket, call, completion (perf_counter seconds unless noted)."""

    index: int
    scheduled: float
    sent: float = 0.0
    ticketed: float = 0.0
    request_id: str = ""
    ticket_ids: list[str] = field(default_factory=list)
    numbers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Called:
    ticket_id: str
    sent: float  # perf_counter just before the call-next request
    called_at: float  # server called_at, epoch seconds
    completed: bool = False


@dataclass
class Run:
    rate: float
    duration: float
    lives: list[Life] = field(default_factory=list)
    ready: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    calls: list[Called] = field(default_factory=list)
    on_board: dict[str, float] = field(default_factory=dict)
    board_events: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    empty_calls: int = 0
    arrivals_done: bool = False
    seconds: list[Json] = field(default_factory=list)
    max_lag: float = 0.0


def epoch(value: str | None) -> float | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


async def arrive(http: httpx.AsyncClient, stack: Stack, run: Run, life: Life) -> None:
    body = {
        "site": SITE,
        "services": [SERVICE_CODES[life.index % len(SERVICE_CODES)]],
        "name": f"Bench {life.index + 1}",
        # One phone per citizen: intake limits requests per phone.
        "phone": f"0812{life.index % 100_000_000:08d}",
        "consent": True,
        # Walk-ins registered by staff: the supervisor's token may use the counter channel; the
        # kiosk channel is for a kiosk's own sign-in (ADR 0102).
        "channel": "counter",
    }
    try:
        life.sent = time.perf_counter()
        r = await http.post(f"{stack.url('intake')}/api/v1/requests", json=body)
        if r.status_code not in (201, 202):
            raise RuntimeError(f"submit -> {r.status_code}")
        view = r.json()
        life.request_id = view["request_id"]
        while not view["tickets"]:
            if time.perf_counter() - life.sent > TICKET_WAIT_SECONDS:
                raise RuntimeError(f"no ticket within {TICKET_WAIT_SECONDS} s")
            await asyncio.sleep(POLL_SECONDS)
            r = await http.get(f"{stack.url('intake')}/api/v1/requests/{life.request_id}")
            view = r.json()
        life.ticketed = time.perf_counter()
        life.ticket_ids = [t["ticket_id"] for t in view["tickets"]]
        life.numbers = [(t["service"], t["number"]) for t in view["tickets"]]
        for ticket_id in life.ticket_ids:
            run.ready.put_nowait(ticket_id)
    except (httpx.HTTPError, RuntimeError, KeyError, ValueError) as error:
        run.errors[f"submit: {type(error).__name__}: {error}"] += 1


SERVICE_CODES = ["KTP-CETAK", "KK-UBAH", "KIA", "KTP-REKAM"]


async def arrivals(http: httpx.AsyncClient, stack: Stack, run: Run) -> None:
    """Open loop: arrival i is sent at start + i / rate, however long earlier ones take."""
    total = int(run.rate * run.duration)
    start = time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()
    for index in range(total):
        due = start + index / run.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        run.max_lag = max(run.max_lag, -delay)
        life = Life(index=len(run.lives), scheduled=due)
        run.lives.append(life)
        task = asyncio.create_task(arrive(http, stack, run, life))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    run.arrivals_done = True


async def counter(http: httpx.AsyncClient, stack: Stack, run: Run, number: int) -> None:
    """One officer: whenever a ticket of this run waits, call the next one and complete it."""
    url = f"{stack.url('queue')}/api/v1/sites/{SITE}/counters/{number}/call-next"
    while True:
        try:
            await asyncio.wait_for(run.ready.get(), timeout=0.5)
        except TimeoutError:
            if run.arrivals_done and run.ready.empty():
                return
            continue
        waiting_since = time.perf_counter()
        while True:
            try:
                sent = time.perf_counter()
                r = await http.post(url)
                if r.status_code == 204:  # a ticket becomes callable a moment after intake says so
                    run.empty_calls += 1
                    if sent - waiting_since > NOTHING_CALLABLE_SECONDS:
                        # A ticket intake issued that the queue never offers: a finding, not a
                        # reason to spin for ever (two runs once "hung" with nothing logged).
                        raise RuntimeError(
                            f"call-next: nothing callable for {NOTHING_CALLABLE_SECONDS:.0f} s "
                            "while a ticket of this run waits"
                        )
                    await asyncio.sleep(0.02)
                    continue
                if r.status_code != 200:
                    raise RuntimeError(f"call-next -> {r.status_code}")
                ticket = r.json()["ticket"]
                call = Called(ticket["ticket_id"], sent, epoch(ticket.get("called_at")) or 0.0)
                run.calls.append(call)
                done = await http.post(
                    f"{stack.url('queue')}/api/v1/tickets/{call.ticket_id}/complete"
                )
                if done.status_code != 200:
                    raise RuntimeError(f"complete -> {done.status_code}")
                call.completed = True
            except (httpx.HTTPError, RuntimeError, KeyError, ValueError) as error:
                run.errors[f"counter: {type(error).__name__}: {error}"] += 1
            break


async def board(stack: Stack, run: Run, stop: asyncio.Event, *, measured: bool = True) -> None:
    """A waiting-room screen: the board's SSE stream, each call timestamped when first shown
    (by the measured screen; the others only watch, as a site's other TVs do)."""
    url = f"{stack.url('queue')}/api/v1/sites/{SITE}/board/stream"
    headers = {"Authorization": f"Bearer {stack.token}", "Accept": "text/event-stream"}
    timeout = httpx.Timeout(10, read=None)
    async with httpx.AsyncClient(timeout=timeout, headers=headers) as http:
        while not stop.is_set():
            try:
                async with http.stream("GET", url) as response:
                    async for line in response.aiter_lines():
                        if stop.is_set():
                            return
                        if not line.startswith("data: "):
                            continue
                        if not measured:
                            continue
                        arrived = time.perf_counter()
                        run.board_events += 1
                        for call in json.loads(line[6:]).get("calls", []):
                            ticket_id = call["call_id"].rsplit(":", 1)[0]
                            run.on_board.setdefault(ticket_id, arrived)
            except httpx.HTTPError as error:
                run.errors[f"board: {type(error).__name__}"] += 1
                await asyncio.sleep(0.2)


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


async def sampler(stack: Stack, run: Run, stop: asyncio.Event) -> None:
    """Every second: RSS and CPU of each process, backlog, completions, load average."""
    pids = stack.pids()
    started = time.perf_counter()
    while not stop.is_set():
        taken = {name: sample(pid) for name, pid in pids.items()}
        run.seconds.append({
            "t": time.perf_counter() - started,
            "rss": {n: s.rss_kib / 1024 for n, s in taken.items() if s},
            "cpu": {n: s.cpu_seconds for n, s in taken.items() if s},
            "waiting_ticket": sum(1 for life in run.lives if life.sent and not life.ticketed),
            "waiting_call": run.ready.qsize(),
            "completed": sum(1 for c in run.calls if c.completed),
            "load": loadavg()[0],
        })  # fmt: skip
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except TimeoutError:
            pass


async def nats_messages(http: httpx.AsyncClient, stack: Stack) -> dict[int, tuple[str, int, int]]:
    """Every client connection nats-server has seen (open and closed), by connection id: its
    name and the messages it published (`in_msgs`) and was delivered (`out_msgs`), as the
    server counts them. Each is a socket write and read on both sides; JetStream's acks,
    fetch requests and publish acknowledgements are messages too."""
    r = await http.get(f"{stack.nats_monitor}/connz", params={"state": "all", "limit": 100000})
    r.raise_for_status()
    return {
        c["cid"]: (c.get("name") or "unnamed", int(c["in_msgs"]), int(c["out_msgs"]))
        for c in r.json().get("connections", [])
    }


def nats_per_client(
    before: dict[int, tuple[str, int, int]], after: dict[int, tuple[str, int, int]]
) -> dict[str, dict[str, int]]:
    """Messages each named client published and received between two `nats_messages`."""
    found: dict[str, dict[str, int]] = {}
    for cid, (name, sent, received) in after.items():
        _, sent_before, received_before = before.get(cid, (name, 0, 0))
        mine = found.setdefault(name.removeprefix("giliran-"), {"published": 0, "received": 0})
        mine["published"] += sent - sent_before
        mine["received"] += received - received_before
    return found


async def store_commands(http: httpx.AsyncClient, stack: Stack) -> dict[str, Counter[str]]:
    """Each service's store commands so far, by `command collection`, from its /metrics
    (giliran_store_commands_total: PyMongo command monitoring inside the service)."""
    found: dict[str, Counter[str]] = {}
    for name in SERVICES:
        text = (await http.get(f"{stack.url(name)}/metrics")).text
        counts: Counter[str] = Counter()
        for family in text_string_to_metric_families(text):
            if family.name != "giliran_store_commands":
                continue
            for s in family.samples:
                if s.name.endswith("_total"):
                    key = f"{s.labels['command']} {s.labels['collection']}".strip()
                    counts[key] += int(s.value)
        found[name] = counts
    return found


async def report_summary(http: httpx.AsyncClient, stack: Stack, day: str) -> Json:
    """The site's report counts of `day` and of the day after, added up: a run that crosses
    midnight in Jakarta counts its later citizens on the next day (a run at 23:58 WIB once read
    as 616 counts "lost" that were on the new day)."""
    url = f"{stack.url('reporting')}/api/v1/sites/{SITE}/summary"
    following = (datetime.fromisoformat(day) + timedelta(days=1)).date().isoformat()
    totals: Json = dict.fromkeys(REPORT_FIELDS, 0)
    for one in (day, following):
        r = await http.get(url, params={"date": one})
        r.raise_for_status()
        summary = r.json()
        for f in REPORT_FIELDS:
            totals[f] += summary[f]
    return totals


async def catch_up(stack: Stack, http: httpx.AsyncClient, run: Run, day: str, base: Json) -> Json:
    """Wait until notify sent every message and reporting counted every event (or time out)."""
    client = connect(stack.settings.mongo_url)
    deliveries = client[stack.settings.database_name("notify")]["deliveries"]
    tickets = {t for life in run.lives for t in life.ticket_ids}
    expected = {
        "submitted": sum(1 for life in run.lives if life.request_id),
        "issued": len(tickets),
        "called": len(run.calls),
        "completed": sum(1 for c in run.calls if c.completed),
    }
    started = time.perf_counter()
    result: Json = {"notified_after": None, "counted_after": None}
    while time.perf_counter() - started < 300:
        if result["notified_after"] is None:
            sent = await count(deliveries, SENT_OF_A_LIFECYCLE)
            if sent >= NOTIFIED_BEFORE[0] + len(TEMPLATES) * len(tickets):
                result["notified_after"] = time.perf_counter() - started
        if result["counted_after"] is None:
            summary = await report_summary(http, stack, day)
            if all(summary[f] - base.get(f, 0) >= expected[f] for f in REPORT_FIELDS):
                result["counted_after"] = time.perf_counter() - started
        if result["notified_after"] is not None and result["counted_after"] is not None:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)  # a late duplicate would show now
    summary = await report_summary(http, stack, day)
    result["deltas"] = {f: summary[f] - base.get(f, 0) for f in REPORT_FIELDS}
    result["expected"] = expected
    docs = await deliveries.find(
        {"template": {"$in": list(TEMPLATES)}},
        {"ticket_id": 1, "template": 1, "status": 1, "sent_at": 1},
    ).to_list()
    result["deliveries"] = [d for d in docs if d["ticket_id"] in tickets]
    await client.close()
    return result


NOTIFIED_BEFORE = [0]
# The three messages every lifecycle sends; "your turn is near" comes to some tickets only, and
# counting it let "all notifications sent" show while calls were still far behind.
SENT_OF_A_LIFECYCLE = {"status": {"$eq": "sent"}, "template": {"$in": list(TEMPLATES)}}


async def run_rate(stack: Stack, rate: float, duration: float, args: argparse.Namespace) -> Json:
    run = Run(rate=rate, duration=duration)
    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout would close them under
    # a request (a ReadError whose outcome is unknown).
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400, keepalive_expiry=2)
    headers = {"Authorization": f"Bearer {stack.token}"}
    day = datetime.now(ZoneInfo("Asia/Jakarta")).date().isoformat()

    def desk() -> httpx.AsyncClient:
        one = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=2)
        return httpx.AsyncClient(timeout=args.timeout, limits=one, headers=headers)

    async with httpx.AsyncClient(timeout=args.timeout, limits=limits, headers=headers) as http:
        base = await report_summary(http, stack, day)
        commands_before = await store_commands(http, stack)
        nats_before = await nats_messages(http, stack)
        client = connect(stack.settings.mongo_url)
        deliveries = client[stack.settings.database_name("notify")]["deliveries"]
        NOTIFIED_BEFORE[0] = await count(deliveries, SENT_OF_A_LIFECYCLE)
        await client.close()
        stop = asyncio.Event()
        watchers = [
            asyncio.create_task(board(stack, run, stop)),
            *(
                asyncio.create_task(board(stack, run, stop, measured=False))
                for _ in range(args.boards - 1)
            ),
            asyncio.create_task(sampler(stack, run, stop)),
        ]
        await asyncio.sleep(1.0)  # the board's first render
        load_before = loadavg()
        cpu_self = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        # A client of its own per counter (one connection, as an officer's browser): in the one
        # shared pool every request scanned all its connections (httpcore), and as a lagging
        # stack left more arrivals open the generator burnt more CPU the more the stack lagged.
        async with contextlib.AsyncExitStack() as desks:
            counters = [
                asyncio.create_task(counter(await desks.enter_async_context(desk()), stack, run, n))
                for n in range(1, args.counters + 1)
            ]
            await arrivals(http, stack, run)
            arrivals_end = time.perf_counter()
            await asyncio.gather(*counters)
        phase_end = time.perf_counter()
        load_after = loadavg()
        await asyncio.sleep(0.5)  # the last calls reach the board
        stop.set()
        await asyncio.gather(*watchers, return_exceptions=True)
        caught = await catch_up(stack, http, run, day, base)
        commands_after = await store_commands(http, stack)
        caught["nats_messages"] = nats_per_client(nats_before, await nats_messages(http, stack))
        caught["store_commands"] = {
            name: commands_after[name] - commands_before[name] for name in SERVICES
        }
        cpu_self_after = resource.getrusage(resource.RUSAGE_SELF)
    return summarise(
        stack, run, args, caught, started, arrivals_end, phase_end, load_before, load_after,
        (cpu_self_after.ru_utime + cpu_self_after.ru_stime)
        - (cpu_self.ru_utime + cpu_self.ru_stime),
    )  # fmt: skip


def ms_row(label: str, values: Sequence[float]) -> str:
    if not values:
        return f"  {label:<40} {0:>6}        -"
    cells = "".join(f"{percentile(values, p):>9.1f}" for p in (50, 95, 99)) + f"{max(values):>9.1f}"
    return f"  {label:<40} {len(values):>6}{cells}"


def summarise(
    stack: Stack,
    run: Run,
    args: argparse.Namespace,
    caught: Json,
    started: float,
    arrivals_end: float,
    phase_end: float,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    client_cpu: float,
) -> Json:
    lives = [life for life in run.lives if life.ticketed]
    completed = [c for c in run.calls if c.completed]
    tickets = {t: life for life in run.lives for t in life.ticket_ids}
    submit_ms = [(life.ticketed - life.sent) * 1000 for life in lives]
    shown = run.on_board
    board_ms = [(shown[c.ticket_id] - c.sent) * 1000 for c in run.calls if c.ticket_id in shown]
    sent_at: dict[tuple[str, str], list[float]] = {}
    for d in caught["deliveries"]:
        if d.get("status") == "sent" and d.get("sent_at"):
            moment = from_instant(d["sent_at"]).timestamp()
            sent_at.setdefault((d["ticket_id"], d["template"]), []).append(moment)
    notify_ms = [
        (sent_at[(c.ticket_id, "ticket_called")][0] - c.called_at) * 1000
        for c in run.calls
        if (c.ticket_id, "ticket_called") in sent_at
    ]
    called = Counter(c.ticket_id for c in run.calls)
    numbers = Counter(n for life in run.lives for n in life.numbers)
    deltas, expected = caught["deltas"], caught["expected"]
    lost = {
        "arrivals without a ticket": len(run.lives) - len(lives),
        "tickets never called": sum(1 for t in tickets if t not in called),
        "calls not completed": len(run.calls) - len(completed),
        "notifications not sent": sum(
            1 for t in tickets for tpl in TEMPLATES if (t, tpl) not in sent_at
        ),
        "report counts short": sum(max(0, expected[f] - deltas[f]) for f in REPORT_FIELDS),
    }
    duplicated = {
        "requests with >1 ticket": sum(1 for life in run.lives if len(life.ticket_ids) > 1),
        "ticket numbers issued twice": sum(n - 1 for n in numbers.values() if n > 1),
        "tickets called twice": sum(n - 1 for n in called.values() if n > 1),
        "notifications sent twice": sum(len(v) - 1 for v in sent_at.values() if len(v) > 1),
        "report counts over": sum(max(0, deltas[f] - expected[f]) for f in REPORT_FIELDS),
    }
    foreign = sum(1 for t in called if t not in tickets)
    arrival_seconds = arrivals_end - started
    steady = [s for s in run.seconds if s["t"] <= arrival_seconds]
    backlog = [s["waiting_ticket"] + s["waiting_call"] for s in steady]
    # Backlog growth: last third of the arrival phase against the first third.
    third = max(1, len(backlog) // 3)
    growth = (sum(backlog[-third:]) - sum(backlog[:third])) / third if backlog else 0.0
    names = sorted({n for s in run.seconds for n in s["rss"]})
    first, last = (run.seconds[0], run.seconds[-1]) if run.seconds else ({}, {})
    processes = {
        n: {
            "rss_max": max(s["rss"].get(n, 0.0) for s in run.seconds),
            "rss_final": last["rss"].get(n, 0.0),
            "cpu": last["cpu"].get(n, 0.0) - first["cpu"].get(n, 0.0),
        }
        for n in names
    }
    achieved = len(completed) / (phase_end - started)
    return {
        "rate": run.rate,
        "duration": run.duration,
        "arrivals": len(run.lives),
        "arrival_seconds": arrival_seconds,
        "phase_seconds": phase_end - started,
        "achieved": achieved,
        "completed": len(completed),
        "max_lag_ms": run.max_lag * 1000,
        "backlog_max": max(backlog, default=0),
        "backlog_end": backlog[-1] if backlog else 0,
        "backlog_growth": growth,
        "drain_seconds": phase_end - arrivals_end,
        "submit_ms": submit_ms,
        "board_ms": board_ms,
        "notify_ms": notify_ms,
        "not_on_board": len(run.calls) - len(board_ms),
        "board_events": run.board_events,
        "notified_after": caught["notified_after"],
        "counted_after": caught["counted_after"],
        "lost": lost,
        "duplicated": duplicated,
        "foreign": foreign,
        "errors": dict(run.errors),
        "empty_calls": run.empty_calls,
        "processes": processes,
        "client_cpu": client_cpu,
        "store_commands": {n: dict(c) for n, c in caught["store_commands"].items()},
        "nats_messages": caught["nats_messages"],
        "load_before": load_before,
        "load_after": load_after,
        "load_max": max((s["load"] for s in run.seconds), default=0.0),
    }


def print_result(result: Json) -> None:
    r = result
    print(
        f"rate {r['rate']:g}/s for {r['duration']:g} s: {r['arrivals']} arrivals, all answered "
        f"after {r['arrival_seconds']:.1f} s (arrival loop at most {r['max_lag_ms']:.0f} ms late)"
    )
    print(f"  completed lifecycles/s (achieved)      {r['achieved']:.1f}  ({r['completed']} done)")
    print(f"  line emptied after the arrivals        {r['drain_seconds']:.1f} s")
    print(f"  call-next answered 204 (retried)       {r['empty_calls']}")
    print(
        f"  backlog (no ticket yet + not called)   max {r['backlog_max']}, at the end of the "
        f"arrivals {r['backlog_end']}, growth {r['backlog_growth']:+.1f} (last vs first third)"
    )
    print(
        "  load average (1 min)                   "
        f"{r['load_before'][0]:.2f} before, {r['load_after'][0]:.2f} after, max {r['load_max']:.2f}"
    )
    print(f"  {'latency ms':<40} {'n':>6}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}")
    print(ms_row("submit → ticket (client)", r["submit_ms"]))
    print(ms_row("call → board update (SSE client)", r["board_ms"]))
    print(ms_row("call → notification sent (server)", r["notify_ms"]))
    print(
        f"  calls not seen on the board            {r['not_on_board']} "
        f"({r['board_events']} board updates received)"
    )
    for label, key in (
        ("all notifications sent", "notified_after"),
        ("every event counted", "counted_after"),
    ):
        when = r[key]
        after = f"{when:.1f} s after the phase" if when is not None else "NOT within 300 s"
        print(f"  {label:<38} {after}")
    print("checks")
    for label, n in r["lost"].items():
        print(f"  LOST        {n:>6}  {label}")
    for label, n in r["duplicated"].items():
        print(f"  DUPLICATED  {n:>6}  {label}")
    print(f"  FOREIGN     {r['foreign']:>6}  tickets called that this run did not issue")
    print(f"  ERRORS      {sum(r['errors'].values()):>6}")
    for message, n in sorted(r["errors"].items(), key=lambda item: -item[1])[:8]:
        print(f"    {n} × {message}")
    print("processes (RSS MiB max / final; CPU s during the run; CPU ms per lifecycle)")
    done = max(r["completed"], 1)
    for name, p in r["processes"].items():
        print(
            f"  {name:<12} {p['rss_max']:>7.1f} / {p['rss_final']:>7.1f}   {p['cpu']:>7.1f} s"
            f"   {p['cpu'] * 1000 / done:>6.1f} ms"
        )
    print(f"  {'bench':<12} {'':>17}   {r['client_cpu']:>7.1f} s")
    total = sum(p["cpu"] for p in r["processes"].values())
    print(f"  stack total CPU per lifecycle           {total * 1000 / done:.1f} ms")
    print("store commands per lifecycle (each service's PyMongo command monitoring)")
    commands = r["store_commands"]
    for name, counts in commands.items():
        # Everything that costs at least one command per twenty lifecycles.
        top = [
            kv for kv in sorted(counts.items(), key=lambda item: -item[1]) if kv[1] / done >= 0.05
        ]
        detail = ", ".join(f"{k} {n / done:.1f}" for k, n in top)
        print(f"  {name:<12} {sum(counts.values()) / done:>6.1f}   ({detail})")
    all_commands = sum(sum(c.values()) for c in commands.values())
    print(f"  all services total                      {all_commands / done:.1f}")
    print("NATS messages per lifecycle (nats-server's count per client: published / received)")
    flows = r.get("nats_messages", {})
    for name, flow in sorted(flows.items()):
        print(f"  {name:<12} {flow['published'] / done:>6.1f} / {flow['received'] / done:<6.1f}")
    total_flow = sum(f["published"] + f["received"] for f in flows.values())
    print(f"  all clients, both ways                  {total_flow / done:.1f}")


def failures(result: Json) -> int:
    return (
        sum(result["lost"].values())
        + sum(result["duplicated"].values())
        + result["foreign"]
        + sum(result["errors"].values())
    )


def sustainable(result: Json) -> bool:
    """Kept up: completions within 5 % of the arrivals, and the line did not keep growing."""
    return (
        result["completed"] >= 0.95 * result["arrivals"]
        and result["drain_seconds"] < max(5.0, 0.1 * result["duration"])
        and result["backlog_growth"] < result["rate"]  # less than a second's arrivals
        and failures(result) == 0
    )


def start_py_spy(stack: Stack, args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    """py-spy (sampling, 100/s, --nonblocking so the profiled process is never paused)."""
    out = Path(args.py_spy)
    out.mkdir(parents=True, exist_ok=True)
    binary = Path(sys.executable).parent / "py-spy"
    spies = []
    for name, pid in stack.pids().items():
        if name == "nats-server":
            continue
        command = [
            *(str(binary), "record", "--pid", str(pid), "--duration", str(int(args.duration))),
            *("--rate", "100", "--nonblocking", "--format", "raw", "-o", str(out / f"{name}.txt")),
        ]
        quiet = subprocess.DEVNULL
        spies.append(subprocess.Popen(command, stdout=quiet, stderr=quiet))
    return spies


async def main_async(args: argparse.Namespace) -> int:
    print(
        f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, "
        f"load average {' '.join(f'{x:.2f}' for x in loadavg())}; {args.counters} counters, "
        f"{args.boards} board(s)"
    )
    stack = await start_stack(args)
    print(f"stack up in {stack.work} (pids {stack.pids()})", flush=True)
    failed = 0
    try:
        spies = start_py_spy(stack, args) if args.py_spy else []
        rates = args.find_max or [args.rate]
        best = None
        for rate in rates:
            result = await run_rate(stack, rate, args.duration, args)
            print_result(result)
            print(flush=True)
            failed += failures(result)
            if args.json:
                slim = {k: v for k, v in result.items() if not k.endswith("_ms")}
                for k in ("submit_ms", "board_ms", "notify_ms"):
                    values = result[k]
                    slim[k] = {
                        f"p{p}": percentile(values, p) if values else None for p in (50, 95, 99)
                    }
                with Path(args.json).open("a") as out:  # noqa: ASYNC230 (between runs)
                    out.write(json.dumps(slim) + "\n")
            if args.find_max:
                if sustainable(result):
                    best = rate
                else:
                    print(f"rate {rate:g}/s not sustained; stopping the search")
                    break
        if args.find_max:
            print(f"highest sustained rate tried: {best if best is not None else 'none'}/s")
    finally:
        for spy in spies:
            spy.wait()
        stack.stop()
    return 1 if failed else 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="arrivals per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of arrivals")
    parser.add_argument(
        "--find-max",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=None,
        help="comma-separated rates to try in turn on one stack; stops at the first not sustained",
    )
    parser.add_argument("--counters", type=int, default=16, help="counters calling at once")
    parser.add_argument("--timeout", type=float, default=60.0, help="per HTTP request, seconds")
    parser.add_argument(
        "--boards", type=int, default=1, help="board screens watching the site (at most 10)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=lambda s: tuple(s.split("=", 1)),
        help="NAME=VALUE for the services' environment (repeatable)",
    )
    parser.add_argument("--json", help="append each rate's figures to this file (JSON lines)")
    parser.add_argument(
        "--py-spy",
        metavar="DIR",
        help="profile every Python process of the stack with py-spy during the first rate's "
        "arrivals: DIR/<name>.txt (collapsed stacks)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
