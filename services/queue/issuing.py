"""Issuing tickets in one write (ADR 0215): numbers decided in memory and guarded by a unique
index, and the tickets of the requests being handled at once written in one insert."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cachetools import LRUCache

from giliran.contracts import Event
from giliran.store import Document

# Lines whose highest number this process remembers (a session's lines; sessions end).
LINES_KEPT = 1024


class IssuingStore(Protocol):
    """The writes and reads issuing needs (services.queue.store.TicketStore)."""

    async def highest_number(self, line: str) -> int: ...

    async def counted_before(self, line: str) -> int: ...

    async def insert_issued(
        self, docs: Sequence[Document], events: Sequence[Event[Any]]
    ) -> int: ...


# A ticket as issued with a number: its document and its `ticket.issued` event.
Made = tuple[Document, Event[Any]]


@dataclass(frozen=True)
class Draft:
    """A ticket about to be issued, everything decided but its number."""

    ticket_id: str
    site: str
    line: str  # services.queue.domain.line_key: numbers run per session and prefix
    # The ticket with number `n`, marked as its request's first (`first_of`) or not.
    make: Callable[[int], Made]


@dataclass
class Batch:
    """What one flush writes: requests' drafts in order, each request's kept together."""

    requests: list[tuple[list[Draft], asyncio.Future[Issued]]] = field(default_factory=list)


@dataclass(frozen=True)
class Issued:
    """A request's tickets written by the fast path (in the order of its drafts); `complete`
    False when the store refused one (it was issued before, its number was taken by another
    instance, or its request had tickets already): the rest is the careful path's."""

    docs: list[Document]
    complete: bool


def number_drafts(drafts: Sequence[Draft], highest: Mapping[str, int]) -> list[int]:
    """The numbers of `drafts` in order, each line going on from its highest: gap-free as long
    as they are written in this order (a refused one stops the rest, `insert_issued`)."""
    last = dict(highest)
    numbers = []
    for draft in drafts:
        last[draft.line] = last[draft.line] + 1
        numbers.append(last[draft.line])
    return numbers


