"""Intake's own CPU per lifecycle, source trees compared in alternating rounds on one stack.

Starts nats-server, the embedded store and the queue once (this tree), then for each round and
each `--tree NAME=PATH` in turn a fresh intake process running PATH's code (`python -P` with
PYTHONPATH=PATH: that tree's giliran/ and services/, this venv's libraries). Each round: warm-up
lifecycles, then `--lifecycles` at `--rate` per second (open loop), each one kiosk-style submit
(counter channel, a supervisor's bearer token, as bench/sustained.py), the wait for its ticket,
then call-next at a counter and complete: intake handles the POST and its wait, the relay's
publishes and its ticket consumer's three events, as in a full lifecycle. Measured on intake's
process only, from /proc (utime + stime, not wall time: the box is shared), between a quiet
moment before the first submit and one `--settle` seconds after the last completion; plus its
store commands (its /metrics, read outside that window) per lifecycle.

    .venv/bin/python bench/http_cpu.py --tree before=/tmp/main-tree --tree after=. --rounds 4

Printed per round and per tree (median and every round): intake CPU ms per lifecycle, store
commands per lifecycle, and its idle CPU ms per second measured just before (periodic jobs).
A baseline tree: `git archive main giliran services giliran_ops | tar -x -C /tmp/main-tree`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sustained import SERVICE_CODES, SITE, write_catalogue

from giliran.auth import AuthStore, Role
from giliran.settings import Settings
from giliran.store import connect
from giliran_ops.embedded import (
    ManagedProcess,
    free_port,
    mongo_wire_store,
    nats_server,
    service_process,
)

TICKS = os.sysconf("SC_CLK_TCK")
COUNTERS = 16


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Round:
    tree: str
    lifecycles: int
    cpu_ms: float
    commands: float
    idle_ms_per_s: float
    errors: int
    kinds: dict[str, float] = field(default_factory=dict)
    waits: list[float] = field(default_factory=list)  # submit -> ticket, seconds (wall)
    store_ms: float = 0.0  # the store's CPU per lifecycle (its commands from queue included)

    def wait_ms(self, share: float) -> float:
        return self.waits[min(int(share * len(self.waits)), len(self.waits) - 1)] * 1000


async def store_commands(http: httpx.AsyncClient, url: str) -> dict[str, float]:
    text = (await http.get(f"{url}/metrics")).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "giliran_store_commands":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = f"{sample.labels['command']} {sample.labels['collection']}"
                    found[key] = sample.value
    return found


async def lifecycle(
    http: httpx.AsyncClient,
    intake: str,
    queue: str,
    index: int,
    errors: list[str],
    waits: list[float],
) -> None:
    body = {
        "site": SITE,
        "services": [SERVICE_CODES[index % len(SERVICE_CODES)]],
        "name": f"Bench {index + 1}",
        "phone": f"0813{index % 100_000_000:08d}",  # one phone each: intake limits per phone
        "consent": True,
        "channel": "counter",
    }
    try:
        sent = time.perf_counter()
        r = await http.post(f"{intake}/api/v1/requests", json=body)
        if r.status_code not in (201, 202):
            raise RuntimeError(f"submit -> {r.status_code} {r.text[:200]}")
        view = r.json()
        while not view["tickets"]:
            await asyncio.sleep(0.1)
            view = (await http.get(f"{intake}/api/v1/requests/{view['request_id']}")).json()
        waits.append(time.perf_counter() - sent)
        counter = index % COUNTERS + 1
        url = f"{queue}/api/v1/sites/{SITE}/counters/{counter}/call-next"
        for _ in range(500):
            called = await http.post(url)
            if called.status_code == 200:
                break
            await asyncio.sleep(0.02)  # callable a moment after intake showed the ticket
        else:
            raise RuntimeError("call-next: nothing callable")
        ticket_id = called.json()["ticket"]["ticket_id"]
        done = await http.post(f"{queue}/api/v1/tickets/{ticket_id}/complete")
        if done.status_code != 200:
            raise RuntimeError(f"complete -> {done.status_code}")
    except (httpx.HTTPError, RuntimeError, KeyError, ValueError) as error:
        errors.append(f"{type(error).__name__}: {error}")


async def drive(
    http: httpx.AsyncClient,
    intake: str,
    queue: str,
    first: int,
    n: int,
    rate: float,
    waits: list[float] | None = None,
) -> list[str]:
    """`n` lifecycles, arrival i at start + i / rate whatever the earlier ones take."""
    errors: list[str] = []
    waits = [] if waits is None else waits
    start = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = lifecycle(http, intake, queue, first + i, errors, waits)
        tasks.append(asyncio.create_task(task))
    await asyncio.gather(*tasks)
    return errors


async def ready(http: httpx.AsyncClient, url: str, what: str) -> None:
    for _ in range(300):
        try:
            if (await http.get(f"{url}/readyz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{what} not ready")


def start_strace(
    out: str | None, pid: int, tree: str, number: int
) -> subprocess.Popen[bytes] | None:
    """`strace -c` on intake's threads for the measured window: syscalls per lifecycle (the
    tracing slows the process: CPU figures of a traced round are not comparable)."""
    if not out:
        return None
    path = f"{out}.{tree}.{number + 1}"
    tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", path])
    time.sleep(0.5)  # attached before the first submit
    return tracer


def intake_process(tree: Path, settings: Settings, work: Path, port: int) -> ManagedProcess:
    """`giliran service intake` running `tree`'s code: -P keeps the working directory off
    sys.path, PYTHONPATH puts the tree before this venv's editable install."""
    made = service_process("intake", settings, work / "logs", port=port, env=ENV)
    made.args = [sys.executable, "-P", "-m", "giliran_ops.cli", "service", "intake"]
    assert made.env is not None
    made.env["PYTHONPATH"] = str(tree.resolve())
    return made


