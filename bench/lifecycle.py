"""Benchmark: drive N ticket lifecycles (submit → call → complete) through a running stack."""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from measure import Sample, percentile, sample

TEMPLATES = ("ticket_issued", "ticket_called", "ticket_completed")
REPORT_FIELDS = ("submitted", "issued", "called", "completed")
POLL_SECONDS = 0.05
CATCH_UP_POLL_SECONDS = 0.2

Json = dict[str, Any]


@dataclass
class Issue:
    """One submitted request and what intake answered."""

    index: int
    request_id: str = ""
    ticket_ids: list[str] = field(default_factory=list)
    numbers: list[tuple[str, str]] = field(default_factory=list)
    status_code: int = 0
    polls: int = 0
    submit_ms: float = 0.0


@dataclass
class Call:
    """One call-next and the completion of the ticket it returned."""

    ticket_id: str
    counter: str
    called_wall: float  # client time.time() when the call-next response arrived
    called_at: float  # server called_at (epoch seconds)
    issued_at: float | None
    call_ms: float
    complete_ms: float = 0.0
    call_to_complete_ms: float = 0.0
    completed_at: float | None = None


@dataclass
class Deliveries:
    """Notify's delivery log of one ticket, as last read."""

    count: Counter[str] = field(default_factory=Counter)
    sent_at: dict[str, float] = field(default_factory=dict)
    done_after: float | None = None


@dataclass
class Run:
    args: argparse.Namespace
    remaining: int
    issues: list[Issue] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    empty_calls: int = 0

    def take(self) -> int | None:
        """The index of the next lifecycle to run, or None when all were handed out."""
        if self.remaining <= 0:
            return None
        self.remaining -= 1
        total: int = self.args.lifecycles
        return total - self.remaining - 1


class BenchError(Exception):
    """A response the benchmark cannot continue a lifecycle with."""


# --- helpers ---------------------------------------------------------------------------------


def epoch(value: str | None) -> float | None:
    """Seconds since the epoch of an ISO-8601 instant from the API (naive means UTC)."""
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def expect(response: httpx.Response, *codes: int) -> Json:
    if response.status_code not in codes:
        raise BenchError(
            f"{response.request.method} {response.request.url.path} -> {response.status_code}"
        )
    if response.status_code == 204:
        return {}
    body: Json = response.json()
    return body


# --- the lifecycle phase ---------------------------------------------------------------------


async def submit(client: httpx.AsyncClient, run: Run, index: int) -> Issue:
    args = run.args
    issue = Issue(index=index)
    services: list[str] = args.services
    body = {
        "site": args.site,
        "services": [services[index % len(services)]],
        "name": f"Bench {index + 1}",
        # One phone per citizen: intake limits requests per phone (against bots).
        "phone": f"{args.phone[:-6]}{index % 1_000_000:06d}",
        "consent": True,
        # Walk-ins registered by staff: the supervisor's token may use the counter channel; the
        # kiosk channel is for a kiosk's own sign-in (ADR 0102).
        "channel": "counter",
    }
    started = time.perf_counter()
    response = await client.post(f"{args.intake}/api/v1/requests", json=body)
    view = expect(response, 201, 202)
    issue.status_code = response.status_code
    issue.request_id = view["request_id"]
    deadline = started + args.timeout
    while not view["tickets"]:
        if time.perf_counter() > deadline:
            raise BenchError(f"no ticket for request {issue.request_id} after {args.timeout}s")
        await asyncio.sleep(POLL_SECONDS)
        issue.polls += 1
        response = await client.get(f"{args.intake}/api/v1/requests/{issue.request_id}")
        view = expect(response, 200)
    issue.submit_ms = (time.perf_counter() - started) * 1000
    issue.ticket_ids = [t["ticket_id"] for t in view["tickets"]]
    issue.numbers = [(t["service"], t["number"]) for t in view["tickets"]]
    return issue