class Issuer:
    """Writes the tickets of new requests with one insert per flush: the requests handled at
    once (one fetched batch of the requests consumer) share it.

    The highest number of each line is kept in memory. Why that is safe: another queue
    instance issuing into the same line is not told, so its numbers are only found when this
    process's insert is refused by the unique `line_number` index; the line's highest is then
    read again and the refused ticket goes the careful way. A number is used only by a written
    ticket, so no number is issued twice and none is skipped; after a restart each line's
    highest is read once. A second instance sees exactly what this one sees. To spare the
    refused writes, another instance's `ticket.issued` seen on the bus (no delivery guarantee:
    the index stays the guard) makes the lines of its site be read again before their next
    number (`other_issued`)."""

    def __init__(self, store: IssuingStore) -> None:
        self.store = store
        self.highest: LRUCache[str, int] = LRUCache(LINES_KEPT)
        # Each line's counter from before ADR 0215: read once, never written since.
        self.counted: LRUCache[str, int] = LRUCache(LINES_KEPT)
        self.lines_of_site: LRUCache[str, set[str]] = LRUCache(LINES_KEPT)
        self._pending = Batch()
        self._flush: asyncio.Task[None] | None = None
        # One flush writes at a time: a flush numbers from the highest the one before it left
        # (written or refused), and requests arriving meanwhile join the next flush.
        self._writing = asyncio.Lock()

    def forget(self, line: str) -> None:
        """Another instance issued into `line` (a refused number): read its highest again."""
        self.highest.pop(line, None)

    def other_issued(self, site: str) -> None:
        """Another instance issued a ticket at `site`: its lines are read again."""
        for line in self.lines_of_site.get(site, ()):
            self.forget(line)

    async def _read(self, line: str) -> int:
        """A line's highest number from the store (its old counter read once per process)."""
        if line in self.counted:
            return max(self.counted[line], await self.store.highest_number(line))
        numbered, counted = await asyncio.gather(
            self.store.highest_number(line), self.store.counted_before(line)
        )
        self.counted[line] = counted
        return max(numbered, counted)

    async def number_for(self, line: str) -> int:
        """The next number of a line (to be written by the caller, `took` after)."""
        if line not in self.highest:
            self.highest[line] = await self._read(line)
        return self.highest[line] + 1

    async def issue_one(self, draft: Draft) -> Document | None:
        """The careful path's write of one ticket: numbered and written in turn with this
        process's other writes of tickets (or its concurrent careful writes would all take the
        same number and all but one be refused, again and again); None when the store refused
        it (its line is then read again)."""
        async with self._writing:
            number = await self.number_for(draft.line)
            doc, event = draft.make(number)
            if await self.store.insert_issued([doc], [event]) == 1:
                self.took(draft, number)
                return doc
            self.forget(draft.line)
            return None

    def took(self, draft: Draft, number: int) -> None:
        """A ticket numbered `number` in its line was written by this process."""
        self.highest[draft.line] = max(self.highest.get(draft.line, 0), number)
        lines = self.lines_of_site.get(draft.site)
        if lines is None:
            lines = self.lines_of_site[draft.site] = set()
        lines.add(draft.line)
        if len(lines) > LINES_KEPT:  # a line out of `highest` is read again anyway: forget it
            lines.intersection_update(self.highest.keys())

    async def issue(self, drafts: list[Draft]) -> Issued:
        """Write a new request's tickets (its first one marks the request), with the other
        requests handled meanwhile: the flush waits for the tasks already running to reach
        here (one loop turn), so a fetched batch's requests share one insert."""
        if not drafts:
            return Issued([], True)
        done: asyncio.Future[Issued] = asyncio.get_running_loop().create_future()
        self._pending.requests.append((drafts, done))
        if self._flush is None:
            self._flush = asyncio.ensure_future(self._flush_soon())
        return await done

    async def _flush_soon(self) -> None:
        # Two loop turns: the requests of a batch resume from their shared session write in
        # one turn and reach here in the next.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        async with self._writing:
            batch, self._pending, self._flush = self._pending, Batch(), None
            try:
                await self._write(batch)
            except BaseException as exc:  # each request fails; the consumer retries them
                for _, done in batch.requests:
                    if not done.done():
                        done.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise

    async def _write(self, batch: Batch) -> None:
        drafts = [d for request, _ in batch.requests for d in request]
        # The lines' highest numbers as known when the flush starts. A line may leave memory
        # while the unknown ones are read (another instance's issued event forgets the site's
        # lines, the LRU evicts one): the numbers are then those known here, and the unique
        # index refuses any another instance took meanwhile.
        known = {d.line: self.highest[d.line] for d in drafts if d.line in self.highest}
        lines = sorted({d.line for d in drafts} - known.keys())
        for line, highest in zip(
            lines, await asyncio.gather(*(self._read(x) for x in lines)), strict=True
        ):
            known[line] = highest
            self.highest.setdefault(line, highest)
        numbers = number_drafts(drafts, known)
        made = [d.make(n) for d, n in zip(drafts, numbers, strict=True)]
        try:
            written = await self.store.insert_issued([m[0] for m in made], [m[1] for m in made])
        except Exception:
            # Not known which were written: read every line's highest again.
            for draft in drafts:
                self.forget(draft.line)
            raise
        for draft, number in zip(drafts[:written], numbers[:written], strict=True):
            self.took(draft, number)
        if written < len(drafts):
            # Its number may be another instance's: the line is read again.
            self.forget(drafts[written].line)
        start = 0
        for request, done in batch.requests:
            end = start + len(request)
            docs = [m[0] for m in made[start : min(end, written)]]
            if not done.done():  # (its handler may have been cancelled meanwhile)
                done.set_result(Issued(docs, complete=end <= written))
            start = end
