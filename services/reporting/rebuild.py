"""`giliran reporting rebuild`: replay the whole event stream into a fresh database with the same
handlers, show progress, and prove the rebuilt projections equal the live ones."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from giliran.contracts import Event, EventData, UnknownEventType, parse_event
from giliran.contracts.subjects import STREAM, all_events
from giliran.settings import Settings
from giliran.store import Collection, Database, connect
from services.reporting.cells import Contribution, apply
from services.reporting.handlers import Reporting
from services.reporting.store import FactStore, mark
from services.reporting.subscribers import PROJECTED


class ReplayStore(FactStore):
    """The live store, except that cells are added up in memory and each is written once at the
    end: a replay has no concurrent writer, no redelivery and no crash to survive (it starts over),
    so it needs none of the conditional writes — and proving its cells equal the live ones also
    proves the two ways of counting agree (the in-memory one is `cells.apply`, one contribution
    at a time, against the live one's combined write per cell and batch)."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self._pending: dict[str, dict[str, dict[str, Any]]] = {
            "ticket": {}, "request": {}, "notification": {}
        }  # fmt: skip

    async def add_ticket_cells(self, contributions: Sequence[tuple[str, Contribution]]) -> None:
        for ticket_id, c in contributions:
            self._add(self._pending["ticket"], ticket_id, c)

    async def add_request_cells(self, contributions: Sequence[tuple[str, Contribution]]) -> None:
        for request_id, c in contributions:
            self._add(self._pending["request"], request_id, c)

    async def add_notification_cells(
        self, contributions: Sequence[tuple[str, Contribution]]
    ) -> None:
        for delivery_id, c in contributions:
            self._add(self._pending["notification"], delivery_id, c)

    @staticmethod
    def _add(cells: dict[str, dict[str, Any]], owner_id: str, c: Contribution) -> None:
        cell = cells.setdefault(c.cell.id, {"_id": c.cell.id, **c.cell.fields(), "seen": {}})
        seen = mark(owner_id, c.name).removeprefix("seen.")
        if seen not in cell["seen"]:
            cell["seen"][seen] = 1
            apply(cell, c)

    async def flush(self) -> None:
        for collection, cells in (
            (self.ticket_cells, self._pending["ticket"]),
            (self.request_cells, self._pending["request"]),
            (self.notification_cells, self._pending["notification"]),
        ):
            if cells:
                await collection.insert_many(list(cells.values()))
            cells.clear()


@dataclass
class Comparison:
    collection: str
    live: int
    rebuilt: int
    only_live: list[str] = field(default_factory=list)
    only_rebuilt: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (self.only_live or self.only_rebuilt or self.different)


@dataclass
class RebuildResult:
    events: int
    skipped: int
    seconds: float
    comparisons: list[Comparison]

    @property
    def equal(self) -> bool:
        return all(c.equal for c in self.comparisons)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class Progress:
    """One line, rewritten in place: done/total, events/s, time left."""

    def __init__(self, total: int, out: TextIO, clock: Callable[[], float] = time.monotonic):
        self.total, self.out, self.clock = total, out, clock
        self.started = clock()
        self.last_shown = 0.0

    def show(self, done: int, final: bool = False) -> None:
        now = self.clock()
        if not final and now - self.last_shown < 0.5:
            return
        self.last_shown = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        left = (self.total - done) / rate if rate > 0 else 0.0
        width = 30
        filled = int(width * done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        self.out.write(
            f"\r[{bar}] {done}/{self.total} events  {rate:,.0f} events/s  {left:,.0f}s left "
        )
        if final:
            self.out.write("\n")
        self.out.flush()


async def _documents(collection: Collection) -> dict[str, dict[str, Any]]:
    return {doc["_id"]: doc async for doc in collection.find({})}


async def compare(live: Database, rebuilt: Database, names: list[str]) -> list[Comparison]:
    results = []
    for name in names:
        a, b = await _documents(live[name]), await _documents(rebuilt[name])
        results.append(
            Comparison(
                collection=name,
                live=len(a),
                rebuilt=len(b),
                only_live=sorted(set(a) - set(b)),
                only_rebuilt=sorted(set(b) - set(a)),
                different=sorted(k for k in set(a) & set(b) if a[k] != b[k]),
            )
        )
    return results


async def rebuild(
    settings: Settings, target_prefix: str, *, out: TextIO = sys.stderr, keep: bool = False
) -> RebuildResult:
    """Replay every event into `<target_prefix>_reporting`, then compare with the live one."""
    client = connect(settings.mongo_url)
    live_db = client[settings.database_name("reporting")]
    target_db = client[f"{target_prefix}_reporting"]
    for name in await target_db.list_collection_names():
        await target_db.drop_collection(name)
    store = ReplayStore(target_db)
    await store.ensure_indexes()
    reporting = Reporting(
        store=store, timezone=settings.timezone, target_wait_minutes=settings.target_wait_minutes
    )
    projected = set(PROJECTED)
    connection = await nats.connect(settings.nats_url)
    events = skipped = 0
    try:
        js = connection.jetstream()
        total = (await js.stream_info(STREAM)).state.messages
        progress = Progress(total, out)
        # An ephemeral pull consumer from the first message: nothing durable is left behind.
        subscription = await js.pull_subscribe(
            all_events(),
            stream=STREAM,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=60
            ),
        )
        started = time.monotonic()
        while events + skipped < total:
            try:
                batch = await subscription.fetch(batch=256, timeout=2.0)
            except TimeoutError:
                break
            # As the live consumer does: the fetched batch folded at once, in stream order.
            events_in_batch: list[Event[EventData]] = []
            for msg in batch:
                try:
                    event = parse_event(msg.data)
                except (UnknownEventType, ValueError):
                    skipped += 1
                    continue
                if type(event.data) not in projected:
                    skipped += 1
                    continue
                events_in_batch.append(event)
                events += 1
            await reporting.fold(events_in_batch)
            progress.show(events + skipped)
        await store.flush()
        seconds = time.monotonic() - started
        progress.show(events + skipped, final=True)
        await subscription.unsubscribe()
    finally:
        await connection.close()
    names = [c.name for c in store.collections()]
    comparisons = await compare(live_db, target_db, names)
    if not keep:
        await client.drop_database(target_db.name)
    await client.close()
    return RebuildResult(events=events, skipped=skipped, seconds=seconds, comparisons=comparisons)


async def main(settings: Settings, target_prefix: str, keep: bool) -> int:
    result = await rebuild(settings, target_prefix, keep=keep)
    print(
        f"replayed {result.events} events ({result.skipped} not for reporting) in "
        f"{result.seconds:.1f}s: {result.rate:,.0f} events/s"
    )
    for c in result.comparisons:
        examples = (c.only_live + c.only_rebuilt + c.different)[:3]
        verdict = (
            "equal"
            if c.equal
            else f"DIFFERENT: {len(c.only_live)} only live, {len(c.only_rebuilt)} only rebuilt, "
            f"{len(c.different)} differ (e.g. {examples})"
        )
        print(f"  {c.collection:<16} live {c.live:>7}  rebuilt {c.rebuilt:>7}  {verdict}")
    print("projections equal the live ones" if result.equal else "projections DIFFER")
    return 0 if result.equal else 1
