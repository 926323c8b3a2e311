"""Call-next latency with 10 counters calling and completing at once, as lines grow.

Starts its own nats-server, embedded store and queue service (a separate process), seeds one
session per line length with waiting tickets shaped exactly as the queue issues them (written
straight into the queue's store: issuing 100,000 tickets through the bus would measure intake,
not call-next), then lets 10 counters call-next → complete as fast as they can.

    .venv/bin/python bench/callnext.py [--lines 100,10000,100000] [--calls 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import httpx
import yaml
from measure import percentile, sample
from pydantic import SecretStr

from giliran.auth import AuthStore, Role
from giliran.contracts import utcnow
from giliran.settings import REPO_ROOT, Settings
from giliran.store import connect, instant
from giliran_ops.embedded import mongo_wire_store, nats_server, service_process

SITE = "cikarang-utara"
COUNTERS = 10
SERVICES = ["KTP-REKAM", "KTP-CETAK"]
PREFIX = {"KTP-REKAM": "A", "KTP-CETAK": "B"}


def catalogue(directory: Path) -> None:
    site = yaml.safe_load((REPO_ROOT / "deploy" / "sites" / "cikarang-utara.yaml").read_text())
    site["counters"] = [
        {"id": str(n), "name": {"id": f"Loket {n}", "en": f"Counter {n}"}, "services": SERVICES}
        for n in range(1, COUNTERS + 1)
    ]
    (directory / "site.yaml").write_text(yaml.safe_dump(site))


async def seed(mongo_url: str, db: str, session: str, length: int) -> None:
    """`length` waiting tickets per line (two lines), oldest first, in the shape issue makes."""
    client = connect(mongo_url)
    tickets = client[db]["tickets"]
    start = utcnow() - timedelta(minutes=30)
    batch: list[dict[str, object]] = []
    for n in range(length):
        for service in SERVICES:
            request_id = f"{session}-{service}-{n:06d}"
            at = instant(start + timedelta(microseconds=n))
            batch.append({
                "_id": f"{request_id}-{service}", "site": SITE, "session_id": session,
                "request_id": request_id, "service": service, "prefix": PREFIX[service],
                "number": f"{PREFIX[service]}-{n + 1:03d}", "status": "waiting",
                "issued_at": at, "arrived": True, "queued_at": at, "held": False,
                "priority": None, "is_priority": False, "appointment_at": None, "recalls": 0,
                "multi": False, "channel": "kiosk", "nik_masked": None,
            })  # fmt: skip
            if len(batch) >= 2000:
                await tickets.insert_many(batch)
                batch = []
    if batch:
        await tickets.insert_many(batch)
    await client.close()


async def counter_loop(
    http: httpx.AsyncClient, counter: str, calls: int, call_ms: list[float], done_ms: list[float]
) -> None:
    for _ in range(calls):
        started = time.perf_counter()
        r = await http.post(f"/api/v1/sites/{SITE}/counters/{counter}/call-next")
        call_ms.append((time.perf_counter() - started) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"call-next {r.status_code}: {r.text}")
        ticket_id = r.json()["ticket"]["ticket_id"]
        started = time.perf_counter()
        r = await http.post(f"/api/v1/sites/{SITE}/counters/{counter}/tickets/{ticket_id}/complete")
        done_ms.append((time.perf_counter() - started) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"complete {r.status_code}: {r.text}")


async def ready(http: httpx.AsyncClient) -> None:
    for _ in range(300):
        if (await http.get("/readyz")).status_code == 200:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("queue not ready")


async def run(lengths: Sequence[int], calls: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="giliran-bench-"))
    catalogue(work)
    nats = nats_server(work / "nats").start()
    store = mongo_wire_store(work / "store").start()
    await nats.wait_listening()
    await store.wait_listening()
    mongo_url = f"mongodb://127.0.0.1:{store.port}/?directConnection=true"
    settings = Settings(
        nats_url=f"nats://127.0.0.1:{nats.port}",
        mongo_url=mongo_url,
        db_prefix="bench",
        catalogue_dir=work,
        nik_hash_key=SecretStr("bench-nik-hash-key-0123456789abcdefghij"),
        nik_encryption_key=SecretStr("2sklCeVOsLm_1IFPRqUGUAZ211p0OOuLY686SWDloUo="),
        session_key=SecretStr("bench-session-key-0123456789abcdefghij"),
        audit_key=SecretStr("bench-audit-key-of-sufficient-length-0123"),
    )
    queue = service_process("queue", settings, work, env={"GILIRAN_LOG_LEVEL": "WARNING"})
    queue.start()
    try:
        await queue.wait_listening()
        client = connect(mongo_url)
        _, token = await AuthStore(client[settings.auth_database]).issue_token(
            "bench", Role.SUPERVISOR, SITE
        )
        await client.close()
        auth = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{queue.port}"
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=auth) as http:
            await ready(http)
            print(f"10 counters, each call-next → complete {calls // COUNTERS}× per line length; "
                  f"queue pid {queue.process.pid if queue.process else '?'}")  # fmt: skip
            print(f"{'waiting/line':>12} {'calls/s':>8} {'call p50':>9} {'call p99':>9} "
                  f"{'done p50':>9} {'done p99':>9} {'queue RSS':>10}")  # fmt: skip
            for length in lengths:
                # shaped as one of the site's sessions: a counter opens only on its own site's
                session = f"{SITE}-{length:08d}"
                seeding = time.perf_counter()
                await seed(mongo_url, "bench_queue", session, length)
                seeded = time.perf_counter() - seeding
                for n in range(1, COUNTERS + 1):
                    r = await http.post(
                        f"/api/v1/sites/{SITE}/counters/{n}/open", json={"session_id": session}
                    )
                    r.raise_for_status()
                rounds = min(calls, 2 * length) // COUNTERS
                call_ms: list[float] = []
                done_ms: list[float] = []
                started = time.perf_counter()
                await asyncio.gather(*(
                    counter_loop(http, str(n), rounds, call_ms, done_ms)
                    for n in range(1, COUNTERS + 1)
                ))  # fmt: skip
                elapsed = time.perf_counter() - started
                rss = sample(queue.process.pid if queue.process else None)
                print(
                    f"{length:>12,} {len(call_ms) / elapsed:>8.1f} "
                    f"{percentile(call_ms, 50):>7.1f}ms {percentile(call_ms, 99):>7.1f}ms "
                    f"{percentile(done_ms, 50):>7.1f}ms {percentile(done_ms, 99):>7.1f}ms "
                    f"{(rss.rss_kib / 1024 if rss else 0):>8.0f}MB"
                    f"   (seeded {2 * length:,} tickets in {seeded:.1f}s)"
                )
    finally:
        queue.stop()
        store.stop()
        nats.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", default="100,10000,100000")
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    asyncio.run(run([int(x) for x in args.lines.split(",")], args.calls))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
