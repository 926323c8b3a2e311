"""Giliran's bus overhead next to raw nats-py JetStream on this machine, same messages.

Publishes N ticket.called events (the real envelope, ~0.7 KB) to a fresh nats-server with
JetStream, then consumes them: first raw (js.publish / pull fetch(64) + ack), then the way
Giliran does (publish_event with Nats-Msg-Id, as the outbox relay does; EventConsumer with
parsing, the store-backed inbox and a handler that does nothing). The ratio is Giliran's cost per
event over the raw client's.

    .venv/bin/python bench/bus.py [--events 5000] [--in-flight 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import nats
from measure import sample
from nats.js.client import JetStreamContext
from prometheus_client import CollectorRegistry

from giliran.bus import ConsumerMetrics, EventConsumer, ensure_streams, publish_event
from giliran.contracts import Event, TicketCalled, new_event, new_id, utcnow
from giliran.contracts.subjects import STREAM
from giliran.store import Inbox, connect
from giliran_ops.embedded import mongo_wire_store, nats_server


def events(n: int) -> list[dict[str, Any]]:
    now = utcnow()
    made = []
    for i in range(n):
        request_id = new_id()
        event = new_event(
            TicketCalled(
                ticket_id=f"{request_id}-KTP-REKAM",
                request_id=request_id,
                session_id="cikarang-utara-20261129",
                service="KTP-REKAM",
                number=f"A-{i + 1:03d}",
                issued_at=now,
                counter="2",
                called_at=now,
                queued_at=now,
            ),
            site="cikarang-utara",
        )
        made.append(event.to_json_dict())
    return made


async def timed(label: str, n: int, work: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await work()
    rate = n / (time.perf_counter() - started)
    print(f"  {label:<58} {rate:>9,.0f} events/s")
    return rate


async def in_windows(
    items: Sequence[Any], size: int, each: Callable[[Any], Awaitable[Any]]
) -> None:
    for start in range(0, len(items), size):
        await asyncio.gather(*(each(item) for item in items[start : start + size]))


async def run(n: int, in_flight: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="giliran-bus-"))
    server = nats_server(work / "nats").start()
    store = mongo_wire_store(work / "store").start()
    await server.wait_listening()
    await store.wait_listening()
    client = await nats.connect(f"nats://127.0.0.1:{server.port}")
    js: JetStreamContext = client.jetstream()
    mongo = connect(f"mongodb://127.0.0.1:{store.port}/?directConnection=true")
    try:
        batch = events(n)
        size = len(Event[TicketCalled].model_validate(batch[0]).model_dump_json())
        print(f"{n:,} ticket.called events of {size} bytes; {os.cpu_count()} cores\n")
        raw_payloads = [(f"raw.{i % 8}", Event[TicketCalled].model_validate(e)) for i, e in
                        enumerate(batch)]  # fmt: skip
        await js.add_stream(name="RAW", subjects=["raw.*"])
        payload = [(s, e.model_dump_json().encode()) for s, e in raw_payloads]

        print("publish (acknowledged by JetStream)")

        async def raw_publish_one(item: tuple[str, bytes]) -> None:
            await js.publish(item[0], item[1], stream="RAW")

        await timed("raw js.publish, one at a time", n // 5,
                    lambda: _each(payload[: n // 5], raw_publish_one))  # fmt: skip
        await js.purge_stream("RAW")
        raw_pub = await timed(f"raw js.publish, {in_flight} in flight", n,
                              lambda: in_windows(payload, in_flight, raw_publish_one))  # fmt: skip
        await ensure_streams(js)

        async def giliran_publish_one(event: dict[str, Any]) -> None:
            await publish_event(js, event)

        await timed("Giliran publish_event (relay), one at a time", n // 5,
                    lambda: _each(batch[: n // 5], giliran_publish_one))  # fmt: skip
        await js.purge_stream(STREAM)
        gil_pub = await timed(
            f"Giliran publish_event, {in_flight} in flight",
            n,
            lambda: in_windows(batch, in_flight, giliran_publish_one),
        )

        print("\nconsume (durable pull consumer, fetch 64, explicit ack)")
        raw_sub = await js.pull_subscribe("raw.*", durable="bench-raw", stream="RAW")

        async def raw_consume() -> None:
            got = 0
            while got < n:
                for msg in await raw_sub.fetch(64, timeout=5):
                    Event[TicketCalled].model_validate_json(msg.data)  # parse, as any consumer must
                    await msg.ack()
                    got += 1

        raw_con = await timed("raw fetch + parse + ack", n, raw_consume)

        # Stage one's ids are still in the duplicate window after the purge, so JetStream kept
        # fewer than n: consume what the stream holds.
        stored = (await js.stream_info(STREAM)).state.messages
        handled = 0
        done = asyncio.Event()

        async def nothing(_: Event[Any]) -> None:
            nonlocal handled
            handled += 1
            if handled >= stored:
                done.set()

        inbox = Inbox(mongo["bench"], "bench-giliran")
        consumer = EventConsumer(
            service="bench",
            durable="bench-giliran",
            subject="giliran.*.ticket.*",
            handlers={TicketCalled: nothing},
            inbox=inbox,
            metrics=ConsumerMetrics.create(CollectorRegistry()),
        )
        await inbox.ensure_indexes()

        async def giliran_consume() -> None:
            await consumer.start(js)
            await done.wait()

        gil_con = await timed("Giliran EventConsumer (parse, inbox, in-order, ack)", stored,
                              giliran_consume)  # fmt: skip
        await consumer.stop()
        print(
            f"\nGiliran / raw cost per event: publish {raw_pub / gil_pub:.2f}x, "
            f"consume {raw_con / gil_con:.2f}x"
        )
        for name, pid in (("nats-server", server.process), ("store", store.process)):
            s = sample(pid.pid if pid else None)
            if s:
                print(f"  {name}: RSS {s.rss_kib / 1024:.0f} MB, CPU {s.cpu_seconds:.1f} s")
    finally:
        await client.close()
        await mongo.close()
        server.stop()
        store.stop()


async def _each(items: Sequence[Any], each: Callable[[Any], Awaitable[Any]]) -> None:
    for item in items:
        await each(item)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=64)
    args = parser.parse_args(argv)
    asyncio.run(run(args.events, args.in_flight))
    return 0


if __name__ == "__main__":
    sys.exit(main())
