"""Benchmark: how long reporting takes to answer a day summary (and the kabupaten roll-up) once
N tickets are projected, and how fast it projects them. Runs against whichever code is on
PYTHONPATH first, so the same script measures an older commit (see bench/README.md)."""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

if "--here" in sys.argv:  # measure this checkout even when another one is installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from measure import percentile

from giliran.contracts import (
    Channel,
    CitizenRef,
    RequestSubmitted,
    TicketCalled,
    TicketCompleted,
    TicketIssued,
    new_event,
    new_id,
)
from giliran.store import connect
from giliran_ops.embedded import mongo_wire_store
from services.reporting.handlers import Reporting
from services.reporting.store import FactStore
from services.reporting.subscribers import handlers_for

SITE = "cikarang-utara"
OTHER_SITES = ["botram-setu", "botram-cibitung", "botram-tambun-selatan"]
SERVICES = ["KTP-CETAK", "KK-UBAH", "KIA", "AKTA-LAHIR", "IKD"]
DAY = date(2026, 11, 29)


def citizens(n: int, seed: int) -> list[list[Any]]:
    """n citizens of one Sunday, half at SITE and half spread over three fairs: request, issued,
    called, completed (4 events each)."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
    out = []
    for i in range(n):
        site = SITE if i % 2 == 0 else OTHER_SITES[i % 3]
        session = f"{site}-20261129"
        service = rng.choice(SERVICES)
        request_id = new_id()
        issued = start + timedelta(seconds=rng.uniform(0, 7200))
        called = issued + timedelta(seconds=rng.expovariate(1 / 900))
        done = called + timedelta(seconds=rng.expovariate(1 / 420))
        counter = str(rng.randint(1, 8))
        facts = {
            "ticket_id": f"{request_id}-{service}", "request_id": request_id,
            "session_id": session, "service": service, "number": f"A-{i:03d}",
            "issued_at": issued,
        }  # fmt: skip
        data = [
            RequestSubmitted(
                request_id=request_id, session_id=session, services=[service],
                channel=rng.choice(list(Channel)), citizen=CitizenRef(), submitted_at=issued,
            ),
            TicketIssued(**facts, waiting_ahead=rng.randint(0, 40)),
            TicketCalled(**facts, counter=counter, called_at=called),
            TicketCompleted(**facts, counter=counter, called_at=called, completed_at=done),
        ]  # fmt: skip
        out.append([new_event(d, site=site) for d in data])
    return out


async def measure(url: str, tickets: int, seed: int, repeats: int) -> dict[str, float]:
    client = connect(url, timeout_seconds=60)
    db = client[f"bench{tickets}"]
    store = FactStore(db)
    await store.ensure_indexes()
    handlers = handlers_for(Reporting(store=store))

    async def apply(events: list[Any]) -> None:
        for event in events:
            await handlers[type(event.data)](event)

    groups = citizens(tickets, seed)
    started = time.monotonic()
    # As the consumer does: one request's events in order, requests concurrently (64 at once).
    for i in range(0, len(groups), 64):
        await asyncio.gather(*(apply(g) for g in groups[i : i + 64]))
    loaded = time.monotonic() - started
    events = sum(len(g) for g in groups)

    reporting = Reporting(store=store)
    site_times, kab_times = [], []
    summary: Any = None
    for _ in range(repeats):
        t = time.monotonic()
        summary = await reporting.day_summary(SITE, DAY)
        site_times.append(time.monotonic() - t)
        t = time.monotonic()
        await reporting.kabupaten(DAY)
        kab_times.append(time.monotonic() - t)
    await client.drop_database(db.name)
    await client.close()
    return {
        "tickets": tickets,
        "events": events,
        "events_per_s": events / loaded,
        "site_tickets": summary.issued,
        "site_p50_ms": percentile(site_times, 50) * 1000,
        "site_max_ms": max(site_times) * 1000,
        "kab_p50_ms": percentile(kab_times, 50) * 1000,
        "kab_max_ms": max(kab_times) * 1000,
        "wait_p90_s": summary.wait_seconds.p90,
    }


async def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="giliran-bench-summary-"))
    store = mongo_wire_store(workdir).start()
    try:
        await store.wait_listening()
        url = f"mongodb://127.0.0.1:{store.port}/?directConnection=true"
        print(f"{'tickets':>8} {'events':>8} {'project ev/s':>12} {'site tickets':>12} "
              f"{'site p50 ms':>11} {'site max ms':>11} {'kab p50 ms':>10} {'kab max ms':>10} "
              f"{'wait p90 s':>10}")  # fmt: skip
        for n in args.tickets:
            r = await measure(url, n, args.seed, args.repeats)
            print(f"{r['tickets']:>8,} {r['events']:>8,} {r['events_per_s']:>12,.0f} "
                  f"{r['site_tickets']:>12,} {r['site_p50_ms']:>11,.1f} {r['site_max_ms']:>11,.1f} "
                  f"{r['kab_p50_ms']:>10,.1f} {r['kab_max_ms']:>10,.1f} "
                  f"{r['wait_p90_s']:>10,.1f}", flush=True)  # fmt: skip
        return 0
    finally:
        store.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickets", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--here", action="store_true", help="import this checkout's code")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
