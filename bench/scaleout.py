"""Scale-out: how fast one vs two instances of a consuming service work off the same backlog.

For each configuration a fresh nats-server and embedded store are started, the instances of the
service (default reporting: every event of a lifecycle lands in its projections) are started as
processes on the same durable consumer and become ready, then a backlog of recorded lifecycles
(bench/replay.py's multi-site Sunday) is published at once. Timed from the first publish until
the durable consumer has nothing pending and nothing unacknowledged.

    .venv/bin/python bench/scaleout.py --events 6000
    .venv/bin/python bench/scaleout.py --events 6000 --configs "1@0;2@0,1"

A configuration is `instances[@cpus]`: `2@0,1` pins instance 1 to CPU 0 and instance 2 to CPU 1
(taskset), `1@0` gives one instance CPU 0 only — the honest way to offer a second instance CPU
the first could not use on this 2-core box. nats-server and the store are never pinned.
Printed: drain time and rate, events handled per instance (each event must be handled exactly
once in total: handled + duplicate-skipped = published), and CPU used by every process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import nats
from measure import sample
from pydantic import SecretStr
from replay import day_of_events

from giliran.bus import ensure_streams, publish_event
from giliran.contracts.subjects import STREAM
from giliran.settings import Settings
from giliran_ops.embedded import ManagedProcess, mongo_wire_store, nats_server, service_process


def counted(metrics: str, outcome: str) -> int:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("giliran_events_handled_total{") and f'outcome="{outcome}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def one_config(
    service: str, instances: int, cpus: list[str], events: list[dict[str, object]]
) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="giliran-scaleout-"))
    infra = [nats_server(work).start(), mongo_wire_store(work).start()]
    procs: list[ManagedProcess] = []
    try:
        for process in infra:
            await process.wait_listening()
        settings = Settings(
            nats_url=f"nats://127.0.0.1:{infra[0].port}",
            mongo_url=f"mongodb://127.0.0.1:{infra[1].port}/?directConnection=true",
            db_prefix="scaleout",
            nik_hash_key=SecretStr("bench-nik-hash-key-0123456789abcdefghij"),
            nik_encryption_key=SecretStr("2sklCeVOsLm_1IFPRqUGUAZ211p0OOuLY686SWDloUo="),
            session_key=SecretStr("bench-session-key-0123456789abcdefghij"),
            audit_key=SecretStr("bench-audit-key-of-sufficient-length-0123"),
        )
        for n in range(instances):
            process = service_process(
                service, settings, work / f"logs{n}", env={"GILIRAN_LOG_LEVEL": "WARNING"}
            )
            if cpus:
                process.args = ["taskset", "-c", cpus[n % len(cpus)], *process.args]
            procs.append(process.start())
        async with httpx.AsyncClient(timeout=10) as http:
            for process in procs:
                await process.wait_listening(within=60)
                for _ in range(300):
                    if (await http.get(f"http://127.0.0.1:{process.port}/readyz")).is_success:
                        break
                    await asyncio.sleep(0.2)
            connection = await nats.connect(settings.nats_url)
            js = connection.jetstream()
            await ensure_streams(js)
            durables = [c.name for c in await js.consumers_info(STREAM)]
            pids = {f"{service} {n + 1}": p.process.pid for n, p in enumerate(procs) if p.process}
            pids.update({p.name: p.process.pid for p in infra if p.process})
            before = {name: sample(pid) for name, pid in pids.items()}
            started = time.perf_counter()
            in_flight = asyncio.Semaphore(64)

            async def send(event: dict[str, object]) -> None:
                async with in_flight:
                    await publish_event(js, event)

            await asyncio.gather(*(send(e) for e in events))
            published = time.perf_counter() - started
            while True:
                infos = [await js.consumer_info(STREAM, d) for d in durables]
                if all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos):
                    break
                await asyncio.sleep(0.1)
            drained = time.perf_counter() - started
            after = {name: sample(pid) for name, pid in pids.items()}
            await connection.close()
            metrics = [(await http.get(f"http://127.0.0.1:{p.port}/metrics")).text for p in procs]
    finally:
        for process in procs:
            process.stop()
        for process in reversed(infra):
            process.stop()
        shutil.rmtree(work, ignore_errors=True)
    cpu = {
        name: (after[name].cpu_seconds - before[name].cpu_seconds)  # type: ignore[union-attr]
        for name in pids
        if before.get(name) and after.get(name)
    }
    return {
        "instances": instances,
        "cpus": ",".join(cpus) if cpus else "any",
        "published_s": published,
        "drained_s": drained,
        "rate": len(events) / drained,
        "handled": [counted(m, "handled") for m in metrics],
        "duplicate": [counted(m, "duplicate") for m in metrics],
        "ignored": [counted(m, "ignored") for m in metrics],
        "cpu": cpu,
        "load": os.getloadavg()[0],
    }


async def run(args: argparse.Namespace) -> int:
    events = day_of_events(args.events, seed=7)
    print(
        f"{len(events)} events (bench/replay.py's Sunday) into {args.service}; "
        f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}"
    )
    failures = 0
    for config in args.configs.split(";"):
        count_text, _, cpu_text = config.partition("@")
        cpus = [c for c in cpu_text.split(",") if c]
        result = await one_config(args.service, int(count_text), cpus, events)
        handled, duplicate, ignored = result["handled"], result["duplicate"], result["ignored"]
        assert isinstance(handled, list) and isinstance(duplicate, list)
        assert isinstance(ignored, list)
        cpu = result["cpu"]
        assert isinstance(cpu, dict)
        drained = float(result["drained_s"])  # type: ignore[arg-type]
        print(
            f"{result['instances']} instance(s), CPUs {result['cpus']}: drained in "
            f"{drained:.1f} s = {result['rate']:.0f} events/s "
            f"(published in {result['published_s']:.1f} s; load {result['load']:.2f})"
        )
        print(
            f"  handled per instance {handled} = {sum(handled)}, not for this service "
            f"{sum(ignored)}, duplicates skipped {sum(duplicate)} (published {len(events)})"
        )
        print(
            "  CPU s (busy % of the drain): "
            + ", ".join(f"{n} {s:.1f} ({100 * s / drained:.0f}%)" for n, s in cpu.items())
        )
        if sum(handled) + sum(ignored) != len(events):
            failures += 1
            print("  MISMATCH: events handled (or ignored) in total differ from events published")
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", default="reporting", choices=["reporting", "notify", "queue"])
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--configs", default="1;2;1@0;2@0,1")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
