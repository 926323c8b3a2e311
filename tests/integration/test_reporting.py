"""Reporting projects events into the same figures whatever their order or repetition."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from giliran.contracts import TicketCalled, TicketCompleted, TicketIssued, new_event
from giliran.settings import Settings
from tests.conftest import eventually, publish, request_event, running

pytestmark = pytest.mark.integration

ISSUED = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)  # Sunday 09:00 WIB


def _ticket_events(request_id: str, n: int, wait: int) -> list[object]:
    facts = {
        "ticket_id": f"{request_id}-KIA",
        "request_id": request_id,
        "session_id": "cikarang-utara-20261129",
        "service": "KIA",
        "number": f"K-{n:03d}",
        "issued_at": ISSUED,
    }
    called_at = ISSUED + timedelta(seconds=wait)
    return [
        new_event(TicketIssued(**facts, waiting_ahead=0), site="cikarang-utara"),
        new_event(
            TicketCalled(**facts, counter="1", called_at=called_at),
            site="cikarang-utara",
        ),
        new_event(
            TicketCompleted(
                **facts,
                counter="1",
                called_at=called_at,
                completed_at=called_at + timedelta(seconds=300),
            ),
            site="cikarang-utara",
        ),
    ]


async def test_out_of_order_and_repeated_events_give_the_same_summary(settings: Settings) -> None:
    async with running("reporting", settings) as svc:
        waits = [60, 120, 600]
        for n, wait in enumerate(waits, start=1):
            request = request_event(["KIA"], session_id="cikarang-utara-20261129")
            events = _ticket_events(request.data.request_id, n, wait)
            # completed first, then called, issued, and everything once more
            for event in [*reversed(events), request, *events, request]:
                # a fresh Nats-Msg-Id each time, so JetStream delivers every copy
                await publish(settings, event, msg_id=uuid.uuid4().hex)

        async def summary() -> dict[str, object] | None:
            r = await svc.http.get(
                "/api/v1/sites/cikarang-utara/summary", params={"date": "2026-11-29"}
            )
            body: dict[str, object] = r.json()
            # each figure is counted when the event that owns it arrives (the wait with the
            # call, even when the call comes after the completion)
            done = (body["issued"], body["called"], body["completed"]) == (3, 3, 3)
            return body if done else None

        body = await eventually(summary)
        assert (body["issued"], body["called"], body["completed"]) == (3, 3, 3)
        wait_seconds = body["wait_seconds"]
        assert isinstance(wait_seconds, dict)
        # Percentiles come from a sketch (within 1 %); count, mean and max are exact.
        assert wait_seconds["relative_accuracy"] == 0.01
        assert (wait_seconds["count"], wait_seconds["mean"], wait_seconds["max"]) == (3, 260, 600)
        assert wait_seconds["p50"] == pytest.approx(120.0, rel=0.01)
        service_seconds = body["service_seconds"]
        assert isinstance(service_seconds, dict)
        assert service_seconds["p50"] == pytest.approx(300.0, rel=0.01)
        by_service = body["by_service"]
        assert isinstance(by_service, list) and by_service[0]["service"] == "KIA"
        assert body["within_target"] == 1.0  # all called within 30 minutes
        by_counter, by_hour = body["by_counter"], body["by_hour"]
        assert isinstance(by_counter, list) and isinstance(by_hour, list)
        assert [(c["counter"], c["completed"]) for c in by_counter] == [("1", 3)]
        assert [(h["hour"], h["issued"]) for h in by_hour] == [("09", 3)]  # 02:00 UTC = 09 WIB
        # Requests are counted on the day they were submitted (today), not the session day.
        other = await svc.http.get(
            "/api/v1/sites/cikarang-utara/summary", params={"date": "2026-11-30"}
        )
        assert other.json()["issued"] == 0

        bad = await svc.http.get("/api/v1/sites/cikarang-utara/summary", params={"date": "29-11"})
        assert bad.status_code == 422
