"""Every object a request touches belongs to the site its caller acts at: another site's session,
ticket or request named in a body, a query or a NATS command is refused and nothing happens;
a site's admin changes that site only; a display device never reads a priority reason. Real
nats-server (with Giliran's users and permissions for the device), real store, real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, timedelta
from typing import Any

import httpx
import nats
import pytest

from giliran.auth import ALL_SITES, Role
from giliran.bus import publish_event
from giliran.contracts import (
    CallNext,
    CommandReply,
    CounterAction,
    PriorityReason,
    RequestStatusQuery,
    RequestStatusReply,
    TicketAction,
    utcnow,
)
from giliran.settings import Settings
from tests.conftest import (
    RunningService,
    SecuredNats,
    eventually,
    publish,
    request_event,
    running,
)

pytestmark = pytest.mark.integration

SITE_A = "cikarang-utara"
SITE_B = "botram-babelan"
SHARED_SERVICE = "KTP-CETAK"  # offered at both sites, and served by counter 1 of SITE_A


def today_session(site: str) -> str:
    return f"{site}-{date.today():%Y%m%d}"


def running_window() -> dict[str, Any]:
    now = utcnow()
    return {
        "session_opens_at": now - timedelta(minutes=30),
        "session_closes_at": now + timedelta(minutes=90),
    }


@asynccontextmanager
async def watching(url: str, **connect: Any) -> AsyncIterator[list[tuple[str, dict[str, Any]]]]:
    """Every ticket and counter event of any site, as (subject, body), while the block runs."""
    seen: list[tuple[str, dict[str, Any]]] = []
    client = await nats.connect(url, **connect)

    async def keep(msg: Any) -> None:
        seen.append((msg.subject, json.loads(msg.data)))

    await client.subscribe("giliran.*.ticket.*", cb=keep)
    await client.subscribe("giliran.*.counter.*", cb=keep)
    await client.flush()
    try:
        yield seen
    finally:
        await client.close()


async def tickets_of(svc: RunningService, site: str, request_id: str, n: int) -> list[Any]:
    async def found() -> list[Any] | None:
        r = await svc.http.get(f"/api/v1/sites/{site}/requests/{request_id}")
        tickets: list[Any] = r.json() if r.status_code == 200 else []
        return tickets if len(tickets) == n else None

    result: list[Any] = await eventually(found, within=15)
    return result


async def token(svc: RunningService, role: Role, site: str) -> dict[str, str]:
    _, issued = await svc.runtime.accounts.issue_token(f"{role}@{site}", role, site)
    return {"Authorization": f"Bearer {issued}"}


def refused(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code, error
    assert error["message_id"] and error["message_en"]
    assert error["message_id"] != error["message_en"]


def about(seen: list[tuple[str, dict[str, Any]]], needle: str) -> list[str]:
    """Subjects of the events seen whose body mentions `needle` (a ticket or session id)."""
    return [subject for subject, body in seen if needle in json.dumps(body)]


async def test_an_officer_cannot_open_or_call_on_another_sites_session_over_http(
    settings: Settings,
) -> None:
    async with running("queue", settings) as svc, watching(settings.nats_url) as seen:
        theirs = request_event(
            [SHARED_SERVICE], site=SITE_B, session_id=today_session(SITE_B), **running_window()
        )
        await publish(settings, theirs)
        [victim] = await tickets_of(svc, SITE_B, theirs.data.request_id, 1)
        officer = await token(svc, Role.OFFICER, SITE_A)
        counter = f"/api/v1/sites/{SITE_A}/counters/1"
        # Their recorded session, one of theirs not seen yet, and one of no site at all.
        for session in (today_session(SITE_B), f"{SITE_B}-20261231", "cikarang-utara-x"):
            for body in ({"session_id": session}, {"session_id": session, "services": ["KIA"]}):
                answer = await svc.anonymous.post(f"{counter}/open", json=body, headers=officer)
                refused(answer, 403, "wrong_site")
        # The counter was not opened on it: call-next finds nothing to call at this site.
        called = await svc.anonymous.post(f"{counter}/call-next", headers=officer)
        assert called.status_code == 204, called.text
        still = (await svc.http.get(f"/api/v1/tickets/{victim['ticket_id']}")).json()["ticket"]
        assert still["status"] == "waiting" and still["counter"] is None
        await asyncio.sleep(0.6)  # > the outbox poll: an event would have left by now
        assert about(seen, victim["ticket_id"]) == [f"giliran.{SITE_B}.ticket.issued"]
        assert about(seen, today_session(SITE_B)) == [f"giliran.{SITE_B}.ticket.issued"]
        # Nor may a console read the other site's line through its own counter's detail.
        detail = await svc.anonymous.get(counter, headers=officer)
        assert victim["ticket_id"] not in detail.text


async def test_a_counter_left_on_another_sites_session_still_calls_none_of_its_citizens(
    settings: Settings,
) -> None:
    """Defence in depth: a counter state pinned to another site's session (written before this
    check existed, or by hand) calls and lists only its own site's tickets."""
    async with running("queue", settings) as svc:
        theirs = request_event(
            [SHARED_SERVICE], site=SITE_B, session_id=today_session(SITE_B), **running_window()
        )
        await publish(settings, theirs)
        [victim] = await tickets_of(svc, SITE_B, theirs.data.request_id, 1)
        pinned = {
            "status": "open",
            "session_id": today_session(SITE_B),
            "pinned": True,
            "services": [SHARED_SERVICE],
            "opened_at": "20261207T000000.000000Z",
        }
        store = svc.app.state.queue.store
        assert await store.save_counter(SITE_A, "1", pinned, [], None) is not None
        counter = f"/api/v1/sites/{SITE_A}/counters/1"
        assert (await svc.http.post(f"{counter}/call-next")).status_code == 204
        still = (await svc.http.get(f"/api/v1/tickets/{victim['ticket_id']}")).json()["ticket"]
        assert still["status"] == "waiting"
        assert victim["ticket_id"] not in (await svc.http.get(counter)).text


