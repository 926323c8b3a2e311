"""The outbox holds events while NATS is down: requests are accepted, then ticketed exactly once."""

from __future__ import annotations

import httpx
import pytest

from giliran.settings import Settings
from giliran_ops.embedded import ManagedProcess
from tests.conftest import eventually, running

pytestmark = pytest.mark.integration


async def test_requests_taken_while_nats_is_down_are_ticketed_once_it_returns(
    settings: Settings, nats_proc: ManagedProcess
) -> None:
    settings = settings.model_copy(update={"ticket_wait_seconds": 0.3})
    async with running("intake", settings) as intake, running("queue", settings) as queue:
        nats_proc.stop()
        accepted = []
        for i in range(5):
            r = await intake.http.post(
                "/api/v1/requests",
                json={"site": "cikarang-utara", "services": ["KTP-CETAK", "KIA"], "name": f"W{i}"},
            )
            assert r.status_code == 202, r.text  # stored, not yet ticketed
            assert r.json()["tickets"] == []
            assert r.headers["location"].endswith(r.json()["request_id"])
            accepted.append(r.json()["request_id"])
        ready = await intake.http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["bus"] is False

        await nats_proc.start().wait_listening()

        async def all_ticketed() -> bool:
            for request_id in accepted:
                r = await intake.http.get(f"/api/v1/requests/{request_id}")
                if len(r.json()["tickets"]) != 2:
                    return False
            return True

        await eventually(all_ticketed, within=30)
        tickets = queue.app.state.queue.store.tickets
        assert await tickets.count_documents({}) == 10
        for request_id in accepted:
            assert await tickets.count_documents({"request_id": request_id}) == 2
        numbers = sorted(d["number"] for d in await tickets.find({}).to_list())
        assert numbers == sorted(
            [f"B-00{i}" for i in range(1, 6)] + [f"K-00{i}" for i in range(1, 6)]
        )
        await eventually(lambda: _ready(intake.http), within=15)


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200