async def call_and_complete(client: httpx.AsyncClient, run: Run, counter: str) -> Call:
    args = run.args
    url = f"{args.queue}/api/v1/sites/{args.site}/counters/{counter}/call-next"
    deadline = time.perf_counter() + args.timeout
    while True:
        started = time.perf_counter()
        response = await client.post(url)
        body = expect(response, 200, 204)
        answered = time.perf_counter()
        if body:
            break
        # Our own ticket is already waiting, so an empty queue means another worker's call
        # took it and ours is not visible yet: worth reporting, not fatal.
        run.empty_calls += 1
        if answered > deadline:
            raise BenchError(f"counter {counter}: nothing to call for {args.timeout}s")
        await asyncio.sleep(POLL_SECONDS)
    ticket: Json = body["ticket"]
    called_at = epoch(ticket.get("called_at"))
    if called_at is None:
        raise BenchError(f"call-next returned ticket {ticket['ticket_id']} without called_at")
    call = Call(
        ticket_id=ticket["ticket_id"],
        counter=counter,
        called_wall=time.time(),
        called_at=called_at,
        issued_at=epoch(ticket.get("issued_at")),
        call_ms=(answered - started) * 1000,
    )
    run.calls.append(call)
    before = time.perf_counter()
    response = await client.post(f"{args.queue}/api/v1/tickets/{call.ticket_id}/complete")
    done = expect(response, 200)
    finished = time.perf_counter()
    call.complete_ms = (finished - before) * 1000
    call.call_to_complete_ms = (finished - started) * 1000
    call.completed_at = epoch(done["ticket"].get("completed_at"))
    return call


COUNTER_LOCKS: dict[str, asyncio.Lock] = {}


async def worker(client: httpx.AsyncClient, run: Run, number: int) -> None:
    counter = str(number % run.args.counters + 1)
    # A counter serves one citizen at a time (the queue refuses a second call with 409), so
    # workers that share a counter take turns at it, as officers would.
    lock = COUNTER_LOCKS.setdefault(counter, asyncio.Lock())
    while (index := run.take()) is not None:
        try:
            issue = await submit(client, run, index)
            run.issues.append(issue)
            async with lock:
                await call_and_complete(client, run, counter)
        except (httpx.HTTPError, BenchError, KeyError, ValueError) as error:
            run.errors[f"{type(error).__name__}: {error}"] += 1


# --- catching up: notifications and the report -----------------------------------------------


async def fetch_deliveries(
    client: httpx.AsyncClient, run: Run, ticket_id: str, seen: Deliveries, phase_end: float
) -> None:
    response = await client.get(
        f"{run.args.notify}/api/v1/deliveries", params={"ticket_id": ticket_id}
    )
    deliveries = expect(response, 200)["deliveries"]
    seen.count = Counter(d["template"] for d in deliveries)
    for d in deliveries:
        sent_at = epoch(d.get("sent_at"))
        if d["status"] == "sent" and sent_at is not None:
            seen.sent_at.setdefault(d["template"], sent_at)
    if all(t in seen.sent_at for t in TEMPLATES):
        seen.done_after = time.perf_counter() - phase_end


async def wait_for_notifications(
    client: httpx.AsyncClient, run: Run, ticket_ids: Sequence[str], phase_end: float
) -> dict[str, Deliveries]:
    seen = {ticket_id: Deliveries() for ticket_id in ticket_ids}
    limit = asyncio.Semaphore(run.args.concurrency)
    deadline = phase_end + run.args.catch_up_timeout

    async def one(ticket_id: str) -> None:
        async with limit:
            try:
                await fetch_deliveries(client, run, ticket_id, seen[ticket_id], phase_end)
            except (httpx.HTTPError, BenchError) as error:
                run.errors[f"deliveries: {type(error).__name__}: {error}"] += 1

    while True:
        pending = [t for t, s in seen.items() if s.done_after is None]
        if not pending or time.perf_counter() > deadline:
            return seen
        await asyncio.gather(*(one(t) for t in pending))
        if any(s.done_after is None for s in seen.values()):
            await asyncio.sleep(CATCH_UP_POLL_SECONDS)


async def read_summary(client: httpx.AsyncClient, run: Run, day: str) -> tuple[Json, float]:
    args = run.args
    started = time.perf_counter()
    response = await client.get(
        f"{args.reporting}/api/v1/sites/{args.site}/summary", params={"date": day}
    )
    return expect(response, 200), (time.perf_counter() - started) * 1000


@dataclass
class CatchUp:
    after: float | None = None
    deltas: dict[str, int] = field(default_factory=dict)
    read_ms: list[float] = field(default_factory=list)


