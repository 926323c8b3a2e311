"""Reporting's projections are rebuilt exactly by replaying the stream."""

from __future__ import annotations

import io
import random
import uuid
from collections import Counter

import pytest

from giliran.settings import Settings
from services.reporting.cells import tally
from services.reporting.rebuild import rebuild
from tests.conftest import eventually, publish, request_event, running
from tests.integration.test_reporting import _ticket_events

pytestmark = pytest.mark.integration


async def test_replay_rebuilds_the_live_projections_and_notices_a_difference(
    settings: Settings,
) -> None:
    rng = random.Random(5)
    async with running("reporting", settings) as svc:
        published = 0
        kinds: Counter[str] = Counter()  # each distinct event, by type
        for n in range(1, 41):
            request = request_event(["KIA"], session_id="cikarang-utara-20261129")
            events = [request, *_ticket_events(request.data.request_id, n, rng.randint(30, 900))]
            events = events[: rng.randint(2, 4)]  # some tickets are not called or completed yet
            for event in events:
                await publish(settings, event)
                published += 1
                kinds[type(event.data).__name__] += 1
            if n % 7 == 0:  # and some events arrive twice
                await publish(settings, events[-1], msg_id=uuid.uuid4().hex)
                published += 1

        store = svc.app.state.reporting.store

        async def caught_up() -> bool:
            metrics = (await svc.http.get("/metrics")).text
            handled = sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("giliran_events_handled_total{")
            )
            if handled < published:
                return False
            # Counted once handled, but a message taken back for a retry is counted too: the
            # comparison waits for what it compares, the live cells holding every fact published.
            tickets = tally(await store.ticket_cells.find({}).to_list())
            requests = tally(await store.request_cells.find({}).to_list())
            folded = (requests.count("submitted"), tickets.count("issued"),
                      tickets.count("called"), tickets.count("completed"))  # fmt: skip
            return folded == (kinds["RequestSubmitted"], kinds["TicketIssued"],
                              kinds["TicketCalled"], kinds["TicketCompleted"])  # fmt: skip

        await eventually(caught_up, within=20)

        out = io.StringIO()
        result = await rebuild(settings, f"{settings.db_prefix}_r1", out=out)
        assert result.equal, result.comparisons
        assert result.events == published
        live = {c.collection: c.live for c in result.comparisons}
        assert (live["request_facts"], live["ticket_facts"], live["feedback_facts"]) == (40, 40, 0)
        assert live["ticket_cells"] >= 2  # the issue-time cell and counter 1's
        assert "events/s" in out.getvalue()

        # A projection that lost a fact is caught.
        await store.tickets.delete_one({})
        result = await rebuild(settings, f"{settings.db_prefix}_r2", out=io.StringIO())
        assert not result.equal
        assert len(result.comparisons[1].only_rebuilt) == 1

        # So is a cell that counted a fact twice.
        await store.ticket_cells.update_one({"counter": "1"}, {"$inc": {"n.called": 1}})
        result = await rebuild(settings, f"{settings.db_prefix}_r3", out=io.StringIO())
        cells = next(c for c in result.comparisons if c.collection == "ticket_cells")
        assert len(cells.different) == 1