async def test_a_request_naming_another_sites_session_issues_no_ticket_in_its_line(
    settings: Settings,
) -> None:
    """A session belongs to one site for good: a request of site A naming site B's session would
    put A's citizen into B's lines (and B's session under A's counters)."""
    async with running("queue", settings) as svc:
        theirs = request_event(
            [SHARED_SERVICE], site=SITE_B, session_id=today_session(SITE_B), **running_window()
        )
        await publish(settings, theirs)
        await tickets_of(svc, SITE_B, theirs.data.request_id, 1)
        crossing = request_event(
            [SHARED_SERVICE], site=SITE_A, session_id=today_session(SITE_B), **running_window()
        )
        await publish(settings, crossing)
        ok = request_event([SHARED_SERVICE], site=SITE_A, **running_window())
        await publish(settings, ok)
        await tickets_of(svc, SITE_A, ok.data.request_id, 1)  # handled after the crossing one
        r = await svc.http.get(f"/api/v1/sites/{SITE_A}/requests/{crossing.data.request_id}")
        assert r.json() == []
        assert await svc.app.state.queue.store.session_site(today_session(SITE_B)) == SITE_B


async def test_a_site_device_cannot_reach_another_sites_session_or_request_over_nats(
    secured_nats: SecuredNats, settings: Settings
) -> None:
    """The device of site A may command site A's subjects (NATS permissions); the bodies it sends
    there must not name site B's session, ticket or request."""
    own = secured_nats.settings_for(settings, "queue")
    async with (
        running("queue", own) as svc,
        watching(secured_nats.url, user="ops", password=secured_nats.passwords["ops"]) as seen,
    ):
        theirs = request_event(
            [SHARED_SERVICE], site=SITE_B, session_id=today_session(SITE_B), **running_window()
        )
        intake = await secured_nats.connect("intake")
        try:
            await publish_event(intake.jetstream(), theirs.to_json_dict())
        finally:
            await intake.close()
        [victim] = await tickets_of(svc, SITE_B, theirs.data.request_id, 1)
        device = await secured_nats.connect(f"device-{SITE_A}")
        try:

            async def send(subject: str, body: dict[str, Any]) -> dict[str, Any]:
                reply = await device.request(subject, json.dumps(body).encode(), timeout=5)
                answer: dict[str, Any] = json.loads(reply.data)
                return answer

            opened = CommandReply.model_validate(
                await send(
                    CounterAction.subject(SITE_A, "open"),
                    {"site": SITE_A, "counter": "1", "session_id": today_session(SITE_B)},
                )
            )
            assert not opened.ok and opened.error is not None
            assert opened.error.code == "wrong_site" and opened.error.message_id
            called = CommandReply.model_validate(
                await send(CallNext.subject(SITE_A), {"site": SITE_A, "counter": "1"})
            )
            assert called.ok and called.ticket is None
            picked = CommandReply.model_validate(
                await send(
                    TicketAction.subject(SITE_A, "call"),
                    {"site": SITE_A, "counter": "1", "ticket_id": victim["ticket_id"]},
                )
            )
            assert not picked.ok and picked.error is not None
            assert picked.error.code == "ticket_not_found"
            status = RequestStatusReply.model_validate(
                await send(
                    RequestStatusQuery.subject(SITE_A),
                    {"site": SITE_B, "request_id": theirs.data.request_id},
                )
            )
            assert not status.ok and not status.tickets
            assert status.error is not None and status.error.code == "wrong_site"
        finally:
            await device.close()
        still = (await svc.http.get(f"/api/v1/tickets/{victim['ticket_id']}")).json()["ticket"]
        assert still["status"] == "waiting" and still["counter"] is None
        await asyncio.sleep(0.6)
        assert about(seen, victim["ticket_id"]) == [f"giliran.{SITE_B}.ticket.issued"]
        assert not [s for s, _ in seen if s.startswith(f"giliran.{SITE_A}.counter.")]