async def wait_for_report(
    client: httpx.AsyncClient,
    run: Run,
    day: str,
    baseline: Json,
    expected: dict[str, int],
    phase_end: float,
) -> CatchUp:
    result = CatchUp()
    deadline = phase_end + run.args.catch_up_timeout
    while True:
        try:
            summary, ms = await read_summary(client, run, day)
        except (httpx.HTTPError, BenchError) as error:
            run.errors[f"summary: {type(error).__name__}: {error}"] += 1
        else:
            result.read_ms.append(ms)
            result.deltas = {f: summary[f] - baseline[f] for f in REPORT_FIELDS}
            if all(result.deltas[f] >= expected[f] for f in REPORT_FIELDS):
                result.after = time.perf_counter() - phase_end
                break
        if time.perf_counter() > deadline:
            return result
        await asyncio.sleep(CATCH_UP_POLL_SECONDS)
    # Read once more after a pause: a count that overshoots is a duplicate, not a catch-up.
    await asyncio.sleep(1.0)
    summary, ms = await read_summary(client, run, day)
    result.read_ms.append(ms)
    result.deltas = {f: summary[f] - baseline[f] for f in REPORT_FIELDS}
    return result


# --- processes -------------------------------------------------------------------------------


def listening_inodes() -> dict[int, int]:
    """Port → socket inode of every listening TCP socket on this box."""
    found: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cells = line.split()
            if len(cells) > 9 and cells[3] == "0A":  # LISTEN
                found.setdefault(int(cells[1].rsplit(":", 1)[1], 16), int(cells[9]))
    return found


def owners(inodes: set[int]) -> dict[int, int]:
    """Socket inode → pid of the process holding it (processes we may look into)."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inode = int(target[8:-1])
                    if inode in inodes:
                        found[inode] = int(entry.name)
        except OSError:
            continue
    return found


def port_of(url: str) -> int | None:
    parsed = httpx.URL(url)
    return parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)


def stack_processes(args: argparse.Namespace) -> dict[int, str]:
    """pid → role of the processes of the stack under test, found by the ports they listen on:
    the four services from their URLs, NATS and the store from the services' environment."""
    ports: dict[int, str] = {}
    for name in ("intake", "queue", "notify", "reporting"):
        port = port_of(getattr(args, name))
        if port is not None:
            ports[port] = name
    inodes = listening_inodes()
    pids = owners({inodes[p] for p in ports if p in inodes})
    found = {pids[inodes[p]]: role for p, role in ports.items() if inodes.get(p) in pids}
    environ: dict[str, str] = {}
    for pid in found:
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        environ = dict(e.decode(errors="replace").partition("=")[::2] for e in raw if b"=" in e)
        break
    extra: dict[int, str] = {}
    for variable, role in (("GILIRAN_NATS_URL", "nats-server"), ("GILIRAN_MONGO_URL", "store")):
        url = environ.get(variable, "").split(",")[0]
        port = port_of(url) if url else None
        if port is not None:
            extra[port] = role
    more = owners({inodes[p] for p in extra if p in inodes})
    found.update({more[inodes[p]]: role for p, role in extra.items() if inodes.get(p) in more})
    return found


def samples(processes: dict[int, str]) -> dict[int, tuple[str, Sample]]:
    taken: dict[int, tuple[str, Sample]] = {}
    for pid, role in processes.items():
        found = sample(pid)
        if found is not None:
            taken[pid] = (role, found)
    return taken


# --- the run ---------------------------------------------------------------------------------


def row(label: str, values: Sequence[float]) -> str:
    if not values:
        return f"  {label:<44} {0:>5}      -"
    figures = [percentile(values, p) for p in (50, 95, 99)] + [max(values)]
    cells = "".join(f"{v:>9.1f}" for v in figures)
    return f"  {label:<44} {len(values):>5}{cells}"


async def check_ready(client: httpx.AsyncClient, args: argparse.Namespace) -> list[str]:
    problems = []
    for name in ("intake", "queue", "notify", "reporting"):
        url = getattr(args, name)
        try:
            response = await client.get(f"{url}/readyz")
            if response.status_code != 200:
                problems.append(f"{name} {url}/readyz -> {response.status_code}")
        except httpx.HTTPError as error:
            problems.append(f"{name} {url}: {type(error).__name__}")
    return problems


