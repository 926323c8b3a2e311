"""ADR 0215's numbering without I/O: numbers go on per line from the highest, the requests
handled at once share one insert, and a refused ticket stops the rest (no gap) and makes its
line be read again."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from giliran.contracts import Event
from giliran.store import Document
from services.queue.issuing import Draft, Issuer, number_drafts


class FakeStore:
    """Lines' highest numbers and what was inserted; `refuse_at` refuses that ticket id."""

    def __init__(self, highest: dict[str, int]) -> None:
        self.highest = dict(highest)
        self.inserts: list[list[Document]] = []
        self.reads: list[str] = []
        self.refuse: set[str] = set()
        self.fail = False
        self.counted: dict[str, int] = {}

    async def highest_number(self, line: str) -> int:
        self.reads.append(line)
        return self.highest.get(line, 0)

    async def counted_before(self, line: str) -> int:
        return self.counted.get(line, 0)

    async def insert_issued(self, docs: Sequence[Document], events: Sequence[Event[Any]]) -> int:
        if self.fail:
            raise ConnectionError("store gone")
        self.inserts.append(list(docs))
        for i, doc in enumerate(docs):
            if doc["_id"] in self.refuse:
                return i
            self.highest[doc["line"]] = doc["n"]
        return len(docs)


def draft(ticket_id: str, line: str = "s:A") -> Draft:
    def make(number: int) -> tuple[Document, Any]:
        return {"_id": ticket_id, "line": line, "n": number}, None

    return Draft(ticket_id=ticket_id, site="s", line=line, make=make)


def test_numbers_go_on_per_line_from_the_highest() -> None:
    drafts = [draft("a"), draft("b", "s:B"), draft("c"), draft("d")]
    assert number_drafts(drafts, {"s:A": 41, "s:B": 0}) == [42, 1, 43, 44]


async def test_requests_handled_at_once_share_one_insert() -> None:
    store = FakeStore({"s:A": 7})
    issuer = Issuer(store)
    first, second = await asyncio.gather(
        issuer.issue([draft("r1-A"), draft("r1-B", "s:B")]), issuer.issue([draft("r2-A")])
    )
    assert len(store.inserts) == 1
    assert [d["n"] for d in first.docs] == [8, 1] and [d["n"] for d in second.docs] == [9]
    assert first.complete and second.complete
    # The next request numbers from memory: no read.
    later = await issuer.issue([draft("r3-A")])
    assert [d["n"] for d in later.docs] == [10] and store.reads == ["s:A", "s:B"]


async def test_a_refused_ticket_stops_the_rest_and_its_line_is_read_again() -> None:
    store = FakeStore({"s:A": 0})
    issuer = Issuer(store)
    store.refuse.add("r2-A")  # e.g. a redelivery: its ticket is there already
    results = await asyncio.gather(
        issuer.issue([draft("r1-A")]), issuer.issue([draft("r2-A")]), issuer.issue([draft("r3-A")])
    )
    assert [r.complete for r in results] == [True, False, False]
    assert [len(r.docs) for r in results] == [1, 0, 0]
    assert "s:A" not in issuer.highest  # read again before its next number
    assert await issuer.number_for("s:A") == 2  # r1's 1 written; r2's 2 and r3's 3 were not


async def test_a_failed_insert_fails_every_request_and_forgets_their_lines() -> None:
    store = FakeStore({"s:A": 3})
    issuer = Issuer(store)
    await issuer.issue([draft("r0-A")])
    store.fail = True
    with pytest.raises(ConnectionError):
        await asyncio.gather(issuer.issue([draft("r1-A")]), issuer.issue([draft("r2-A")]))
    assert "s:A" not in issuer.highest  # not known what was written: read again


async def test_a_number_is_remembered_only_once_written() -> None:
    issuer = Issuer(FakeStore({}))
    issuer.took(draft("x"), 5)
    issuer.took(draft("y"), 3)  # an older write finishing late never lowers it
    assert await issuer.number_for("s:A") == 6


async def test_a_line_counted_before_goes_on_and_another_instances_issue_is_read_again() -> None:
    store = FakeStore({})
    store.counted["s:A"] = 41  # `line_sequences` before ADR 0215
    issuer = Issuer(store)
    [first] = (await issuer.issue([draft("r1-A")])).docs
    assert first["n"] == 42
    store.highest["s:A"] = 50  # another instance issued up to 50
    issuer.other_issued("elsewhere")  # another site's issue: nothing to read
    assert await issuer.number_for("s:A") == 43
    issuer.other_issued("s")  # its ticket.issued seen on the bus
    assert await issuer.number_for("s:A") == 51
