"""The citizen's status against a real nats-server: position and ETA from the queue by
request-reply (a small real responder here), graceful without it, pushed live on ticket events;
the survey once per completed ticket; the pages render."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from giliran.auth import Role
from giliran.contracts import (
    RequestStatusQuery,
    RequestStatusReply,
    TicketCalled,
    TicketCompleted,
    TicketIssued,
    TicketStatus,
    TicketView,
    new_event,
    utcnow,
)
from giliran.settings import Settings
from giliran_ops.cli import build_service
from giliran_ops.embedded import free_port
from tests.conftest import (
    RunningService,
    eventually,
    nats_client,
    publish_many,
    running,
    serving,
)
from tests.integration.test_intake_registration import SITE, body, bus_events

pytestmark = pytest.mark.integration

SCORES = {f"U{i}": (i % 4) + 1 for i in range(1, 10)}


def ticket_events(request: dict[str, Any], n: int = 1) -> tuple[Any, Any, Any]:
    """Issued, called and completed events for the request's first service, as the queue
    publishes them."""
    facts = {
        "ticket_id": f"{request['request_id']}-{request['services'][0]}",
        "request_id": request["request_id"],
        "session_id": request["session_id"],
        "service": request["services"][0],
        "number": f"B-{n:03d}",
        "issued_at": utcnow(),
    }
    now = utcnow()
    return (
        new_event(TicketIssued(**facts, waiting_ahead=3), site=SITE, source="queue"),
        new_event(TicketCalled(**facts, counter="2", called_at=now), site=SITE, source="queue"),
        new_event(
            TicketCompleted(**facts, counter="2", called_at=now, completed_at=now),
            site=SITE,
            source="queue",
        ),
    )


@asynccontextmanager
async def queue_responder(
    settings: Settings, position: int, eta: datetime
) -> AsyncIterator[list[RequestStatusQuery]]:
    """A real NATS responder standing in for the queue's request_status command."""
    asked: list[RequestStatusQuery] = []
    async with nats_client(settings) as nc:

        async def answer(msg: Any) -> None:
            query = RequestStatusQuery.model_validate_json(msg.data)
            asked.append(query)
            tickets = [
                TicketView(
                    ticket_id=f"{query.request_id}-KTP-CETAK",
                    request_id=query.request_id,
                    number="B-001",
                    service="KTP-CETAK",
                    status=TicketStatus.WAITING,
                    position=position,
                    eta=eta,
                )
            ]
            await msg.respond(
                RequestStatusReply(ok=True, tickets=tickets).model_dump_json().encode()
            )

        sub = await nc.subscribe(RequestStatusQuery.subject(SITE), cb=answer)
        await nc.flush()
        yield asked
        await sub.unsubscribe()


async def registered(svc: RunningService, n: int = 1) -> dict[str, Any]:
    r = await svc.http.post("/api/v1/requests", json=body(n))
    assert r.status_code in (201, 202), r.text
    found: dict[str, Any] = r.json()
    found["token"] = found["status_page_url"].rsplit("/", 1)[1]
    return found


async def has_ticket(svc: RunningService, token: str, status: str) -> bool:
    view = (await svc.http.get(f"/api/v1/status/{token}")).json()
    return any(t["status"] == status for t in view["tickets"])


@pytest.fixture
def quick(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "ticket_wait_seconds": 0.0,
            "admin_token": SecretStr("admin-secret-0123456789abcdefghij"),
        }
    )


async def test_position_and_eta_come_from_the_queue_and_degrade_without_it(
    quick: Settings,
) -> None:
    async with running("intake", quick) as svc:
        request = await registered(svc)
        await publish_many(quick, [ticket_events(request)[0]])
        await eventually(lambda: has_ticket(svc, request["token"], "waiting"))

        loop = asyncio.get_running_loop()
        started = loop.time()
        alone = (await svc.http.get(f"/api/v1/status/{request['token']}")).json()
        assert loop.time() - started < 2.0  # a short timeout, then what intake knows
        assert alone["live"] is False
        assert alone["tickets"][0]["position"] is None and alone["tickets"][0]["eta"] is None
        assert alone["tickets"][0]["documents"]  # documents to bring, from the catalogue

        eta = datetime(2026, 11, 29, 2, 40, tzinfo=UTC)
        async with queue_responder(quick, position=4, eta=eta) as asked:
            view = (await svc.http.get(f"/api/v1/status/{request['token']}")).json()
        assert asked and asked[0].request_id == request["request_id"]
        assert view["live"] is True
        line = view["tickets"][0]
        assert (line["position"], line["eta_local"]) == (4, "09.40")  # 02:40 UTC is 09:40 WIB


async def test_the_status_stream_pushes_a_call_within_moments(quick: Settings) -> None:
    # Over real HTTP: httpx's in-process transport buffers a response until it ends.
    app, runtime = build_service("intake", quick)
    async with serving(app, free_port()) as url, httpx.AsyncClient(base_url=url) as http:
        await asyncio.wait_for(runtime.bus_started.wait(), timeout=15)
        r = await http.post("/api/v1/requests", json=body(1))
        request = {**r.json(), "token": r.json()["status_page_url"].rsplit("/", 1)[1]}
        issued, called, _ = ticket_events(request)
        await publish_many(quick, [issued])
        seen: list[dict[str, Any]] = []
        first = asyncio.Event()

        async def listen() -> None:
            async with http.stream("GET", f"/api/v1/status/{request['token']}/stream") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        seen.append(json.loads(line.removeprefix("data: ")))
                        tickets = seen[-1]["tickets"]
                        if tickets and tickets[0]["status"] == "waiting":
                            first.set()
                        if tickets and tickets[0]["status"] == "called":
                            return

        listener = asyncio.create_task(listen())
        async with asyncio.timeout(10):
            await first.wait()
        published = asyncio.get_running_loop().time()
        await publish_many(quick, [called])
        async with asyncio.timeout(10):
            await listener
        took = asyncio.get_running_loop().time() - published
        print(f"\nticket.called published -> status stream shows it: {took * 1000:.0f} ms")
        assert seen[-1]["tickets"][0]["counter"] == "2"
        assert seen[-1]["tickets"][0]["counter_name"]["id"] == "Loket 2"


