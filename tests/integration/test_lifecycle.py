"""One citizen's whole visit across all four services, over real NATS and the embedded store."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from giliran.settings import Settings
from tests.conftest import eventually, running

pytestmark = pytest.mark.integration

REQUEST = {
    "site": "cikarang-utara",
    "services": ["KTP-CETAK", "KK-UBAH"],
    "name": "Siti Aminah",
    "nik": "3216094512900001",
    "phone": "0812-3456-7890",
    "consent": True,
}


async def test_ticket_life_from_registration_to_report(settings: Settings) -> None:
    async with (
        running("intake", settings) as intake,
        running("queue", settings) as queue,
        running("notify", settings) as notify,
        running("reporting", settings) as reporting,
    ):
        submitted = await intake.http.post("/api/v1/requests", json=REQUEST)
        assert submitted.status_code == 201, submitted.text
        body = submitted.json()
        assert [t["number"] for t in body["tickets"]] == ["B-001", "F-001"]
        assert body["nik_masked"] == "************0001"
        assert "3216094512900001" not in submitted.text
        assert body["phone_masked"].startswith("+6281")

        called = await queue.http.post("/api/v1/sites/cikarang-utara/counters/2/call-next")
        assert called.status_code == 200
        ticket = called.json()["ticket"]
        assert (ticket["number"], ticket["status"], ticket["counter"]) == ("B-001", "called", "2")

        done = await queue.http.post(f"/api/v1/tickets/{ticket['ticket_id']}/complete")
        assert done.status_code == 200
        assert done.json()["ticket"]["status"] == "completed"

        async def three_deliveries() -> list[dict[str, object]] | None:
            r = await notify.http.get(
                "/api/v1/deliveries", params={"ticket_id": ticket["ticket_id"]}
            )
            found: list[dict[str, object]] = r.json()["deliveries"]
            # Listed from the moment a send begins: wait until all three have been sent.
            settled = len(found) == 3 and all(d["status"] != "sending" for d in found)
            return found if settled else None

        deliveries = await eventually(three_deliveries)
        assert [d["template"] for d in deliveries] == [
            "ticket_issued",
            "ticket_called",
            "ticket_completed",
        ]
        assert all(d["status"] == "sent" for d in deliveries)
        assert "loket 2" in str(deliveries[1]["text"])
        assert "GRATIS" in str(deliveries[0]["text"])
        assert all("7890" not in str(d["recipient"])[:-3] for d in deliveries)

        day = datetime.now(ZoneInfo("Asia/Jakarta")).date().isoformat()

        async def report_complete() -> dict[str, object] | None:
            r = await reporting.http.get(
                "/api/v1/sites/cikarang-utara/summary", params={"date": day}
            )
            summary: dict[str, object] = r.json()
            return summary if summary["completed"] == 1 else None

        summary = await eventually(report_complete)

        async def messages_counted() -> dict[str, object] | None:
            r = await reporting.http.get(
                "/api/v1/sites/cikarang-utara/summary", params={"date": day}
            )
            body: dict[str, object] = r.json()
            notes = body["notifications"]
            return (
                body
                if isinstance(notes, dict) and notes.get("console", {}).get("sent") == 4
                else None
            )

        counted = await eventually(messages_counted)
        assert counted["notifications"] == {
            "console": {
                "sent": 4, "delivered": 0, "undelivered": 0, "failed": 0, "refused": 0,
                "cost_units": 0,
            }
        }  # fmt: skip
        assert (summary["submitted"], summary["issued"], summary["called"]) == (1, 2, 1)
        wait = summary["wait_seconds"]
        assert isinstance(wait, dict) and wait["count"] == 1 and wait["p50"] >= 0

        # Intake's record follows the queue's events (its ticket consumer rests up to 250 ms,
        # ADR 0228): poll it, never assert on one read taken before it has caught up.
        assert await eventually(
            lambda: _statuses(
                intake.http, body["request_id"], {"B-001": "completed", "F-001": "waiting"}
            )
        )

        for service in (intake, queue, notify, reporting):
            ready = await service.http.get("/readyz")
            assert ready.status_code == 200, ready.text
            metrics = await service.http.get("/metrics")
            assert "giliran_events_handled" in metrics.text


async def _statuses(http: object, request_id: str, expected: dict[str, str]) -> bool:
    import httpx

    assert isinstance(http, httpx.AsyncClient)
    r = await http.get(f"/api/v1/requests/{request_id}")
    return {t["number"]: t["status"] for t in r.json()["tickets"]} == expected
