"""CPU per update in the embedded store's engine (neosqlite), by the number of indexes.

Asks whether the indexes on a hot collection (the queue's tickets carry 15) are what makes a
store update cost: one collection of ticket-shaped documents with an in-document outbox, N
single-field indexes, then updates of three fields by `_id`, timed in process CPU. No wire
protocol, no services: only the engine's own cost per update.

    .venv/bin/python bench/store_indexes.py [--indexes 0,3,8,15] [--documents 5000] [--updates 2000]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import neosqlite

FIELDS = (
    "site", "session_id", "line", "status", "counter", "request_id", "called_at", "last_call_at",
    "held", "number", "service", "seat", "first_of", "issued_at", "position",
)  # fmt: skip


def ticket(i: int) -> dict[str, object]:
    return {
        "_id": f"t{i}", "site": "s1", "session_id": "x", "line": "A", "status": "waiting",
        "counter": None, "request_id": f"r{i}", "called_at": None, "last_call_at": None,
        "held": False, "number": i, "service": "KTP-CETAK", "seat": None, "first_of": None,
        "issued_at": "2026-12-08T00:00:00Z", "position": i,
        "outbox": [{"id": "e", "type": "ticket.issued", "data": {"a": 1, "b": "x" * 200}}],
    }  # fmt: skip


def ms_per_update(indexes: int, documents: int, updates: int, directory: Path) -> float:
    db = neosqlite.Connection(str(directory / f"tickets-{indexes}.db"), journal_mode="WAL")
    tickets = db["tickets"]
    for name in FIELDS[:indexes]:
        tickets.create_index(name)
    tickets.insert_many([ticket(i) for i in range(documents)])
    rng = random.Random(indexes)
    started = time.process_time()
    for _ in range(updates):
        tickets.update_one(
            {"_id": f"t{rng.randrange(documents)}"},
            {"$set": {"status": "called", "counter": "1", "called_at": "2026-12-08T01:00:00Z"}},
        )
    return (time.process_time() - started) / updates * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--indexes", default="0,3,8,15")
    parser.add_argument("--documents", type=int, default=5000)
    parser.add_argument("--updates", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        for n in (int(x) for x in args.indexes.split(",")):
            per = ms_per_update(min(n, len(FIELDS)), args.documents, args.updates, Path(directory))
            print(f"{n:>3} indexes: {per:.3f} ms CPU per update")


if __name__ == "__main__":
    main()
