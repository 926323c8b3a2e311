"""10 counters hammering call-next/complete over 500 tickets of a multi-service fair: every
ticket called exactly once, and no citizen ever at two counters at the same time."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from giliran.settings import REPO_ROOT, Settings
from tests.conftest import eventually, nats_client, publish_many, request_event, running

pytestmark = pytest.mark.integration
SITE = "cikarang-utara"
TICKETS = 500
COUNTERS = 10


def fair_catalogue(directory: Path) -> list[str]:
    """Cikarang Utara's 14 services served by 10 booths with overlapping, ordered service sets
    (booth n serves services 3(n-1) .. 3(n-1)+3, wrapping round: every service has a booth)."""
    site = yaml.safe_load((REPO_ROOT / "deploy" / "sites" / "cikarang-utara.yaml").read_text())
    codes = [s["code"] for s in site["services"]]
    site["counters"] = [
        {
            "id": str(n),
            "name": {"id": f"Meja {n}", "en": f"Booth {n}"},
            "services": [codes[(3 * (n - 1) + k) % len(codes)] for k in range(4)],
        }
        for n in range(1, COUNTERS + 1)
    ]
    (directory / "fair.yaml").write_text(yaml.safe_dump(site))
    return codes


async def test_ten_counters_over_five_hundred_tickets(settings: Settings, tmp_path: Path) -> None:
    codes = fair_catalogue(tmp_path)
    settings = settings.model_copy(update={"catalogue_dir": tmp_path})
    rng = random.Random(7)
    requests = []
    total = 0
    while total < TICKETS:
        services = rng.sample(codes, min(rng.choice([1, 1, 2, 3]), TICKETS - total))
        requests.append(request_event(services))
        total += len(services)

    calls: list[dict[str, Any]] = []
    completions: list[dict[str, Any]] = []
    async with running("queue", settings) as svc, nats_client(settings) as client:

        async def keep(msg: Any) -> None:
            data = json.loads(msg.data)["data"]
            (calls if msg.subject.endswith(".called") else completions).append(data)

        await client.subscribe("giliran.*.ticket.called", cb=keep)
        await client.subscribe("giliran.*.ticket.completed", cb=keep)
        await publish_many(settings, requests)
        store = svc.app.state.queue.store
        await eventually(lambda: _enough(store), within=60)

        at_counter: dict[str, str] = {}  # request -> counter, as the clients see it
        violations: list[str] = []
        served: Counter[str] = Counter()

        async def counter_loop(counter: str) -> None:
            idle = 0
            while idle < 20:
                r = await svc.http.post(f"/api/v1/sites/{SITE}/counters/{counter}/call-next")
                if r.status_code == 204:
                    idle += 1  # the rest may be held at other booths: look again shortly
                    await asyncio.sleep(0.02)
                    continue
                assert r.status_code == 200, r.text
                idle = 0
                ticket = r.json()["ticket"]
                if ticket["request_id"] in at_counter:
                    violations.append(f"{ticket['request_id']} at {counter} and "
                                      f"{at_counter[ticket['request_id']]}")  # fmt: skip
                at_counter[ticket["request_id"]] = counter
                served[ticket["ticket_id"]] += 1
                await asyncio.sleep(rng.random() * 0.005)
                # Forget the citizen before completing: the server frees them only after this.
                del at_counter[ticket["request_id"]]
                done = await svc.http.post(
                    f"/api/v1/sites/{SITE}/counters/{counter}/tickets/{ticket['ticket_id']}/complete"
                )
                assert done.status_code == 200, done.text

        await asyncio.gather(*(counter_loop(str(n)) for n in range(1, COUNTERS + 1)))
        store_done = await _count(store, {"status": "completed"})
        print(f"served {len(served)}, completed in store {store_done}, calls seen {len(calls)}")
        await eventually(lambda: _len_at_least(completions, TICKETS), within=60)

    assert violations == []
    assert len(served) == TICKETS and set(served.values()) == {1}
    assert len(calls) == TICKETS and len({c["ticket_id"] for c in calls}) == TICKETS
    # From the server's own timestamps: one citizen's services never overlap in time.
    spans: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for done in completions:
        spans[done["request_id"]].append(
            (
                datetime.fromisoformat(done["called_at"]),
                datetime.fromisoformat(done["completed_at"]),
            )
        )
    for request_id, intervals in spans.items():
        intervals.sort()
        for (_, end), (begin, _) in itertools.pairwise(intervals):
            assert end <= begin, f"{request_id} was served at two counters at once"


async def _count(store: Any, query: dict[str, Any] | None = None) -> int:
    from giliran.store import count

    found: int = await count(store.tickets, query or {})
    return found


async def _len_at_least(items: list[Any], n: int) -> bool:
    return len(items) >= n


async def _enough(store: Any) -> bool:
    return await _count(store) >= TICKETS