async def test_ticket_and_request_look_ups_stay_at_their_site_and_off_displays(
    settings: Settings,
) -> None:
    async with running("queue", settings) as svc:
        event = request_event(
            ["KTP-REKAM"], site=SITE_A, priority=PriorityReason.PREGNANCY, **running_window()
        )
        await publish(settings, event)
        [ticket] = await tickets_of(svc, SITE_A, event.data.request_id, 1)
        assert ticket["priority"] == "pregnancy"
        request = f"/api/v1/sites/{SITE_A}/requests/{event.data.request_id}"
        for role in (Role.DISPLAY, Role.KIOSK):
            answer = await svc.anonymous.get(request, headers=await token(svc, role, SITE_A))
            refused(answer, 403, "forbidden")
            assert "pregnancy" not in answer.text
        for role in (Role.OFFICER, Role.SUPERVISOR, Role.AUDITOR, Role.ADMIN):
            answer = await svc.anonymous.get(
                f"/api/v1/tickets/{ticket['ticket_id']}", headers=await token(svc, role, SITE_B)
            )
            refused(answer, 403, "forbidden")
            assert "pregnancy" not in answer.text
        mine = await svc.anonymous.get(
            f"/api/v1/tickets/{ticket['ticket_id']}", headers=await token(svc, Role.OFFICER, SITE_A)
        )
        assert mine.status_code == 200 and mine.json()["ticket"]["priority"] == "pregnancy"


async def test_a_site_admin_changes_that_sites_calendar_only_by_api_and_form_alike(
    settings: Settings,
) -> None:
    async with running("intake", settings) as svc:
        intake = svc.app.state.intake
        before = await intake.overrides(SITE_A)
        admin_b = await token(svc, Role.ADMIN, SITE_B)
        admin_api = f"/api/v1/admin/sites/{SITE_A}"
        attempts = [
            ("PUT", f"{admin_api}/holidays/2026-12-24", {"note": "libur palsu"}),
            ("DELETE", f"{admin_api}/holidays/2026-12-25", None),
            ("PUT", f"{admin_api}/closed/2026-12-27", {"note": "tutup palsu"}),
            ("POST", f"{admin_api}/sessions", {"date": "2026-12-26"}),
            ("POST", f"{admin_api}/sessions/{SITE_A}-20261213/cancel", {"note": "x"}),
            ("PUT", f"{admin_api}/sessions/{SITE_A}-20261213/quotas", {"quotas": {"KIA": 0}}),
            ("GET", f"{admin_api}/sessions", None),
        ]
        for method, path, body in attempts:
            answer = await svc.anonymous.request(method, path, json=body, headers=admin_b)
            refused(answer, 403, "forbidden")
        # The form says the same (the site comes from its body there).
        form = await svc.anonymous.post(
            "/admin/action",
            data={"site": SITE_A, "what": "holiday_add", "day": "2026-12-24", "note": "x"},
            headers=admin_b,
        )
        refused(form, 403, "forbidden")
        assert await intake.overrides(SITE_A) == before
        # Its own site is fine, by either way in.
        mine = await svc.anonymous.put(
            f"/api/v1/admin/sites/{SITE_B}/holidays/2026-12-24", json={"note": "x"}, headers=admin_b
        )
        assert mine.status_code == 204, mine.text


async def test_an_admin_cannot_reach_another_sites_session_through_its_own_site(
    settings: Settings,
) -> None:
    """The path names the admin's site; the session in it is another site's."""
    async with running("intake", settings) as svc:
        store = svc.app.state.intake.store
        theirs = f"{SITE_B}-20261213"
        before = await store.quotas_of(theirs)
        for headers in (
            await token(svc, Role.ADMIN, SITE_A),
            await token(svc, Role.ADMIN, ALL_SITES),
        ):
            path = f"/api/v1/admin/sites/{SITE_A}/sessions/{theirs}"
            for method, tail, body in (
                ("PUT", "/quotas", {"quotas": {SHARED_SERVICE: 0}}),
                ("GET", "/quotas", None),
                ("POST", "/cancel", {"note": "x"}),
            ):
                answer = await svc.anonymous.request(
                    method, path + tail, json=body, headers=headers
                )
                assert answer.status_code == 422, answer.text
                assert answer.json()["error"]["message_id"].startswith("Kolom 'session_id'")
        assert await store.quotas_of(theirs) == before
