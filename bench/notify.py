"""Benchmark: ticket.called events through a notify process to a local HTTP SMS gateway."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import nats
import yaml
from measure import Sample, percentile, sample
from nats.js.client import JetStreamContext

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python bench/notify.py` puts bench/ first, not the root
    sys.path.insert(0, str(REPO_ROOT))

from giliran.bus import ensure_streams, publish_event  # noqa: E402
from giliran.contracts import (  # noqa: E402
    Channel,
    CitizenRef,
    RequestSubmitted,
    TicketCalled,
    new_event,
    new_id,
    utcnow,
)
from giliran_ops.embedded import ManagedProcess, free_port, mongo_wire_store, nats_server  # noqa: E402
from tests.fakes.gateway import FakeGateway, Received  # noqa: E402

SITE = "cikarang-utara"
SERVICE = "KIA"
PHONE = "+6281234567890"
PHONE_LOCAL = "081234567890"
CHANNEL = "sms"
GATEWAY_PATH = "/sms"
NUMBER_PREFIX = "B"  # ticket numbers B-00001...; found again in the SMS text at the gateway
NUMBER = re.compile(rf"\b({NUMBER_PREFIX}-[0-9]{{3,}})\b")
POLL_SECONDS = 0.02
SETTLE_SECONDS = 1.0  # after the last expected message: time for a duplicate to show up
STOP_SECONDS = 15.0
PAUSE_MS = 50.0


# --- small helpers ---------------------------------------------------------------------------


def row(label: str, values: Sequence[float]) -> str:
    if not values:
        return f"  {label:<34} {0:>5}        -"
    figures = [percentile(values, p) for p in (50, 95, 99)] + [max(values)]
    return f"  {label:<34} {len(values):>5}" + "".join(f"{v:>9.1f}" for v in figures)


def mib(found: Sample | None) -> str:
    return f"{found.rss_kib / 1024:>7.1f}" if found is not None else f"{'-':>7}"


def die_with_parent() -> None:
    """Linux: the notify process gets SIGTERM if this benchmark dies, even by kill -9."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# --- the stack under test --------------------------------------------------------------------


@dataclass
class Stopped:
    """How the notify process ended."""

    returncode: int | None = None
    seconds: float = 0.0
    killed: bool = False


@dataclass
class Stack:
    """What this benchmark started, so that it can stop all of it."""

    root: Path
    nats: ManagedProcess
    store: ManagedProcess
    notify_port: int = 0
    notify_log: Path = Path()
    pids: dict[int, str] = field(default_factory=dict)
    stopped: Stopped = field(default_factory=Stopped)

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats.port}"

    def pid(self, role: str) -> int | None:
        return next((p for p, r in self.pids.items() if r == role), None)


@asynccontextmanager
async def servers(root: Path) -> AsyncIterator[Stack]:
    """nats-server (JetStream) and the embedded store on free ports, stopped on the way out."""
    stack = Stack(root=root, nats=nats_server(root), store=mongo_wire_store(root))
    try:
        for server in (stack.nats, stack.store):
            server.start()
            assert server.process is not None
            stack.pids[server.process.pid] = server.name
        await stack.nats.wait_listening()
        await stack.store.wait_listening()
        yield stack
    finally:
        stack.store.stop()
        stack.nats.stop()


def notify_config(gateway_url: str, rate_limit: float) -> dict[str, Any]:
    return {
        "channels": [
            {
                "name": CHANNEL,
                "type": "http",
                "medium": "sms",
                "url": f"{gateway_url}{GATEWAY_PATH}",
                "encoding": "form",
                "fields": {"to": "{phone_local}", "message": "{text}", "ref": "{ref}"},
                "rate_per_second": rate_limit,
            }
        ]
    }


@asynccontextmanager
async def notify_process(stack: Stack, gateway_url: str, rate_limit: float) -> AsyncIterator[None]:
    """`giliran service notify` as its own process; SIGTERM (then SIGKILL) on the way out."""
    config = stack.root / "notify.yaml"
    config.write_text(yaml.safe_dump(notify_config(gateway_url, rate_limit)))
    stack.notify_port = free_port()
    stack.notify_log = stack.root / "logs" / "notify.log"
    env = {
        **os.environ,
        "GILIRAN_NATS_URL": stack.nats_url,
        "GILIRAN_MONGO_URL": f"mongodb://127.0.0.1:{stack.store.port}/?directConnection=true",
        "GILIRAN_DB_PREFIX": "bench",
        "GILIRAN_NOTIFY_PORT": str(stack.notify_port),
        "GILIRAN_NOTIFY_CONFIG": str(config),
        "GILIRAN_LOG_LEVEL": "WARNING",
        "GILIRAN_SESSION_KEY": "bench-session-key-0123456789abcdefghij",
        "GILIRAN_AUDIT_KEY": "bench-audit-key-of-sufficient-length-0123",
    }
    with stack.notify_log.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "giliran_ops.cli", "service", "notify",
            env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip
    stack.pids[process.pid] = "notify"
    try:
        await wait_ready(stack, process)
        yield
    finally:
        await stop_notify(stack, process)


