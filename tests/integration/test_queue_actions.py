"""Every counter action and every refused transition over real NATS and the embedded store:
events published, multi-booth holds, priority ratio, appointments, sessions, ETA."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from giliran.contracts import (
    CommandReply,
    PriorityReason,
    RequestCheckedIn,
    RequestStatusQuery,
    RequestStatusReply,
    TicketAction,
    new_event,
    utcnow,
)
from giliran.settings import Settings
from tests.conftest import RunningService, eventually, nats_client, publish, request_event, running

pytestmark = pytest.mark.integration
SITE = "cikarang-utara"
API = f"/api/v1/sites/{SITE}"


class Desk:
    """One counter's buttons, over HTTP."""

    def __init__(self, http: httpx.AsyncClient, counter: str) -> None:
        self.http, self.counter = http, counter

    async def call_next(self) -> dict[str, Any] | None:
        r = await self.http.post(f"{API}/counters/{self.counter}/call-next")
        assert r.status_code in (200, 204), r.text
        return r.json()["ticket"] if r.status_code == 200 else None

    async def do(self, ticket_id: str, verb: str, **body: Any) -> httpx.Response:
        return await self.http.post(
            f"{API}/counters/{self.counter}/tickets/{ticket_id}/{verb}", json=body or None
        )

    async def ok(self, ticket_id: str, verb: str, **body: Any) -> dict[str, Any]:
        r = await self.do(ticket_id, verb, **body)
        assert r.status_code == 200, r.text
        ticket: dict[str, Any] = r.json()["ticket"]
        return ticket

    async def counter_action(self, action: str, **body: Any) -> dict[str, Any]:
        r = await self.http.post(f"{API}/counters/{self.counter}/{action}", json=body or None)
        assert r.status_code == 200, r.text
        counter: dict[str, Any] = r.json()["counter"]
        return counter


