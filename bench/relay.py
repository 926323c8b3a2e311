"""The outbox relay's drain on the embedded store: time to move N pending events to the bus.

Starts its own embedded store; 5,000 drained documents sit in the collection (a busy day), then
for N in --sizes: N documents with one pending event each are drained once by `OutboxRelay`
with a publish that takes 1 ms (a stand-in for a JetStream ack on this box). No NATS.

    .venv/bin/python bench/relay.py
    PYTHONPATH=/tmp/old .venv/bin/python bench/relay.py     # another checkout's relay
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import giliran.store
from giliran.contracts import RequestCheckedIn, new_event, utcnow
from giliran.store import OutboxRelay, connect, outbox_fields
from giliran_ops.embedded import mongo_wire_store


def checked_in(i: int) -> Any:
    data = RequestCheckedIn(request_id=f"r{i}", session_id="s", checked_in_at=utcnow())
    return new_event(data, site="cikarang-utara")


async def run(sizes: Sequence[int], rounds: int) -> None:
    store = mongo_wire_store(Path(tempfile.mkdtemp(prefix="giliran-relay-"))).start()
    await store.wait_listening()
    client = connect(f"mongodb://127.0.0.1:{store.port}/?directConnection=true")
    try:
        docs = client["bench"]["docs"]
        await docs.create_index("outbox_n")
        await docs.insert_many(
            [{"_id": f"old{i}", "outbox": {}, "outbox_n": 0} for i in range(5000)]
        )

        async def publish(_: dict[str, Any]) -> None:
            await asyncio.sleep(0.001)

        relay = OutboxRelay([docs], publish)
        print(f"relay from {giliran.store.__file__}; load average {os.getloadavg()[0]:.2f}")
        for n in sizes:
            took: list[float] = []
            for r in range(rounds):
                await docs.insert_many(
                    [{"_id": f"d{n}-{r}-{i}", **outbox_fields([checked_in(i)])} for i in range(n)]
                )
                started = time.perf_counter()
                moved = await relay.drain_once()
                took.append((time.perf_counter() - started) * 1000)
                assert moved == n, (moved, n)
            took.sort()
            print(f"  {n:>4} pending events: drain {took[len(took) // 2]:7.1f} ms (median of "
                  f"{rounds})")  # fmt: skip
        assert await relay.pending() == 0
    finally:
        await client.close()
        store.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,5,50,200")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    asyncio.run(run([int(s) for s in args.sizes.split(",")], args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