async def wait_ready(stack: Stack, process: asyncio.subprocess.Process, within: float = 60) -> None:
    url = f"http://127.0.0.1:{stack.notify_port}/readyz"
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"notify exited with {process.returncode}; {stack.notify_log}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"notify not ready in {within:.0f} s; see {stack.notify_log}")
            await asyncio.sleep(0.1)


async def stop_notify(stack: Stack, process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after STOP_SECONDS; how it went is kept in `stack.stopped`."""
    stopped = stack.stopped
    if process.returncode is not None:
        stopped.returncode = process.returncode
        return
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(STOP_SECONDS):
            await process.wait()
    except TimeoutError:
        stopped.killed = True
        process.kill()
        await process.wait()
    stopped.returncode, stopped.seconds = process.returncode, time.monotonic() - started


def leftovers(stack: Stack) -> list[str]:
    """`ps` lines of processes this run started that are still there (by pid or by data dir)."""
    listing = subprocess.run(
        ["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in listing.splitlines():
        pid_text, _, args = line.strip().partition(" ")
        if int(pid_text) in stack.pids or str(stack.root) in args:
            found.append(line.strip())
    return found


# --- events ----------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    called_at: dict[str, float] = field(default_factory=dict)  # ticket number → epoch seconds
    publish_started: float = 0.0
    publish_ended: float = 0.0
    behind_schedule_ms: float = 0.0
    caught_up: float | None = None  # seconds from the last publish to the last expected receipt


def request_event(index: int) -> Any:
    return new_event(
        RequestSubmitted(
            request_id=new_id(),
            session_id=f"{SITE}-bench-{index}",
            services=[SERVICE],
            channel=Channel.ONLINE,
            citizen=CitizenRef(consent=True, phone=PHONE),
            submitted_at=utcnow(),
        ),
        site=SITE,
    )


def called_event(request: Any, n: int) -> tuple[str, Any]:
    """A `ticket.called` for a ticket of its own, with called_at = now."""
    number = f"{NUMBER_PREFIX}-{n:05d}"
    now = utcnow()
    event = new_event(
        TicketCalled(
            ticket_id=f"{request.data.request_id}-{SERVICE}-{n}",
            request_id=request.data.request_id,
            session_id=request.data.session_id,
            service=SERVICE,
            number=number,
            issued_at=now,
            counter="2",
            called_at=now,
        ),
        site=SITE,
        at=now,
    )
    return number, event


class Publisher:
    """Publishes straight to JetStream with the relay's function, one connection for the run."""

    def __init__(self, js: JetStreamContext, requests: list[Any]) -> None:
        self.js = js
        self.requests = requests
        self.next_number = 1

    async def called(self, phase: Phase) -> None:
        n = self.next_number
        self.next_number += 1
        number, event = called_event(self.requests[(n - 1) % len(self.requests)], n)
        phase.called_at[number] = event.data.called_at.timestamp()
        await publish_event(self.js, event.to_json_dict())


async def burst(publisher: Publisher, count: int) -> Phase:
    phase = Phase("burst")
    phase.publish_started = time.time()
    for _ in range(count):
        await publisher.called(phase)
    phase.publish_ended = time.time()
    return phase


async def steady(publisher: Publisher, count: int, rate: float) -> Phase:
    """`count` events at `rate` per second on a fixed schedule (a late one does not shift the
    rest)."""
    phase = Phase("steady")
    loop = asyncio.get_running_loop()
    start = loop.time()
    phase.publish_started = time.time()
    for i in range(count):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        phase.behind_schedule_ms = max(phase.behind_schedule_ms, (loop.time() - due) * 1000)
        await publisher.called(phase)
    phase.publish_ended = time.time()
    return phase


# --- what the gateway saw --------------------------------------------------------------------


class Tally:
    """Ticket number → the 2xx-answered gateway requests about it, in arrival order; reads only
    what arrived since the last look, so polling stays cheap next to the process under test."""

    def __init__(self, gw: FakeGateway) -> None:
        self.gw = gw
        self.by_number: dict[str, list[Received]] = {}
        self._read = 0

    def update(self) -> dict[str, list[Received]]:
        received = self.gw.received
        while self._read < len(received) and received[self._read].status is not None:
            r = received[self._read]
            self._read += 1
            if r.path != GATEWAY_PATH or r.status is None or not 200 <= r.status < 300:
                continue
            match = NUMBER.search(r.form.get("message", ""))
            self.by_number.setdefault(match.group(1) if match else "?", []).append(r)
        return self.by_number


async def wait_for(tally: Tally, phase: Phase, within: float) -> None:
    """Until every message of the phase reached the gateway (or `within` s after publishing),
    then SETTLE_SECONDS more so that a late duplicate is counted too."""
    deadline = time.monotonic() + within
    waiting = set(phase.called_at)
    while time.monotonic() < deadline:
        seen = tally.update()
        waiting = {number for number in waiting if number not in seen}
        if not waiting:
            last = max(seen[number][0].wall for number in phase.called_at)
            phase.caught_up = last - phase.publish_ended
            break
        await asyncio.sleep(POLL_SECONDS)
    await asyncio.sleep(SETTLE_SECONDS)


@dataclass
class Figures:
    received: int
    latencies_ms: list[float]
    first_to_last: float
    per_second: float
    busiest_second: int
    pauses: int  # gaps of at least PAUSE_MS between consecutive receipts
    longest_pause_ms: float


def figures(phase: Phase, seen: dict[str, list[Received]]) -> Figures:
    firsts = {n: seen[n][0] for n in phase.called_at if n in seen}
    latencies = [(r.wall - phase.called_at[n]) * 1000 for n, r in firsts.items()]
    times = sorted(r.at for r in firsts.values())
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    busiest, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        busiest = max(busiest, end - start + 1)
    gaps = [(later - earlier) * 1000 for earlier, later in pairwise(times)]
    return Figures(
        received=len(firsts),
        latencies_ms=latencies,
        first_to_last=span,
        per_second=(len(times) - 1) / span if span > 0 else 0.0,
        busiest_second=busiest,
        pauses=sum(1 for gap in gaps if gap >= PAUSE_MS),
        longest_pause_ms=max(gaps, default=0.0),
    )


# --- the run ---------------------------------------------------------------------------------


def print_phase(phase: Phase, found: Figures, args: argparse.Namespace) -> None:
    def line(label: str, value: object) -> None:
        print(f"  {label:<35}{value}")

    sent = len(phase.called_at)
    published = phase.publish_ended - phase.publish_started
    rate = sent / published if published > 0 else 0.0
    if phase.name == "steady":
        print(f"{phase.name}: {sent} ticket.called at {args.steady_rate:g}/s (fixed schedule)")
        behind = f", at most {phase.behind_schedule_ms:.1f} ms behind schedule"
    else:
        print(f"{phase.name}: {sent} ticket.called published as fast as possible")
        behind = ""
    line("published in", f"{published:.2f} s ({rate:.1f}/s{behind})")
    line("gateway received", f"{found.received} of {sent}")
    line("gateway first → last receipt", f"{found.first_to_last:.2f} s")
    line("gateway messages/s", f"{found.per_second:.1f}")
    line("busiest 1 s window at the gateway", found.busiest_second)
    line(
        f"pauses ≥ {PAUSE_MS:g} ms between receipts",
        f"{found.pauses} (longest {found.longest_pause_ms:.0f} ms)",
    )
    if phase.caught_up is not None:
        line("last publish → last receipt", f"{phase.caught_up:.2f} s")
    else:
        line("last publish → last receipt", f"NOT within {args.timeout:g} s")


async def bench(args: argparse.Namespace, root: Path) -> int:
    async with servers(root) as stack:
        async with (
            FakeGateway() as gw,
            notify_process(stack, gw.url, args.rate_limit),
        ):
            client = await nats.connect(stack.nats_url, name="giliran-bench-notify")
            try:
                js = client.jetstream()
                await ensure_streams(js)
                requests = [request_event(i) for i in range(args.requests)]
                for request in requests:
                    await publish_event(js, request.to_json_dict())
                publisher = Publisher(js, requests)
                notify_pid = stack.pid("notify")
                ready = {pid: sample(pid) for pid in stack.pids}
                self_before = resource.getrusage(resource.RUSAGE_SELF)

                tally = Tally(gw)
                first = await burst(publisher, args.burst)
                await wait_for(tally, first, args.timeout)
                after_burst = {pid: sample(pid) for pid in stack.pids}
                second = await steady(publisher, args.steady, args.steady_rate)
                await wait_for(tally, second, args.timeout)
                after_steady = {pid: sample(pid) for pid in stack.pids}
                self_after = resource.getrusage(resource.RUSAGE_SELF)
            finally:
                await client.close()
        # notify and the gateway have stopped; the two servers still run.
        seen = tally.update()
        duplicates_by_ref = gw.duplicates(GATEWAY_PATH)
        raw = [r for r in gw.received if r.path == GATEWAY_PATH]
    # Everything this run started has been stopped: check that nothing is left.
    left = leftovers(stack)

    phases = (first, second)
    found = {p.name: figures(p, seen) for p in phases}
    expected = {n for p in phases for n in p.called_at}
    missing = sum(1 for n in expected if n not in seen)
    twice = sum(len(rs) - 1 for n, rs in seen.items() if n in expected and len(rs) > 1)
    foreign = sum(len(rs) for n, rs in seen.items() if n not in expected)
    statuses = Counter(r.status for r in raw)
    not_2xx = sum(c for s, c in statuses.items() if s is None or not 200 <= s < 300)
    wrong_to = sum(1 for r in raw if r.form.get("to") != PHONE_LOCAL)
    log_lines = stack.notify_log.read_text(errors="replace").splitlines()
    problems = [line for line in log_lines if re.search(r"WARNING|ERROR|Traceback", line)]

    print("Giliran notify benchmark: HTTP SMS channel (form), notify as its own process")
    print(
        f"  rate_per_second {args.rate_limit:g}, requests {args.requests}, "
        f"burst {args.burst}, steady {args.steady} at {args.steady_rate:g}/s, "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )
    for phase in phases:
        print_phase(phase, found[phase.name], args)
    header = "".join(f"{h:>9}" for h in ("p50", "p95", "p99", "max"))
    print(f"  {'latency ms (called_at → receipt)':<34} {'n':>5}{header}")
    for phase in phases:
        print(row(phase.name, found[phase.name].latencies_ms))
    print("checks")
    print(f"  MISSING     {missing:>5}  tickets whose message never reached the gateway")
    print(f"  DUPLICATED  {duplicates_by_ref:>5}  gateway: 2xx requests repeating a ref")
    print(f"  DUPLICATED  {twice:>5}  tickets messaged more than once")
    print(f"  FOREIGN     {foreign:>5}  messages for tickets this run did not call")
    print(f"  NOT 2XX     {not_2xx:>5}  gateway answers (should be none)")
    print(f"  WRONG TO    {wrong_to:>5}  requests not addressed to {PHONE_LOCAL}")
    print(f"  notify log  {len(problems):>5}  warning/error lines")
    for line in problems[:10]:
        print(f"    {line[:200]}")
    print("processes (RSS MiB: ready → after burst → after steady; CPU s during both phases)")
    for pid, role in stack.pids.items():
        start, middle, end = ready.get(pid), after_burst.get(pid), after_steady.get(pid)
        cpu = end.cpu_seconds - start.cpu_seconds if start and end else float("nan")
        print(f"  {role:<12} pid {pid:<8} {mib(start)} → {mib(middle)} → {mib(end)}   {cpu:>6.1f}")
    bench_cpu = (self_after.ru_utime + self_after.ru_stime) - (
        self_before.ru_utime + self_before.ru_stime
    )
    print(
        f"  {'bench+gw':<12} pid {os.getpid():<8} {'':>7}   {'':>7}   "
        f"{self_after.ru_maxrss / 1024:>7.1f}   {bench_cpu:>6.1f}  (max RSS)"
    )
    print("shutdown")
    how = "SIGKILL after SIGTERM timed out" if stack.stopped.killed else "SIGTERM"
    code = stack.stopped.returncode
    # uvicorn ends its graceful shutdown by raising the signal it caught again.
    why = " (uvicorn re-raises the SIGTERM it handled)" if code == -signal.SIGTERM else ""
    took = stack.stopped.seconds
    print(f"  notify pid {notify_pid}: {how}, exit code {code}{why}, {took:.2f} s")
    print(f"  {'processes left behind (ps)':<35}{len(left) or 'none'}")
    for line in left:
        print(f"    {line}")
    failed = missing + duplicates_by_ref + twice + foreign + not_2xx + wrong_to + len(left)
    return 1 if failed else 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--burst", type=int, default=2000, help="events in the burst phase")
    parser.add_argument("--steady", type=int, default=500, help="events in the steady phase")
    parser.add_argument(
        "--steady-rate", type=float, default=50.0, help="events per second in the steady phase"
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=1000.0,
        help="the channel's rate_per_second (default: high enough not to be the bottleneck)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=1,
        help="requests the tickets belong to, in turn (notify handles one request's events "
        "one after another)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="seconds after a phase's last publish to wait for its messages",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data and log directory")
    args = parser.parse_args(argv)
    if min(args.burst, args.steady, args.requests) < 1:
        parser.error("--burst, --steady and --requests must be at least 1")
    if min(args.steady_rate, args.rate_limit) <= 0:
        parser.error("--steady-rate and --rate-limit must be above 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="giliran-bench-notify-"))
    status = 2
    try:
        status = asyncio.run(bench(args, root))
    finally:
        if args.keep or status != 0:
            print(f"data and logs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
