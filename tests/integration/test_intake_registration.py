"""Registration under load and abuse, against a real nats-server and the embedded store: quotas
never oversold, one request per NIK, rate limits, bookings ahead and check-in at the kiosk."""

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

from giliran.settings import Settings
from giliran.store import count
from tests.conftest import RunningService, eventually, nats_client, running

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
ADMIN = {"Authorization": "Bearer admin-secret-0123456789abcdefghij"}
FRIDAY_10_WIB = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
# MSC's online registration for Sunday's session opens on Saturday at 18:00 WIB (catalogue).
SATURDAY_19_WIB = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SUNDAY_0830_WIB = datetime(2026, 11, 29, 1, 30, tzinfo=UTC)
SUNDAY_1000_WIB = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


def nik(n: int, born: str = "010190") -> str:
    """A valid NIK of Cikarang Utara (32.16.09), distinct per n."""
    return f"321609{born}{n:04d}"


def body(n: int, **extra: Any) -> dict[str, Any]:
    return {"site": SITE, "services": ["KTP-CETAK"], "name": f"Warga {n}", "nik": nik(n), **extra}


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """No queue runs in these tests: do not wait for tickets."""
    return settings.model_copy(
        update={
            "ticket_wait_seconds": 0.0,
            "admin_token": SecretStr("admin-secret-0123456789abcdefghij"),
        }
    )


def at(svc: RunningService, moment: datetime) -> None:
    svc.app.state.intake.clock = lambda: moment


