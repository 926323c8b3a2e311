"""Two queue processes issuing into one line at once (ADR 0215): each numbers from its own
memory, the store's unique `line_number` refuses a number the other took, and the line ends
numbered 1..n with none skipped and none twice, whichever process issued what."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from giliran.settings import Settings
from giliran.store import connect
from services.queue import domain
from tests.conftest import eventually, publish_many, request_event
from tests.e2e.test_queue_two_instances import two_queues

pytestmark = pytest.mark.e2e
REQUESTS = 80


async def ticket_inserts(http: httpx.AsyncClient) -> float:
    """How many ticket inserts a queue process sent to the store (its PyMongo monitoring)."""
    text = (await http.get("/metrics")).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        if family.name == "giliran_store_commands"
        for s in family.samples
        if s.name.endswith("_total")
        and s.labels.get("command") == "insert"
        and s.labels.get("collection") == "tickets"
    )


async def test_two_processes_issuing_into_one_line_skip_and_repeat_no_number(
    settings: Settings, tmp_path: Path
) -> None:
    async with two_queues(settings, tmp_path) as (one, two):
        # Both have read the line's highest number (none) before the flood.
        warm = [request_event(["KTP-REKAM"]) for _ in range(4)]
        await publish_many(settings, warm)
        events = [request_event(["KTP-REKAM"]) for _ in range(REQUESTS)]
        # Some redelivered: the same event again must keep its ticket and cost no number.
        again = events[::10]
        await publish_many(settings, events + again)
        client = connect(settings.mongo_url)
        try:
            tickets = client[f"{settings.db_prefix}_queue"]["tickets"]

            async def all_issued() -> bool:
                return await tickets.count_documents({}) == REQUESTS + len(warm)

            await eventually(all_issued, within=60)
            found = await tickets.find({}, {"number": 1, "request_id": 1}).to_list()
        finally:
            await client.close()
        numbers = sorted(str(d["number"]) for d in found)
        total = REQUESTS + len(warm)
        assert numbers == [domain.format_number("A", n) for n in range(1, total + 1)]
        assert len({d["request_id"] for d in found}) == total
        # Both processes issued (the consumer spreads the requests over them).
        assert await ticket_inserts(one) > 0 and await ticket_inserts(two) > 0