async def test_one_survey_per_completed_ticket(quick: Settings) -> None:
    async with (
        running("intake", quick) as svc,
        bus_events(quick, f"giliran.{SITE}.feedback.submitted") as published,
    ):
        request = await registered(svc)
        issued, called, completed = ticket_events(request)
        ticket_id = issued.data.ticket_id
        answer = {"token": request["token"], "ticket_id": ticket_id, "scores": SCORES}
        await publish_many(quick, [issued, called])
        await eventually(lambda: has_ticket(svc, request["token"], "called"))
        early = await svc.http.post("/api/v1/feedback", json=answer)
        assert early.status_code == 409 and early.json()["error"]["code"] == "feedback_refused"

        await publish_many(quick, [completed])
        await eventually(lambda: has_ticket(svc, request["token"], "completed"))
        view = (await svc.http.get(f"/api/v1/status/{request['token']}")).json()
        assert view["tickets"][0]["survey_open"] is True
        bad = await svc.http.post(
            "/api/v1/feedback", json={**answer, "scores": {**SCORES, "U4": 5}}
        )
        assert bad.status_code == 422
        assert bad.json()["error"]["field"] == "scores.U4"
        assert "U1 sampai U9" in bad.json()["error"]["message_id"]
        first = await svc.http.post("/api/v1/feedback", json=answer)
        assert first.status_code == 201, first.text
        again = await svc.http.post("/api/v1/feedback", json=answer)
        assert again.status_code == 409
        view = (await svc.http.get(f"/api/v1/status/{request['token']}")).json()
        assert view["tickets"][0]["survey_open"] is False

        async def one() -> bool:
            return len(published) >= 1

        await eventually(one)
        await asyncio.sleep(0.3)
        assert len(published) == 1
        event = published[0]["data"]
        assert event["scores"] == SCORES and event["service"] == "KTP-CETAK"
        assert event["request_id"] == request["request_id"]


async def test_the_pages_render_in_both_languages(quick: Settings) -> None:
    async with running("intake", quick) as svc:
        request = await registered(svc)
        token = request["token"]
        _, kiosk = await svc.runtime.accounts.issue_token("kios-1", Role.KIOSK, SITE)
        for path, needle_id, needle_en in [
            ("/daftar?site=cikarang-utara", "Daftar layanan", "Register for a service"),
            ("/kiosk/cikarang-utara", "sentuh layanan", "touch the service"),
            (f"/s/{token}", "Dokumen yang perlu dibawa", "Documents to bring"),
            (f"/kiosk/ticket/{token}", "Layanan ini GRATIS", "This service is FREE"),
            ("/", "Pendaftaran layanan", "Service registration"),
        ]:
            # The kiosk pages are for a kiosk's sign-in only (ADR 0102).
            who = {"Authorization": f"Bearer {kiosk}"} if path.startswith("/kiosk/c") else {}
            page_id = await svc.http.get(path, headers=who)
            assert page_id.status_code == 200, (path, page_id.text[:300])
            assert needle_id in page_id.text, path
            sep = "&" if "?" in path else "?"
            page_en = await svc.http.get(f"{path}{sep}lang=en", headers=who)
            assert needle_en in page_en.text, path
        ticket = await svc.http.get(f"/kiosk/ticket/{token}")
        assert "<svg" in ticket.text and "************0001" in ticket.text
        assert "3216090101900001" not in ticket.text
        # A status link opened in a browser (notify sends the API link) shows the page.
        browser = await svc.http.get(
            f"/api/v1/requests/{request['request_id']}", headers={"accept": "text/html"}
        )
        assert browser.status_code == 303 and browser.headers["location"].endswith(f"/s/{token}")
        # The admin page behind its token.
        svc.http.cookies.set("giliran_admin", "admin-secret-0123456789abcdefghij")
        admin = await svc.http.get("/admin?site=cikarang-utara")
        assert admin.status_code == 200 and "Sesi berikutnya" in admin.text


async def test_the_kiosk_outside_the_window_says_when_the_next_session_opens(
    quick: Settings,
) -> None:
    async with running("intake", quick.model_copy(update={"demo": False})) as svc:
        svc.app.state.intake.clock = lambda: datetime(2026, 11, 30, 3, 0, tzinfo=UTC)  # Monday
        _, kiosk = await svc.runtime.accounts.issue_token("kios-1", Role.KIOSK, SITE)
        page = await svc.http.get(
            "/kiosk/cikarang-utara", headers={"Authorization": f"Bearer {kiosk}"}
        )
        assert "Minggu, 6 Desember 2026 pukul 09.00 WIB" in page.text
        assert 'data-service="KTP-CETAK"' not in page.text
