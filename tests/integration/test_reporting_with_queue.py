"""Reporting fed by the real queue: quoted ETAs, priority, start of service, outcomes, recalls and
no-shows, counters opened and paused — the live view and the day's figures agree with the events
the queue published, and a replay rebuilds the same projections."""

from __future__ import annotations

import io
import math
from datetime import datetime
from typing import Any

import pytest

from giliran.contracts import PriorityReason, utcnow
from giliran.settings import Settings
from services.reporting.domain import local_day
from services.reporting.rebuild import rebuild
from tests.conftest import eventually, publish_many, request_event, running
from tests.integration.test_queue_actions import Desk, recording

pytestmark = pytest.mark.integration
SITE = "cikarang-utara"


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


async def test_figures_from_the_real_queue(settings: Settings) -> None:
    async with (
        running("queue", settings) as queue,
        running("reporting", settings) as reporting,
        recording(settings) as published,
    ):
        one, two = Desk(queue.http, "1"), Desk(queue.http, "2")
        await one.counter_action("open", services=["KIA"])
        await two.counter_action("open", services=["KIA"])
        requests = [
            request_event(["KIA"], priority=PriorityReason.ELDERLY if n == 0 else None)
            for n in range(4)
        ]
        await publish_many(settings, requests)

        async def all_issued() -> bool:
            return sum(1 for kind, _ in published if kind == "ticket.issued") == 4

        await eventually(all_issued, within=15)
        first = await one.call_next()
        assert first is not None
        await one.ok(first["ticket_id"], "start")
        await one.ok(first["ticket_id"], "complete", outcome="documents_incomplete")
        second = await two.call_next()
        assert second is not None
        for _ in range(2):
            await two.ok(second["ticket_id"], "recall")
        await two.ok(second["ticket_id"], "no-show")
        await two.counter_action("pause")
        third = await one.call_next()
        assert third is not None
        await one.ok(third["ticket_id"], "start")

        async def live() -> dict[str, Any] | None:
            view: dict[str, Any] = (await reporting.http.get(f"/api/v1/sites/{SITE}/live")).json()
            done = (view["served"], view["no_show"], view["serving"], view["waiting"]) == (
                1,
                1,
                1,
                1,
            ) and (view["counters_open"], view["counters_paused"]) == (1, 1)
            return view if done else None

        await eventually(live, within=15)

        # The day's figures, against what the queue published.
        issued = {d["ticket_id"]: d for kind, d in published if kind == "ticket.issued"}
        called = {d["ticket_id"]: d for kind, d in published if kind == "ticket.called"}
        assert len(called) == 3
        quoted = [
            (
                datetime.fromisoformat(c["called_at"]) - datetime.fromisoformat(i["eta"])
            ).total_seconds()
            for t, c in called.items()
            if (i := issued[t])["eta"] is not None
        ]
        assert quoted, "the queue quotes an ETA once a counter serving the line is open"
        waits = [
            (
                datetime.fromisoformat(c["called_at"])
                - datetime.fromisoformat(c["queued_at"] or c["issued_at"])
            ).total_seconds()
            for c in called.values()
        ]
        day = local_day(utcnow(), "Asia/Jakarta").isoformat()

        async def summed() -> dict[str, Any] | None:
            # A batch's facts (which the live view reads) are written before its cells (which
            # the summary reads): the live view can be done a moment before the summary.
            found: dict[str, Any] = (
                await reporting.http.get(f"/api/v1/sites/{SITE}/summary", params={"date": day})
            ).json()
            return found if found["issued"] and found["wait_seconds"]["count"] else None

        summary = await eventually(summed, within=15)
        assert (summary["issued"], summary["called"], summary["started"]) == (4, 3, 2)
        assert (summary["completed"], summary["no_show"]) == (1, 1)
        assert summary["outcomes"] == {"documents_incomplete": 1}
        assert summary["priority"] == {"elderly": 1}
        assert summary["wait_seconds"]["count"] == 3
        assert summary["wait_seconds"]["max"] == pytest.approx(max(waits), abs=1e-6)
        eta = summary["eta"]
        assert eta["quoted"] == len(quoted)
        assert eta["within_10_min"] == round(
            sum(1 for e in quoted if abs(e) <= 600) / len(quoted), 4
        )
        median = nearest_rank([abs(e) for e in quoted], 50)
        assert eta["median_abs_error_seconds"] == pytest.approx(median, rel=0.0101, abs=1.0)
        counters = {c["counter"]: c for c in summary["by_counter"]}
        assert (counters["1"]["called"], counters["2"]["no_show"]) == (2, 1)

        async def caught_up() -> bool:
            metrics = (await reporting.http.get("/metrics")).text
            handled = sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("giliran_events_handled_total{")  # handled or ignored
            )
            return handled >= len(requests) + len(published)

        await eventually(caught_up, within=15)
        result = await rebuild(settings, f"{settings.db_prefix}_q", out=io.StringIO())
        assert result.equal, [c for c in result.comparisons if not c.equal]