def refused(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert error["message_id"] and error["message_en"]


@asynccontextmanager
async def recording(settings: Settings) -> AsyncIterator[list[tuple[str, dict[str, Any]]]]:
    """Every ticket/counter event the queue publishes, as (subject tail, data), in order."""
    seen: list[tuple[str, dict[str, Any]]] = []
    async with nats_client(settings) as client:

        async def keep(msg: Any) -> None:
            kind = ".".join(msg.subject.split(".")[2:])
            seen.append((kind, json.loads(msg.data)["data"]))

        await client.subscribe("giliran.*.ticket.*", cb=keep)
        await client.subscribe("giliran.*.counter.*", cb=keep)
        await client.flush()
        yield seen


async def issued(svc: RunningService, event: Any) -> list[dict[str, Any]]:
    """Publish a request and wait for its tickets."""
    await publish(svc.runtime.settings, event)
    request_id = event.data.request_id

    async def tickets() -> list[dict[str, Any]] | None:
        r = await svc.http.get(f"{API}/requests/{request_id}")
        found: list[dict[str, Any]] = r.json()
        return found if len(found) == len(event.data.services) else None

    found: list[dict[str, Any]] = await eventually(tickets, within=15)
    return sorted(found, key=lambda t: event.data.services.index(t["service"]))


def set_clock(svc: RunningService, at: datetime) -> None:
    svc.app.state.queue.clock = lambda: at


async def test_a_ticket_through_its_life_publishes_every_step(settings: Settings) -> None:
    async with running("queue", settings) as svc, recording(settings) as events:
        desk = Desk(svc.http, "1")
        [ticket] = await issued(svc, request_event(["KTP-REKAM"]))
        opened = await desk.counter_action("open", services=["KTP-REKAM", "KTP-CETAK"])
        assert opened["status"] == "open" and opened["session_id"] == "test-session"
        called = await desk.call_next()
        assert called is not None and called["ticket_id"] == ticket["ticket_id"]
        assert (await desk.ok(ticket["ticket_id"], "recall"))["recalls"] == 1
        assert (await desk.ok(ticket["ticket_id"], "start"))["status"] == "serving"
        done = await desk.ok(ticket["ticket_id"], "complete", outcome="documents_incomplete")
        assert done["status"] == "completed" and done["outcome"] == "documents_incomplete"
        assert (await desk.counter_action("pause"))["status"] == "paused"
        assert (await desk.counter_action("close"))["status"] == "closed"

        ticket_kinds = [
            "ticket.issued",
            "ticket.called",
            "ticket.recalled",
            "ticket.started",
            "ticket.completed",
        ]
        counter_kinds = ["counter.opened", "counter.closed", "counter.closed"]
        total = len(ticket_kinds) + len(counter_kinds)
        await eventually(lambda: asyncio.sleep(0, len(events) >= total), within=10)
        # In order per ticket and per counter (each is one document's outbox); the two streams
        # of events may interleave either way.
        assert [k for k, _ in events if k.startswith("ticket.")] == ticket_kinds
        assert [k for k, _ in events if k.startswith("counter.")] == counter_kinds
        by_kind = dict(events)
        assert by_kind["ticket.called"]["counter"] == "1"
        assert by_kind["ticket.called"]["queued_at"] is not None
        assert by_kind["ticket.completed"]["outcome"] == "documents_incomplete"
        assert by_kind["counter.opened"]["services"] == ["KTP-REKAM", "KTP-CETAK"]
        assert [d["paused"] for k, d in events if k == "counter.closed"] == [True, False]


async def test_illegal_actions_are_refused_with_the_reason(settings: Settings) -> None:
    async with running("queue", settings) as svc:
        one, two = Desk(svc.http, "1"), Desk(svc.http, "2")
        first, second = (
            await issued(svc, request_event(["KTP-REKAM"])),
            await issued(svc, request_event(["KTP-REKAM"])),
        )
        waiting = second[0]["ticket_id"]
        refused(await one.do(waiting, "start"), 409, "illegal_transition")
        refused(await one.do(waiting, "complete"), 409, "illegal_transition")
        refused(await one.do(waiting, "recall"), 409, "illegal_transition")
        refused(await one.do(waiting, "no-show"), 409, "illegal_transition")
        refused(await one.do(waiting, "transfer", to_service="KIA"), 409, "illegal_transition")

        called = await one.call_next()
        assert called is not None and called["ticket_id"] == first[0]["ticket_id"]
        mine = called["ticket_id"]
        refused(await svc.http.post(f"{API}/counters/1/call-next"), 409, "counter_busy")
        refused(await one.do(waiting, "call"), 409, "counter_busy")
        refused(await two.do(mine, "complete"), 409, "not_this_counter")
        refused(await two.do(mine, "recall"), 409, "not_this_counter")
        refused(await one.do(mine, "no-show"), 409, "recalls_needed")
        refused(await one.do(mine, "transfer", to_service="KTP-REKAM"), 409, "same_service")
        refused(await one.do(mine, "transfer", to_service="NOPE"), 404, "unknown_service")
        refused(await one.do("nope", "complete"), 404, "ticket_not_found")
        refused(await svc.http.post(f"{API}/counters/99/call-next"), 404, "unknown_counter")
        refused(
            await svc.http.post("/api/v1/sites/nowhere/counters/1/call-next"), 404, "unknown_site"
        )
        assert (await one.do(mine, "explode")).status_code == 422

        await one.ok(mine, "complete")
        refused(await one.do(mine, "complete"), 409, "illegal_transition")
        refused(await one.do(mine, "cancel"), 409, "illegal_transition")
        # Counter 4 serves no e-KTP recording when opened for KIA only: not its line.
        await Desk(svc.http, "4").counter_action("open", services=["KIA"])
        refused(await Desk(svc.http, "4").do(waiting, "call"), 409, "not_this_counter")


async def test_no_show_and_re_check_in_with_the_stated_penalty(settings: Settings) -> None:
    async with running("queue", settings) as svc:
        desk = Desk(svc.http, "1")
        start = utcnow()
        set_clock(svc, start)
        [late] = await issued(svc, request_event(["KTP-REKAM"]))
        set_clock(svc, start + timedelta(minutes=5))
        [other] = await issued(svc, request_event(["KTP-REKAM"]))
        set_clock(svc, start + timedelta(minutes=20))
        assert (await desk.call_next() or {})["ticket_id"] == late["ticket_id"]
        for _ in range(2):
            await desk.ok(late["ticket_id"], "recall")
        gone = await desk.ok(late["ticket_id"], "no-show")
        assert gone["status"] == "no_show"

        set_clock(svc, start + timedelta(minutes=30))
        r = await svc.http.post(f"{API}/tickets/{late['ticket_id']}/recheck-in")
        back = r.json()["ticket"]
        assert back["number"] == late["number"] and back["status"] == "waiting"
        # Rejoins as if arrived 15 minutes later than first: behind `other` (minute 5).
        assert back["queued_at"] == (start + timedelta(minutes=15)).isoformat().replace(
            "+00:00", "Z"
        ) or datetime.fromisoformat(back["queued_at"]) == start + timedelta(minutes=15)
        again = await svc.http.post(f"{API}/tickets/{late['ticket_id']}/recheck-in")
        assert again.json()["ticket"]["ticket_id"] == back["ticket_id"]  # retried: same ticket
        status = {
            t["ticket_id"]: t
            for t in (await svc.http.get(f"{API}/requests/{late['request_id']}")).json()
        }
        assert status[back["ticket_id"]]["position"] == 1  # `other` is ahead

        assert (await desk.call_next() or {})["ticket_id"] == other["ticket_id"]
        await desk.ok(other["ticket_id"], "complete")
        assert (await desk.call_next() or {})["ticket_id"] == back["ticket_id"]

        # Too late: the grace period (30 min) after the no-show has passed.
        [third] = await issued(svc, request_event(["KTP-REKAM"]))
        await desk.ok(back["ticket_id"], "complete")
        await desk.call_next()
        await desk.ok(third["ticket_id"], "recall")
        await desk.ok(third["ticket_id"], "recall")
        await desk.ok(third["ticket_id"], "no-show")
        set_clock(svc, start + timedelta(minutes=90))
        refused(
            await svc.http.post(f"{API}/tickets/{third['ticket_id']}/recheck-in"),
            409,
            "recheck_too_late",
        )


async def test_transfer_keeps_the_original_arrival_time(settings: Settings) -> None:
    async with running("queue", settings) as svc, recording(settings) as events:
        start = utcnow()
        set_clock(svc, start)
        [moved] = await issued(svc, request_event(["KTP-REKAM"]))
        set_clock(svc, start + timedelta(minutes=3))
        [kia] = await issued(svc, request_event(["KIA"]))
        set_clock(svc, start + timedelta(minutes=6))
        desk = Desk(svc.http, "1")
        await desk.call_next()
        new = await desk.ok(moved["ticket_id"], "transfer", to_service="KIA")
        assert new["service"] == "KIA" and new["number"] == moved["number"]
        assert new["status"] == "waiting" and not new["held"]
        assert datetime.fromisoformat(new["queued_at"]) == start
        again = await desk.do(moved["ticket_id"], "transfer", to_service="KIA")
        assert again.json()["ticket"]["ticket_id"] == new["ticket_id"]  # a retried transfer
        # At a KIA counter the transferred citizen (arrived minute 0) goes before minute 3.
        kia_desk = Desk(svc.http, "4")
        await kia_desk.counter_action("open", services=["KIA"])
        assert (await kia_desk.call_next() or {})["ticket_id"] == new["ticket_id"]
        await kia_desk.ok(new["ticket_id"], "complete")
        assert (await kia_desk.call_next() or {})["ticket_id"] == kia["ticket_id"]
        await eventually(
            lambda: asyncio.sleep(0, any(k == "ticket.transferred" for k, _ in events))
        )
        transferred = next(d for k, d in events if k == "ticket.transferred")
        assert transferred["new_ticket_id"] == new["ticket_id"]
        reissued = [d for k, d in events if k == "ticket.issued" and d.get("transferred_from")]
        assert [d["ticket_id"] for d in reissued] == [new["ticket_id"]]


async def test_a_citizen_with_several_booths_is_never_called_twice_at_once(
    settings: Settings,
) -> None:
    async with running("queue", settings) as svc:
        rekam, kia = await issued(svc, request_event(["KTP-REKAM", "KIA"]))
        ktp_desk, kia_desk = Desk(svc.http, "1"), Desk(svc.http, "4")
        await kia_desk.counter_action("open", services=["KIA"])
        assert (await ktp_desk.call_next() or {})["ticket_id"] == rekam["ticket_id"]
        # Held: keeps its place, cannot be called, shows as held.
        assert await kia_desk.call_next() is None
        refused(await kia_desk.do(kia["ticket_id"], "call"), 409, "citizen_at_another_counter")
        view = (await svc.http.get(f"/api/v1/tickets/{kia['ticket_id']}")).json()["ticket"]
        assert view["held"] is True and view["status"] == "waiting"
        await ktp_desk.ok(rekam["ticket_id"], "complete")
        view = (await svc.http.get(f"/api/v1/tickets/{kia['ticket_id']}")).json()["ticket"]
        assert view["held"] is False
        assert (await kia_desk.call_next() or {})["ticket_id"] == kia["ticket_id"]


async def test_a_slow_call_keeps_its_claim_on_the_citizen(settings: Settings) -> None:
    """A call that took long to reach its claim (lock waits, many candidates tried) must not
    date the claim from when it began: the slot would look abandoned at once, and another
    counter's heal could free it mid-call and call the same citizen's other ticket too."""
    async with running("queue", settings) as svc:
        rekam, _ = await issued(svc, request_event(["KTP-REKAM", "KIA"]))
        ktp_desk, kia_desk = Desk(svc.http, "1"), Desk(svc.http, "4")
        await kia_desk.counter_action("open", services=["KIA"])
        queue = svc.app.state.queue
        store = queue.store
        start = datetime.now(UTC)
        clock = [start]
        queue.clock = lambda: clock[0]
        read_lines, move = store.callable_candidates, store.transition

        async def slow_read(*args: Any, **kwargs: Any) -> Any:
            found = await read_lines(*args, **kwargs)
            if clock[0] == start:  # the first read of the lines takes 30 s
                clock[0] = start + timedelta(seconds=30)
            return found

        meanwhile: list[dict[str, Any] | None] = []

        async def transition(ticket_id: str, **kwargs: Any) -> Any:
            if ticket_id == rekam["ticket_id"] and not meanwhile:
                meanwhile.append(await kia_desk.call_next())  # the KIA counter, mid-call
            return await move(ticket_id, **kwargs)

        store.callable_candidates, store.transition = slow_read, transition
        assert (await ktp_desk.call_next() or {})["ticket_id"] == rekam["ticket_id"]
        assert meanwhile == [None]


async def test_priority_ratio_one_in_four_calls(settings: Settings) -> None:
    async with running("queue", settings) as svc:
        desk = Desk(svc.http, "1")
        await desk.counter_action("open", services=["KTP-REKAM"])
        kinds: dict[str, str] = {}
        for i in range(12):
            priority = PriorityReason.ELDERLY if i % 3 == 2 else None
            [t] = await issued(svc, request_event(["KTP-REKAM"], priority=priority))
            kinds[t["ticket_id"]] = "P" if priority else "N"
        order = ""
        while (called := await desk.call_next()) is not None:
            order += kinds[called["ticket_id"]]
            await desk.ok(called["ticket_id"], "complete")
        assert order == "NNNPNNNPNNPP"


async def test_a_priority_ticket_deep_in_the_line_is_called_when_the_ratio_is_due(
    settings: Settings,
) -> None:
    """The priority lines are read only in a session that had a priority ticket (ADR 0085):
    one behind eight others (beyond the oldest four read per line) still comes fourth."""
    async with running("queue", settings) as svc:
        desk = Desk(svc.http, "1")
        await desk.counter_action("open", services=["KTP-REKAM"])
        for _ in range(8):
            await issued(svc, request_event(["KTP-REKAM"]))
        [late] = await issued(svc, request_event(["KTP-REKAM"], priority=PriorityReason.ELDERLY))
        order = []
        for _ in range(4):
            called = await desk.call_next()
            assert called is not None
            order.append(called["ticket_id"] == late["ticket_id"])
            await desk.ok(called["ticket_id"], "complete")
        assert order == [False, False, False, True]


async def test_appointments_go_first_when_checked_in_and_due(settings: Settings) -> None:
    async with running("queue", settings) as svc:
        desk = Desk(svc.http, "1")
        start = utcnow()
        set_clock(svc, start)
        [walk_in] = await issued(svc, request_event(["KTP-REKAM"]))
        booking = request_event(
            ["KTP-REKAM"], arrived=False, appointment_at=start + timedelta(minutes=10)
        )
        [booked] = await issued(svc, booking)
        assert booked["arrived"] is False and booked["position"] is None
        set_clock(svc, start + timedelta(minutes=2))
        [later] = await issued(svc, request_event(["KTP-REKAM"]))
        set_clock(svc, start + timedelta(minutes=9))
        # Not checked in: cannot be called, and calling it by hand says why.
        refused(await desk.do(booked["ticket_id"], "call"), 409, "not_checked_in")
        checked_in = RequestCheckedIn(
            request_id=booking.data.request_id,
            session_id="test-session",
            checked_in_at=start + timedelta(minutes=9),
        )
        await publish(settings, new_event(checked_in, site=SITE))

        async def arrived() -> bool:
            r = await svc.http.get(f"/api/v1/tickets/{booked['ticket_id']}")
            return bool(r.json()["ticket"]["arrived"])

        await eventually(arrived)
        # Slot not yet come (minute 9 < 10): walk-ins in arrival order first.
        assert (await desk.call_next() or {})["ticket_id"] == walk_in["ticket_id"]
        await desk.ok(walk_in["ticket_id"], "complete")
        set_clock(svc, start + timedelta(minutes=11))
        # Slot has come and the holder is here: ahead of `later` who arrived before them.
        assert (await desk.call_next() or {})["ticket_id"] == booked["ticket_id"]
        await desk.ok(booked["ticket_id"], "complete")
        assert (await desk.call_next() or {})["ticket_id"] == later["ticket_id"]


async def test_counters_serve_only_the_running_session(settings: Settings) -> None:
    async with running("queue", settings) as svc:
        now = utcnow()
        last_sunday = request_event(
            ["KTP-REKAM"],
            session_id="cikarang-utara-last-sunday",
            session_opens_at=now - timedelta(days=7, hours=1),
            session_closes_at=now - timedelta(days=7) + timedelta(hours=1),
        )
        await issued(svc, last_sunday)
        today = request_event(
            ["KTP-REKAM"],
            session_id="cikarang-utara-today",
            session_opens_at=now - timedelta(minutes=30),
            session_closes_at=now + timedelta(minutes=90),
        )
        [current] = await issued(svc, today)
        desk = Desk(svc.http, "1")
        called = await desk.call_next()
        assert called is not None and called["ticket_id"] == current["ticket_id"]
        await desk.ok(called["ticket_id"], "complete")
        assert await desk.call_next() is None  # last Sunday's leftover is never called
        board = (await svc.http.get(f"{API}/board")).json()
        assert board["session_id"] == "cikarang-utara-today"


async def test_cancelled_request_cancels_its_open_tickets(settings: Settings) -> None:
    from giliran.contracts import RequestCancelled

    async with running("queue", settings) as svc:
        event = request_event(["KTP-REKAM", "KIA"])
        rekam, _ = await issued(svc, event)
        desk = Desk(svc.http, "1")
        await desk.call_next()
        await desk.ok(rekam["ticket_id"], "complete")
        cancel = RequestCancelled(
            request_id=event.data.request_id, reason="sesi dibatalkan", cancelled_at=utcnow()
        )
        await publish(settings, new_event(cancel, site=SITE))

        async def statuses() -> dict[str, str] | None:
            found = (await svc.http.get(f"{API}/requests/{event.data.request_id}")).json()
            result = {t["service"]: t["status"] for t in found}
            return result if result["KIA"] == "cancelled" else None

        assert await eventually(statuses) == {"KTP-REKAM": "completed", "KIA": "cancelled"}


async def test_eta_needs_an_open_counter_and_follows_the_pace(settings: Settings) -> None:
    async with running("queue", settings) as svc:
        start = utcnow()
        set_clock(svc, start)
        tickets = []
        for second in range(4):
            set_clock(svc, start + timedelta(seconds=second))
            tickets.append((await issued(svc, request_event(["IKD"])))[0])
        assert tickets[0]["eta"] is None  # no counter open for the line: no guess
        desk = Desk(svc.http, "3")
        await desk.counter_action("open", services=["IKD"])
        first = await desk.call_next()
        assert first is not None
        set_clock(svc, start + timedelta(minutes=4))
        await desk.ok(first["ticket_id"], "complete")  # one service took 4 minutes
        last = (await svc.http.get(f"/api/v1/tickets/{tickets[3]['ticket_id']}")).json()["ticket"]
        assert last["position"] == 2
        # two ahead at the pace of the one service so far (4 minutes less the 3 s the ticket
        # was issued after the first), on one counter: (2 + 0.5) paces from now
        pace = timedelta(minutes=4) - timedelta(seconds=3)
        expected = start + timedelta(minutes=4) + pace * 2.5
        assert datetime.fromisoformat(last["eta"]) == expected
        quotes = await svc.app.state.queue.store.eta_quotes.find({}).to_list()
        assert any(q["ticket_id"] == tickets[3]["ticket_id"] for q in quotes)


async def test_commands_over_nats_use_the_same_rules(settings: Settings) -> None:
    async with running("queue", settings) as svc, nats_client(settings) as client:
        [ticket] = await issued(svc, request_event(["IKD"]))

        async def send(action: str, subject_site: str = SITE, **body: Any) -> CommandReply:
            reply = await client.request(
                TicketAction.subject(subject_site, action),
                json.dumps({"site": SITE, **body}).encode(),
                timeout=5,
            )
            return CommandReply.model_validate_json(reply.data)

        opened = await send("open", counter="3", services=["IKD"])
        assert opened.ok and opened.counter is not None and opened.counter.status == "open"
        called = await send("call", counter="3", ticket_id=ticket["ticket_id"])
        assert called.ok and called.ticket is not None and called.ticket.status == "called"
        early = await send("no_show", counter="3", ticket_id=ticket["ticket_id"])
        assert not early.ok and early.error is not None and early.error.code == "recalls_needed"
        elsewhere = await send("recall", subject_site="another-site", counter="3", ticket_id="x")
        assert elsewhere.error is not None and elsewhere.error.code == "wrong_site"
        status = await client.request(
            RequestStatusQuery.subject(SITE),
            RequestStatusQuery(site=SITE, request_id=ticket["request_id"])
            .model_dump_json()
            .encode(),
            timeout=5,
        )
        reply = RequestStatusReply.model_validate_json(status.data)
        assert reply.ok and [t.status for t in reply.tickets] == ["called"]