@asynccontextmanager
async def client_from(svc: RunningService, address: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=svc.app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
        yield client


@asynccontextmanager
async def bus_events(settings: Settings, subject: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Every event published on `subject` while the block runs (a core subscription sees what
    the outbox relay publishes to JetStream)."""
    seen: list[dict[str, Any]] = []
    async with nats_client(settings) as nc:

        async def got(msg: Any) -> None:
            seen.append(json.loads(msg.data))

        sub = await nc.subscribe(subject, cb=got)
        yield seen
        await sub.unsubscribe()


async def test_fifty_concurrent_registrations_for_the_last_ten_places(fast: Settings) -> None:
    async with running("intake", fast.model_copy(update={"demo": False})) as svc:
        at(svc, SUNDAY_1000_WIB)
        session = "cikarang-utara-20261129"
        r = await svc.http.put(
            f"/api/v1/admin/sites/{SITE}/sessions/{session}/quotas",
            json={"quotas": {"KTP-CETAK": 15}},
            headers=ADMIN,
        )
        assert r.status_code == 200, r.text
        for n in range(1, 6):
            assert (await svc.http.post("/api/v1/requests", json=body(n))).status_code == 202
        started = asyncio.get_running_loop().time()
        answers = await asyncio.gather(
            *(svc.http.post("/api/v1/requests", json=body(n)) for n in range(100, 150))
        )
        seconds = asyncio.get_running_loop().time() - started
        codes = [a.status_code for a in answers]
        print(f"\n50 concurrent registrations for 10 places: {seconds * 1000:.0f} ms")
        assert codes.count(202) == 10, codes
        assert codes.count(409) == 40, codes
        refused = next(a for a in answers if a.status_code == 409).json()["error"]
        assert refused["code"] == "quota_exhausted"
        assert "KTP-CETAK" in refused["message_id"] and "KTP-CETAK" in refused["message_en"]
        store = svc.app.state.intake.store
        assert await count(store.requests, {"session_id": session}) == 15
        quota = await svc.http.get(
            f"/api/v1/admin/sites/{SITE}/sessions/{session}/quotas", headers=ADMIN
        )
        row = next(q for q in quota.json() if q["service"] == "KTP-CETAK")
        assert (row["limit"], row["used"], row["remaining"]) == (15, 15, 0)
        # A refused citizen's NIK was given back: after raising the quota they get a place.
        await svc.http.put(
            f"/api/v1/admin/sites/{SITE}/sessions/{session}/quotas",
            json={"quotas": {"KTP-CETAK": 16}},
            headers=ADMIN,
        )
        late = next(
            n for n, a in zip(range(100, 150), answers, strict=True) if a.status_code == 409
        )
        assert (await svc.http.post("/api/v1/requests", json=body(late))).status_code == 202


async def test_one_active_request_per_nik_per_session_and_service(fast: Settings) -> None:
    """A second registration of a NIK is refused without its first request (ADR 0100; the
    attack itself is in test_intake_abuse.py)."""
    async with running("intake", fast) as svc:
        first = await svc.http.post("/api/v1/requests", json=body(1))
        assert first.status_code == 202, first.text
        again = await svc.http.post("/api/v1/requests", json=body(1, name="Orang lain"))
        assert again.status_code == 409, again.text
        assert again.json()["error"]["code"] == "already_registered"
        assert first.json()["request_id"] not in again.text
        # Ten at once with one NIK: one request, nine refusals.
        burst = await asyncio.gather(
            *(svc.http.post("/api/v1/requests", json=body(2)) for _ in range(10))
        )
        assert sorted(r.status_code for r in burst) == [202] + [409] * 9
        # Another service for the same NIK is a new request.
        other = await svc.http.post("/api/v1/requests", json=body(1, services=["KIA"]))
        assert other.status_code == 202
        assert other.json()["request_id"] != first.json()["request_id"]
        store = svc.app.state.intake.store
        assert await count(store.requests, {}) == 3


async def test_rate_limits_per_client_address_and_per_phone(fast: Settings) -> None:
    limited = fast.model_copy(
        update={"rate_limit_exempt": [], "rate_ip_per_minute": 5, "rate_phone_per_hour": 2}
    )
    async with (
        running("intake", limited) as svc,
        client_from(svc, "203.0.113.7") as bot,
        client_from(svc, "198.51.100.20") as citizen,
    ):
        answers = await asyncio.gather(
            *(bot.post("/api/v1/requests", json=body(n)) for n in range(1, 9))
        )
        codes = sorted(a.status_code for a in answers)
        assert codes == [202] * 5 + [429] * 3, codes
        refused = next(a for a in answers if a.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["message_id"].startswith("Terlalu banyak")
        assert (await citizen.post("/api/v1/requests", json=body(20))).status_code == 202

        phone = {"phone": "0812 3456 7890", "consent": True}
        for n, address in ((30, "192.0.2.1"), (31, "192.0.2.2")):
            async with client_from(svc, address) as c:
                assert (await c.post("/api/v1/requests", json=body(n, **phone))).status_code == 202
        async with client_from(svc, "192.0.2.3") as c:
            third = await c.post("/api/v1/requests", json=body(32, **phone))
        assert third.status_code == 429, third.text
        assert "nomor HP" in third.json()["error"]["message_id"]


async def test_a_booking_ahead_joins_the_line_at_check_in(fast: Settings) -> None:
    settings = fast.model_copy(update={"demo": False})
    async with (
        running("intake", settings) as svc,
        bus_events(settings, f"giliran.{SITE}.request.*") as events,
    ):
        at(svc, SATURDAY_19_WIB)
        sessions = (await svc.http.get(f"/api/v1/sites/{SITE}/sessions?days=20")).json()
        sunday = next(s for s in sessions if s["session_id"] == "cikarang-utara-20261129")
        assert (sunday["opens_local"], sunday["closes_local"], sunday["bookable"]) == (
            "09:00",
            "11:00",
            True,
        )
        assert sunday["opens_at"].startswith("2026-11-29T02:00:00")  # 09:00 WIB is 02:00 UTC
        slots = await svc.http.get(f"/api/v1/sites/{SITE}/sessions/{sunday['session_id']}/slots")
        assert [s["local"] for s in slots.json()] == ["09:00", "09:30", "10:00", "10:30"]

        booked = await svc.http.post(
            "/api/v1/requests",
            json=body(
                1,
                session_id="cikarang-utara-20261129",
                appointment_at="2026-11-29T09:30:00+07:00",
                priority="pregnancy",
            ),
        )
        assert booked.status_code == 202, booked.text
        booking = booked.json()
        assert booking["arrived"] is False and len(booking["checkin_code"]) == 6
        assert booking["priority"] == "pregnancy"
        too_far = await svc.http.post(
            "/api/v1/requests", json=body(2, session_id="cikarang-utara-20261213")
        )
        assert too_far.status_code == 422
        assert too_far.json()["error"]["code"] == "session_not_bookable"
        assert too_far.json()["error"]["field"] == "session_id"
        bad_slot = await svc.http.post(
            "/api/v1/requests",
            json=body(
                3, session_id="cikarang-utara-20261129", appointment_at="2026-11-29T09:10:00+07:00"
            ),
        )
        assert bad_slot.status_code == 422
        assert bad_slot.json()["error"]["field"] == "appointment_at"
        assert "09.30" in bad_slot.json()["error"]["message_id"]

        early = await svc.http.post(
            f"/api/v1/sites/{SITE}/check-in", json={"code": booking["checkin_code"]}
        )
        # Early, a code answers as an unknown one would (ADR 0101); its QR says when instead.
        assert early.status_code == 404
        assert early.json()["error"]["code"] == "check_in_code_unknown"
        early_qr = await svc.http.post(
            f"/api/v1/sites/{SITE}/check-in", json={"code": booking["status_page_url"]}
        )
        assert early_qr.status_code == 409
        assert early_qr.json()["error"]["code"] == "check_in_refused"

        at(svc, SUNDAY_0830_WIB)
        done = await svc.http.post(
            f"/api/v1/sites/{SITE}/check-in", json={"code": booking["checkin_code"].lower()}
        )
        assert done.status_code == 200, done.text
        assert done.json()["checked_in"] is True and done.json()["request"]["arrived"] is True
        twice = await svc.http.post(
            f"/api/v1/sites/{SITE}/check-in", json={"code": booking["checkin_code"]}
        )
        assert twice.json()["checked_in"] is False
        unknown = await svc.http.post(f"/api/v1/sites/{SITE}/check-in", json={"code": "XXXXXX"})
        assert unknown.status_code == 404

        # The QR on a receipt is the status link; a scanner types it into the kiosk.
        at(svc, SATURDAY_19_WIB)
        second = await svc.http.post(
            "/api/v1/requests", json=body(4, session_id="cikarang-utara-20261129")
        )
        at(svc, SUNDAY_0830_WIB)
        scanned = await svc.http.post(
            f"/api/v1/sites/{SITE}/check-in", json={"code": second.json()["status_page_url"]}
        )
        assert scanned.status_code == 200 and scanned.json()["checked_in"] is True

        def types() -> list[tuple[str, Any]]:
            return [(e["type"], e["data"].get("arrived")) for e in events]

        async def all_published() -> bool:
            return len(events) >= 4

        await eventually(all_published, within=10)
        submitted = [e for e in events if e["type"] == "giliran.request.submitted.v1"]
        checked = [e for e in events if e["type"] == "giliran.request.checked_in.v1"]
        assert len(checked) == 2, types()
        assert {e["data"]["request_id"] for e in checked} == {
            booking["request_id"],
            second.json()["request_id"],
        }
        first_event = next(e for e in submitted if e["data"]["request_id"] == booking["request_id"])
        assert first_event["data"]["arrived"] is False
        assert first_event["data"]["appointment_at"].startswith("2026-11-29T02:30:00")
        assert first_event["data"]["priority"] == "pregnancy"
        assert nik(1) not in json.dumps(events)


async def test_the_elderly_are_recognised_from_the_nik(fast: Settings) -> None:
    async with running("intake", fast) as svc:
        old = await svc.http.post("/api/v1/requests", json=body(1, nik=nik(1, born="010160")))
        young = await svc.http.post("/api/v1/requests", json=body(2))
        assert old.json()["priority"] == "elderly"
        assert young.json()["priority"] is None


async def test_an_appointment_slot_is_never_overbooked(fast: Settings) -> None:
    async with running("intake", fast.model_copy(update={"demo": False})) as svc:
        at(svc, SATURDAY_19_WIB)
        slot = {"session_id": "cikarang-utara-20261129", "appointment_at": "2026-11-29T10:00+07:00"}
        answers = await asyncio.gather(
            *(svc.http.post("/api/v1/requests", json=body(n, **slot)) for n in range(1, 15))
        )
        codes = sorted(a.status_code for a in answers)
        assert codes == [202] * 10 + [409] * 4, codes  # slot_capacity 10 (catalogue default)
        full = next(a for a in answers if a.status_code == 409).json()["error"]
        assert full["code"] == "slot_full" and "10.00" in full["message_id"]
        slots = await svc.http.get(f"/api/v1/sites/{SITE}/sessions/{slot['session_id']}/slots")
        left = {s["local"]: s["remaining"] for s in slots.json()}
        assert left == {"09:00": 10, "09:30": 10, "10:00": 0, "10:30": 10}
        # The refused bookings took no service place either.
        quota = await svc.http.get(
            f"/api/v1/admin/sites/{SITE}/sessions/{slot['session_id']}/quotas", headers=ADMIN
        )
        assert next(q for q in quota.json() if q["service"] == "KTP-CETAK")["used"] == 10