ENV = {"GILIRAN_DEMO": "true", "GILIRAN_LOG_LEVEL": "WARNING"}


async def main_async(args: argparse.Namespace) -> int:
    trees = [(name, Path(path)) for name, path in (t.split("=", 1) for t in args.tree)]
    work = Path(tempfile.mkdtemp(prefix="giliran-httpcpu-"))
    catalogue = work / "sites"
    catalogue.mkdir()
    write_catalogue(catalogue, COUNTERS)
    nats = nats_server(work).start()
    store = mongo_wire_store(work).start()
    processes: list[ManagedProcess] = [nats, store]
    rounds: list[Round] = []
    try:
        await nats.wait_listening()
        await store.wait_listening()
        settings = Settings(
            nats_url=f"nats://127.0.0.1:{nats.port}",
            mongo_url=f"mongodb://127.0.0.1:{store.port}/?directConnection=true",
            db_prefix="bench",
            catalogue_dir=catalogue,
            nik_hash_key=SecretStr("bench-nik-hash-key-0123456789abcdefghij"),
            nik_encryption_key=SecretStr("2sklCeVOsLm_1IFPRqUGUAZ211p0OOuLY686SWDloUo="),
            session_key=SecretStr("bench-session-key-0123456789abcdefghij"),
            audit_key=SecretStr("bench-audit-key-of-sufficient-length-0123"),
        )
        queue = service_process("queue", settings, work / "logs", env=ENV).start()
        processes.append(queue)
        await queue.wait_listening(within=60)
        client = connect(settings.mongo_url)
        _, token = await AuthStore(client[settings.auth_database]).issue_token(
            "bench", Role.SUPERVISOR, SITE
        )
        await client.close()
        queue_url = f"http://127.0.0.1:{queue.port}"
        assert store.process is not None
        store_pid = store.process.pid
        port = free_port()
        intake_url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        print(f"load average {os.getloadavg()[0]:.2f}; stack in {work}", flush=True)
        index = 0
        async with httpx.AsyncClient(timeout=30, headers=headers, limits=limits) as http:
            await ready(http, queue_url, "queue")
            for number in range(args.rounds):
                for name, tree in trees:
                    intake = intake_process(tree, settings, work, port).start()
                    try:
                        await intake.wait_listening(within=60)
                        await ready(http, intake_url, "intake")
                        assert intake.process is not None
                        pid = intake.process.pid
                        await drive(http, intake_url, queue_url, index, args.warmup, args.rate)
                        index += args.warmup
                        await asyncio.sleep(args.settle)
                        idle_start = cpu_seconds(pid)
                        await asyncio.sleep(args.idle)
                        idle = (cpu_seconds(pid) - idle_start) / args.idle * 1000
                        before = await store_commands(http, intake_url)
                        tracer = start_strace(args.strace, pid, name, number)
                        cpu_before = cpu_seconds(pid)
                        store_before = cpu_seconds(store_pid)
                        waits: list[float] = []
                        errors = await drive(
                            http, intake_url, queue_url, index, args.lifecycles, args.rate, waits
                        )
                        index += args.lifecycles
                        await asyncio.sleep(args.settle)
                        cpu = cpu_seconds(pid) - cpu_before
                        store_cpu = cpu_seconds(store_pid) - store_before
                        if tracer is not None:
                            tracer.send_signal(signal.SIGINT)
                            tracer.wait(timeout=30)
                        after = await store_commands(http, intake_url)
                    finally:
                        intake.stop()
                    n = args.lifecycles
                    kinds = {
                        k: (v - before.get(k, 0.0)) / n
                        for k, v in after.items()
                        if v - before.get(k, 0.0) > 0
                    }
                    done = Round(name, n, cpu * 1000 / n, sum(kinds.values()), idle, len(errors))
                    done.kinds = kinds
                    done.waits = sorted(waits)
                    done.store_ms = store_cpu * 1000 / n
                    rounds.append(done)
                    print(
                        f"round {number + 1} {name:>10}: intake {done.cpu_ms:5.2f} ms CPU and "
                        f"{done.commands:5.2f} store commands per lifecycle (store CPU "
                        f"{done.store_ms:5.2f} ms, queue's included); submit -> ticket "
                        f"p50 {done.wait_ms(0.5):.0f} ms, p95 {done.wait_ms(0.95):.0f} ms; idle "
                        f"{idle:4.1f} ms/s; errors {len(errors)}; load "
                        f"{os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
                    for error in sorted(set(errors))[:5]:
                        print(f"    {error}")
    finally:
        for process in reversed(processes):
            process.stop()
    print()
    for name, _ in trees:
        mine = [r for r in rounds if r.tree == name]
        cpus = ", ".join(f"{r.cpu_ms:.2f}" for r in mine)
        median = statistics.median(r.cpu_ms for r in mine)
        print(
            f"{name:>10}: CPU ms per lifecycle median {median:.2f} ({cpus}); "
            f"store commands {statistics.median(r.commands for r in mine):.2f}"
        )
        last = mine[-1].kinds
        for kind, value in sorted(last.items(), key=lambda kv: -kv[1]):
            if value >= 0.05:
                print(f"{'':>14}{kind} {value:.2f}")
    return 1 if any(r.errors for r in rounds) else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH, repeatable")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lifecycles", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=1.5, help="seconds after the last one")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle CPU measured")
    parser.add_argument(
        "--strace", metavar="PREFIX", help="strace -c intake during each round: PREFIX.TREE.N"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
