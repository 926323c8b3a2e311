"""Benchmark: `giliran reporting rebuild` over a large recorded stream (default 100,000 events)."""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from giliran.bus import ensure_streams, publish_event
from giliran.contracts import (
    Channel,
    CitizenRef,
    FeedbackSubmitted,
    RequestSubmitted,
    TicketCalled,
    TicketCompleted,
    TicketIssued,
    new_event,
    new_id,
)
from giliran.settings import Settings
from giliran_ops.embedded import mongo_wire_store, nats_server
from services.reporting.rebuild import rebuild

SITES = ["cikarang-utara", "botram-setu", "botram-cibitung", "botram-tambun-selatan"]
SERVICES = ["KTP-CETAK", "KK-UBAH", "KIA", "AKTA-LAHIR", "IKD"]


def day_of_events(n_events: int, seed: int) -> list[dict[str, object]]:
    """A multi-site Sunday: each citizen submits, is issued, called, completed; some answer the
    survey. About 4.3 events per citizen."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
    events: list[dict[str, object]] = []
    n = 0
    while len(events) < n_events:
        n += 1
        site = SITES[n % len(SITES)]
        session = f"{site}-20261129"
        service = rng.choice(SERVICES)
        request_id = new_id()
        issued = start + timedelta(seconds=rng.uniform(0, 7200))
        called = issued + timedelta(seconds=rng.expovariate(1 / 900))
        done = called + timedelta(seconds=rng.expovariate(1 / 420))
        facts = {
            "ticket_id": f"{request_id}-{service}",
            "request_id": request_id,
            "session_id": session,
            "service": service,
            "number": f"A-{n:03d}",
            "issued_at": issued,
        }
        batch = [
            RequestSubmitted(
                request_id=request_id, session_id=session, services=[service],
                channel=rng.choice(list(Channel)), citizen=CitizenRef(), submitted_at=issued,
            ),
            TicketIssued(**facts, waiting_ahead=rng.randint(0, 40)),
            TicketCalled(**facts, counter=str(rng.randint(1, 8)), called_at=called),
            TicketCompleted(**facts, counter="1", called_at=called, completed_at=done),
        ]  # fmt: skip
        if rng.random() < 0.3:
            scores = {f"U{i}": rng.choice([2, 3, 3, 4, 4]) for i in range(1, 10)}
            batch.append(
                FeedbackSubmitted(
                    feedback_id=new_id(), request_id=request_id, session_id=session,
                    service=service, scores=scores, submitted_at=done,
                )
            )  # fmt: skip
        events += [new_event(d, site=site).to_json_dict() for d in batch]
    return events[:n_events]


async def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="giliran-bench-replay-"))
    nats = nats_server(workdir).start()
    store = mongo_wire_store(workdir).start()
    try:
        await nats.wait_listening()
        await store.wait_listening()
        settings = Settings(
            nats_url=f"nats://127.0.0.1:{nats.port}",
            mongo_url=f"mongodb://127.0.0.1:{store.port}/?directConnection=true",
            db_prefix="benchlive",
        )
        events = day_of_events(args.events, args.seed)
        import nats as nats_client

        connection = await nats_client.connect(settings.nats_url)
        js = connection.jetstream()
        await ensure_streams(js)
        started = time.monotonic()
        for event in events:
            await publish_event(js, event)
        published_in = time.monotonic() - started
        await connection.close()
        print(f"recorded {len(events)} events in {published_in:.1f}s "
              f"({len(events) / published_in:,.0f}/s), {len(SITES)} sites")  # fmt: skip

        first = await rebuild(settings, "benchlive", keep=True)
        print(f"replay 1 (builds the reference): {first.events} events in {first.seconds:.1f}s, "
              f"{first.rate:,.0f} events/s")  # fmt: skip
        second = await rebuild(settings, "benchcopy")
        print(f"replay 2 (compared with 1):      {second.events} events in {second.seconds:.1f}s, "
              f"{second.rate:,.0f} events/s; equal: {second.equal}")  # fmt: skip
        for c in second.comparisons:
            print(f"  {c.collection:<16} {c.rebuilt:>7} documents, equal {c.equal}")
        return 0 if second.equal else 1
    finally:
        store.stop()
        nats.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=11)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
