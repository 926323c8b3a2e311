"""kill -9 the queue service mid-session, start it again: lines, held places, counters and the
board are exactly as before, and the session carries on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from giliran.settings import Settings
from tests.conftest import eventually, issue_token, publish, request_event, service_process

pytestmark = pytest.mark.e2e
SITE = "cikarang-utara"
API = f"/api/v1/sites/{SITE}"


async def snapshot(http: httpx.AsyncClient, request_ids: list[str]) -> dict[str, Any]:
    """What officers and citizens see, minus what depends on the clock (ETA, `at`)."""
    board = (await http.get(f"{API}/board")).json()
    board.pop("at")
    counters = {c: (await http.get(f"{API}/counters/{c}")).json() for c in ("1", "2", "3", "4")}
    for detail in counters.values():
        for ticket in [
            *detail["waiting"],
            *([detail["current"]["ticket"]] if detail["current"] else []),
        ]:
            ticket.pop("eta", None)
    requests = {}
    for request_id in request_ids:
        tickets = (await http.get(f"{API}/requests/{request_id}")).json()
        requests[request_id] = [{k: v for k, v in t.items() if k != "eta"} for t in tickets]
    return {"board": board, "counters": counters, "requests": requests}


async def test_kill_9_mid_session_loses_nothing(settings: Settings, tmp_path: Path) -> None:
    queue = service_process("queue", settings, tmp_path).start()
    try:
        await queue.wait_listening()
        url = f"http://127.0.0.1:{queue.port}"
        auth = {"Authorization": f"Bearer {await issue_token(settings, 'supervisor', SITE)}"}
        async with httpx.AsyncClient(base_url=url, timeout=10, headers=auth) as http:
            await eventually(lambda: _ready(http), within=30)
            events = [
                request_event(["KTP-REKAM", "KIA"]),  # a two-booth visit
                *(request_event(["KTP-REKAM"]) for _ in range(3)),
                request_event(["KIA"]),
            ]
            for event in events:
                await publish(settings, event)
            ids = [e.data.request_id for e in events]
            await eventually(lambda: _issued(http, ids, 6), within=30)
            assert (
                await http.post(f"{API}/counters/4/open", json={"services": ["KIA"]})
            ).is_success
            called = (await http.post(f"{API}/counters/1/call-next")).json()["ticket"]
            assert called["request_id"] == ids[0]  # first in line: its KIA ticket is now held
            await http.post(f"{API}/counters/1/tickets/{called['ticket_id']}/recall")
            await http.post(f"{API}/counters/2/call-next")
            assert (await http.post(f"{API}/counters/2/pause")).is_success
            before = await snapshot(http, ids)
            held = next(t for t in before["requests"][ids[0]] if t["service"] == "KIA")
            assert held["held"] is True and held["status"] == "waiting"

            queue.kill()
            queue = service_process("queue", settings, tmp_path)
            queue.start()
            await queue.wait_listening()
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{queue.port}", timeout=10, headers=auth
        ) as http:
            await eventually(lambda: _ready(http), within=30)
            after = await snapshot(http, ids)
            assert after == before
            # ...and the session goes on: completing frees the held KIA ticket for counter 4.
            done = await http.post(f"{API}/counters/1/tickets/{called['ticket_id']}/complete")
            assert done.status_code == 200, done.text
            next_kia = (await http.post(f"{API}/counters/4/call-next")).json()["ticket"]
            assert next_kia["request_id"] == ids[0] and next_kia["service"] == "KIA"
    finally:
        queue.stop()


async def _ready(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/readyz")).status_code == 200
    except httpx.HTTPError:
        await asyncio.sleep(0.1)
        return False


async def _issued(http: httpx.AsyncClient, request_ids: list[str], count: int) -> bool:
    found = 0
    for request_id in request_ids:
        found += len((await http.get(f"{API}/requests/{request_id}")).json())
    return found >= count