async def bench(args: argparse.Namespace) -> int:
    limits = httpx.Limits(
        max_connections=args.concurrency * 2 + 4, max_keepalive_connections=args.concurrency * 2 + 4
    )
    # Counter actions, deliveries and reports need staff: a supervisor's API token of the site
    # (`giliran up --demo` prints one; or `giliran accounts token bench --role supervisor ...`).
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits, headers=headers) as client:
        problems = await check_ready(client, args)
        if problems:
            print("stack not ready: " + "; ".join(problems), file=sys.stderr)
            return 2
        run = Run(args=args, remaining=args.lifecycles)
        day = datetime.now(ZoneInfo(args.timezone)).date().isoformat()
        baseline, _ = await read_summary(client, run, day)
        waiting_before = baseline["issued"] - baseline["called"]
        if waiting_before > 0:
            print(
                f"warning: the report counts {waiting_before} ticket(s) issued but never called "
                "today; call-next may hand them out before ours",
                file=sys.stderr,
            )
        processes = stack_processes(args)
        before = samples(processes)
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)

        started = time.perf_counter()
        await asyncio.gather(*(worker(client, run, w) for w in range(args.concurrency)))
        phase_end = time.perf_counter()
        wall = phase_end - started

        issued: dict[str, Issue] = {t: i for i in run.issues for t in i.ticket_ids}
        called_count = Counter(c.ticket_id for c in run.calls)
        completed = {c.ticket_id for c in run.calls if c.completed_at is not None}
        expected = {
            "submitted": len(run.issues),
            "issued": len(issued),
            "called": len(run.calls),
            "completed": len(completed),
        }
        seen, report = await asyncio.gather(
            wait_for_notifications(client, run, sorted(issued), phase_end),
            wait_for_report(client, run, day, baseline, expected, phase_end),
        )
        after = samples(processes)
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)

    calls = {c.ticket_id: c for c in run.calls}
    notified_after = [s.done_after for s in seen.values() if s.done_after is not None]

    def latency(template: str, start: dict[str, float | None]) -> list[float]:
        return [
            (s.sent_at[template] - moment) * 1000
            for t, s in seen.items()
            if template in s.sent_at and (moment := start.get(t)) is not None
        ]

    lost = {
        "requests without a ticket": sum(1 for i in run.issues if not i.ticket_ids)
        + (args.lifecycles - len(run.issues)),
        "tickets never called": sum(1 for t in issued if t not in called_count),
        "tickets called but not completed": len(called_count) - len(completed),
        "notifications missing": sum(
            1 for s in seen.values() for t in TEMPLATES if t not in s.sent_at
        ),
        "report counts short": sum(
            max(0, args.lifecycles - report.deltas.get(f, 0)) for f in REPORT_FIELDS
        ),
    }
    numbers = Counter(n for i in run.issues for n in i.numbers)
    duplicated = {
        "requests with >1 ticket": sum(1 for i in run.issues if len(i.ticket_ids) > 1),
        "ticket numbers issued twice": sum(n - 1 for n in numbers.values() if n > 1),
        "tickets called twice": sum(n - 1 for n in called_count.values() if n > 1),
        "notifications per template > 1": sum(
            n - 1 for s in seen.values() for n in s.count.values() if n > 1
        ),
        "report counts over": sum(
            max(0, report.deltas.get(f, 0) - args.lifecycles) for f in REPORT_FIELDS
        ),
    }
    foreign = sum(1 for t in called_count if t not in issued)
    out_of_order = sum(
        1
        for s in seen.values()
        if all(t in s.sent_at for t in TEMPLATES)
        and not s.sent_at["ticket_issued"]
        <= s.sent_at["ticket_called"]
        <= s.sent_at["ticket_completed"]
    )
    statuses = Counter(i.status_code for i in run.issues)

    print("Giliran lifecycle benchmark")
    print(
        f"  lifecycles {args.lifecycles}, concurrency {args.concurrency}, services "
        f"{','.join(args.services)}, site {args.site}"
    )
    print(f"  wall seconds (submit→complete phase)   {wall:.2f}")
    print(f"  lifecycles/s                           {len(completed) / wall:.1f}")
    print(
        f"  intake answers 201/202                 {statuses[201]}/{statuses[202]}"
        f" ({sum(i.polls for i in run.issues)} status polls)"
    )
    print(f"  call-next 204 (retried)                {run.empty_calls}")
    print(f"  {'latency ms':<44} {'n':>5}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}")
    print(row("submit→ticket (incl. 202 polling)", [i.submit_ms for i in run.issues]))
    print(row("call-next HTTP", [c.call_ms for c in run.calls]))
    print(row("complete HTTP", [c.complete_ms for c in run.calls]))
    print(
        row("call→complete HTTP (call-next sent → 200)", [c.call_to_complete_ms for c in run.calls])
    )
    print(
        row(
            "call→notification, server (sent−called_at)",
            latency("ticket_called", {t: c.called_at for t, c in calls.items()}),
        )
    )
    print(
        row(
            "call→notification, client (sent−response)",
            latency("ticket_called", {t: c.called_wall for t, c in calls.items()}),
        )
    )
    print(
        row(
            "issue→notification, server (sent−issued_at)",
            latency("ticket_issued", {t: c.issued_at for t, c in calls.items()}),
        )
    )
    print(
        row(
            "complete→notification, server",
            latency("ticket_completed", {t: c.completed_at for t, c in calls.items()}),
        )
    )
    print(row("report summary GET", report.read_ms))
    if notified_after and len(notified_after) == len(seen):
        print(
            f"  all notifications sent                 {max(notified_after):.2f} s after the phase"
        )
    else:
        print(f"  all notifications sent                 NOT within {args.catch_up_timeout:.0f} s")
    if report.after is not None:
        print(f"  report catch-up                        {report.after:.2f} s after the phase")
    else:
        print(f"  report catch-up                        NOT within {args.catch_up_timeout:.0f} s")
    print(
        "  report deltas                          "
        + ", ".join(f"{f} {report.deltas.get(f, '?')}" for f in REPORT_FIELDS)
    )
    print("checks")
    for label, count in lost.items():
        print(f"  LOST        {count:>5}  {label}")
    for label, count in duplicated.items():
        print(f"  DUPLICATED  {count:>5}  {label}")
    print(f"  FOREIGN     {foreign:>5}  tickets called that this run did not issue")
    print(f"  ERRORS      {sum(run.errors.values()):>5}")
    print(
        f"  (warning)   {out_of_order:>5}  tickets whose notifications were sent out of order "
        "(issued → called → completed)"
    )
    for message, count in run.errors.most_common(10):
        print(f"    {count} × {message}")
    print("processes (RSS MiB before → after, CPU s used during the run)")
    for pid, (role, end) in sorted(after.items(), key=lambda item: item[1][0]):
        start = before.get(pid, (role, Sample(0, 0.0)))[1]
        print(
            f"  {role:<12} pid {pid:<8} {start.rss_kib / 1024:>7.1f} → "
            f"{end.rss_kib / 1024:>7.1f}   {end.cpu_seconds - start.cpu_seconds:>7.1f}"
        )
    client_cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (
        cpu_before.ru_utime + cpu_before.ru_stime
    )
    print(
        f"  {'bench':<12} pid {os.getpid():<8} {'':>7}   "
        f"{cpu_after.ru_maxrss / 1024:>7.1f}   {client_cpu:>7.1f}  (max RSS)"
    )
    failed = sum(lost.values()) + sum(duplicated.values()) + foreign + sum(run.errors.values())
    return 1 if failed else 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ.get

    def url(name: str, default: int) -> str:
        return f"http://127.0.0.1:{env(f'GILIRAN_{name.upper()}_PORT', str(default))}"

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lifecycles", type=int, default=200, help="ticket lifecycles to run")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent workers")
    parser.add_argument("--intake", default=url("intake", 8101))
    parser.add_argument("--queue", default=url("queue", 8102))
    parser.add_argument("--reporting", default=url("reporting", 8103))
    parser.add_argument("--notify", default=url("notify", 8104))
    parser.add_argument("--timeout", type=float, default=30.0, help="per HTTP request, seconds")
    parser.add_argument(
        "--catch-up-timeout",
        type=float,
        default=120.0,
        help="how long to wait for notifications and the report after the phase, seconds",
    )
    parser.add_argument("--site", default="cikarang-utara")
    parser.add_argument(
        "--token",
        default=os.environ.get("GILIRAN_TOKEN", ""),
        help="a supervisor's API token of the site (default: $GILIRAN_TOKEN)",
    )
    parser.add_argument("--timezone", default="Asia/Jakarta", help="the site's zone (report day)")
    parser.add_argument(
        "--services",
        type=lambda s: [c for c in s.split(",") if c],
        default=["KTP-CETAK", "KK-UBAH", "KIA", "KTP-REKAM"],
        help="comma-separated service codes, one per request in turn",
    )
    parser.add_argument("--phone", default="081234567890")
    parser.add_argument("--counters", type=int, default=4, help="counters 1..N of the site")
    args = parser.parse_args(argv)
    for name in ("intake", "queue", "reporting", "notify"):
        setattr(args, name, getattr(args, name).rstrip("/"))
    if args.lifecycles < 1 or args.concurrency < 1:
        parser.error("--lifecycles and --concurrency must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(bench(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
