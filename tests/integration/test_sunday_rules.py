"""A real Sunday's admission rules (issue 15), against a real nats-server, the embedded store and
the services' real HTTP apps, with a controllable clock: the online registration window, NIK at
the kiosk too, quotas sized from counter-minutes, check-in on arrival and its lapse, the
per-address challenge and cap under a flood, and fees told truthfully on every page and message."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from giliran.auth import Role
from giliran.settings import Settings
from services.intake import antibot
from tests.conftest import RunningService, eventually, running
from tests.integration.test_intake_registration import at, body, client_from, nik

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
SESSION = "cikarang-utara-20261129"  # Sunday 29 November 2026, 09:00-11:00 WIB
ADMIN = {"Authorization": "Bearer admin-secret-0123456789abcdefghij"}
FRIDAY_10_WIB = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
SATURDAY_1759_WIB = datetime(2026, 11, 28, 10, 59, tzinfo=UTC)
SATURDAY_1800_WIB = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)
SUNDAY_0905_WIB = datetime(2026, 11, 29, 2, 5, tzinfo=UTC)
SUNDAY_1030_WIB = datetime(2026, 11, 29, 3, 30, tzinfo=UTC)


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "ticket_wait_seconds": 0.0,
            "admin_token": SecretStr("admin-secret-0123456789abcdefghij"),
            "demo": False,
        }
    )


async def kiosk_token(svc: RunningService) -> dict[str, str]:
    """A kiosk's sign-in at the site: only a kiosk takes walk-ins straight into the line."""
    _, token = await svc.runtime.accounts.issue_token("kios-1", Role.KIOSK, SITE)
    return {"Authorization": f"Bearer {token}"}


async def quota_row(svc: RunningService, service: str, session: str = SESSION) -> dict[str, Any]:
    r = await svc.http.get(f"/api/v1/admin/sites/{SITE}/sessions/{session}/quotas", headers=ADMIN)
    assert r.status_code == 200, r.text
    row: dict[str, Any] = next(q for q in r.json() if q["service"] == service)
    return row


# --- the registration window -------------------------------------------------------------------


async def test_online_registration_opens_the_day_before_at_18_and_closes_30_minutes_early(
    fast: Settings,
) -> None:
    async with running("intake", fast) as svc:
        at(svc, SATURDAY_1759_WIB)
        early = await svc.http.post("/api/v1/requests", json=body(1, session_id=SESSION))
        assert early.status_code == 409, early.text
        error = early.json()["error"]
        assert error["code"] == "registration_not_open"
        assert "Sabtu, 28 November 2026 pukul 18.00 WIB" in error["message_id"]
        assert "Saturday 28 November 2026, 18:00 WIB" in error["message_en"]

        at(svc, SATURDAY_1800_WIB)
        opened = await svc.http.post("/api/v1/requests", json=body(1, session_id=SESSION))
        assert opened.status_code == 202, opened.text

        at(svc, SUNDAY_1030_WIB)
        late = await svc.http.post("/api/v1/requests", json=body(2))
        assert late.status_code == 409, late.text
        assert late.json()["error"]["code"] == "registration_not_open"
        assert "10.30 WIB" in late.json()["error"]["message_id"]
        assert "kios" in late.json()["error"]["message_id"]
        # A walk-in at the kiosk is there in person: the online window does not apply.
        walk_in = await svc.http.post(
            "/kiosk/cikarang-utara",
            data={"service": "KTP-CETAK", "nik": nik(3)},
            headers=await kiosk_token(svc),
        )
        assert walk_in.status_code == 303, walk_in.text[:500]


async def test_the_session_list_says_when_registration_opens_places_left_and_fees(
    fast: Settings,
) -> None:
    async with running("intake", fast) as svc:
        at(svc, FRIDAY_10_WIB)
        listed = (await svc.http.get(f"/api/v1/sites/{SITE}/sessions?days=3")).json()
        sunday = next(s for s in listed if s["session_id"] == SESSION)
        assert sunday["bookable"] is False
        assert sunday["registration_opens_at"].startswith("2026-11-28T11:00:00")
        assert sunday["registration_closes_at"].startswith("2026-11-29T03:30:00")
        assert "dibuka Sabtu, 28 November 2026 pukul 18.00 WIB" in sunday["registration_id"]
        # Quotas sized from 4 counters x 120 minutes = 480 counter-minutes ÷ service minutes.
        assert sunday["places"]["KTP-CETAK"] == 96 and sunday["places"]["AKTA-LAHIR"] == 24

        page = await svc.http.get(f"/jadwal/{SITE}")
        assert page.status_code == 200
        text = page.text
        assert "Pendaftaran daring dibuka Sabtu, 28 November 2026 pukul 18.00 WIB." in text
        assert "Layanan ini GRATIS." in text and "Rp" not in text
        assert "Surat keterangan lahir" in text  # what to bring for a birth certificate
        assert "wajib NIK" in text

        at(svc, SATURDAY_1800_WIB + timedelta(hours=1))
        assert (
            await svc.http.post("/api/v1/requests", json=body(1, session_id=SESSION))
        ).status_code == 202
        listed = (await svc.http.get(f"/api/v1/sites/{SITE}/sessions?days=3")).json()
        sunday = next(s for s in listed if s["session_id"] == SESSION)
        assert sunday["bookable"] is True
        assert "sedang dibuka" in sunday["registration_id"]
        # One KTP printing (5 minutes) leaves 95 of its own and 475 counter-minutes: 23 births.
        assert sunday["places"]["KTP-CETAK"] == 95 and sunday["places"]["AKTA-LAHIR"] == 23
        page = (await svc.http.get(f"/jadwal/{SITE}?lang=en")).text
        assert "Online registration is open until" in page and "This service is FREE." in page


# --- NIK ----------------------------------------------------------------------------------------


async def test_a_nik_is_required_online_and_at_the_kiosk_for_adminduk(fast: Settings) -> None:
    async with running("intake", fast) as svc:
        at(svc, SUNDAY_0905_WIB)
        online = await svc.http.post(
            "/api/v1/requests", json={"site": SITE, "services": ["KTP-CETAK"], "name": "Tanpa NIK"}
        )
        assert online.status_code == 422 and online.json()["error"]["code"] == "nik_required"
        kiosk_sign_in = await kiosk_token(svc)
        kiosk = await svc.http.post(
            "/kiosk/cikarang-utara", data={"service": "AKTA-LAHIR"}, headers=kiosk_sign_in
        )
        assert kiosk.status_code == 422
        assert "NIK wajib diisi untuk layanan AKTA-LAHIR" in kiosk.text
        assert "tombol angka" in kiosk.text and 'id="keypad"' in kiosk.text
        # A consultation is not a document: no NIK needed.
        ask = await svc.http.post(
            "/kiosk/cikarang-utara", data={"service": "KONSULTASI"}, headers=kiosk_sign_in
        )
        assert ask.status_code == 303
        store = svc.app.state.intake.store
        assert await store.requests.count_documents({"services": "AKTA-LAHIR"}) == 0


# --- quotas: sized from counter-minutes, never oversold, never taken from another service --------


async def test_counter_minutes_bound_every_service_together(fast: Settings) -> None:
    async with running("intake", fast) as svc:
        at(svc, SUNDAY_0905_WIB)
        row = await quota_row(svc, "AKTA-LAHIR")
        assert (row["default"], row["sized"], row["minutes"]) == (24, "480 ÷ 20 menit", 20)
        listed = (await svc.http.get(f"/api/v1/sites/{SITE}/services")).json()
        birth = next(s for s in listed if s["code"] == "AKTA-LAHIR")
        assert (birth["minutes"], birth["quota"], birth["requires_nik"]) == (20, 24, True)
        assert (
            birth["admission"]["opens_at"] == "18:00:00" and birth["admission"]["checkin_required"]
        )
        answers = [
            await svc.http.post("/api/v1/requests", json=body(n, services=["AKTA-LAHIR"]))
            for n in range(1, 26)
        ]
        codes = [a.status_code for a in answers]
        assert codes == [202] * 24 + [409], codes
        assert answers[-1].json()["error"]["code"] == "quota_exhausted"
        # 24 births x 20 minutes spent the session's 480 counter-minutes: no KTP printing fits,
        # though its own quota (96) is untouched.
        printing = await svc.http.post("/api/v1/requests", json=body(100))
        assert printing.status_code == 409, printing.text
        assert (await quota_row(svc, "KTP-CETAK"))["places_left"] == 0
        svc.http.cookies.set("giliran_admin", "admin-secret-0123456789abcdefghij")
        page = await svc.http.get("/admin?site=cikarang-utara")
        assert "480 ÷ 5 menit" in page.text and "Kapasitas sesi: 480 menit-loket" in page.text


async def test_a_full_service_never_takes_another_services_place(fast: Settings) -> None:
    """nx-27017 applied a claim whose filter had `_id` and `$or` to another quota document:
    a full service's registration was accepted by taking a place from another service."""
    async with running("intake", fast) as svc:
        at(svc, SUNDAY_0905_WIB)
        r = await svc.http.put(
            f"/api/v1/admin/sites/{SITE}/sessions/{SESSION}/quotas",
            json={"quotas": {"KTP-CETAK": 1, "KIA": 5}},
            headers=ADMIN,
        )
        assert r.status_code == 200, r.text
        assert (await svc.http.post("/api/v1/requests", json=body(1))).status_code == 202
        second = await svc.http.post("/api/v1/requests", json=body(2))
        assert second.status_code == 409, second.text
        assert (await quota_row(svc, "KTP-CETAK"))["used"] == 1
        kia = await quota_row(svc, "KIA")
        assert (kia["used"], kia["remaining"]) == (0, 5)


# --- check-in on arrival, place kept, lapse --------------------------------------------------


async def test_online_registrations_are_called_only_after_check_in_and_lapse_after_grace(
    fast: Settings,
) -> None:
    settings = fast.model_copy(update={"lapse_interval_seconds": 0.2})
    async with (
        running("intake", settings) as intake,
        running("queue", settings) as queue,
    ):
        moment = {"now": SUNDAY_0905_WIB}
        intake.app.state.intake.clock = lambda: moment["now"]
        queue.app.state.queue.clock = lambda: moment["now"]
        store = intake.app.state.intake.store

        async def issued(request_id: str) -> str:
            async def ticket() -> str | None:
                doc = await store.get(request_id)
                return next(iter((doc or {}).get("tickets") or {}), None)

            found: str = await eventually(ticket)
            return found

        kiosk_sign_in = await kiosk_token(intake)

        async def kiosk(n: int) -> str:
            r = await intake.http.post(
                "/kiosk/cikarang-utara",
                data={"service": "KTP-CETAK", "nik": nik(n)},
                headers=kiosk_sign_in,
            )
            assert r.status_code == 303, r.text[:300]
            doc = await store.by_token(r.headers["location"].split("/")[-1].split("?")[0])
            return await issued(doc["_id"])

        # 09:05 two citizens register online from home; 09:06 and 09:07 two walk in.
        online = await intake.http.post("/api/v1/requests", json=body(1))
        absent = await intake.http.post("/api/v1/requests", json=body(2))
        assert online.status_code == 202 and absent.status_code == 202
        assert online.json()["arrived"] is False
        assert "dipanggil hanya setelah check-in" in online.json()["message_id"]
        assert "sampai pukul 09.35 WIB" in online.json()["message_id"]  # 09:05 + 30 minutes
        online_ticket = await issued(online.json()["request_id"])
        absent_ticket = await issued(absent.json()["request_id"])
        moment["now"] = SUNDAY_0905_WIB + timedelta(minutes=1)
        first_walk_in = await kiosk(3)
        moment["now"] = SUNDAY_0905_WIB + timedelta(minutes=2)
        second_walk_in = await kiosk(4)

        call = "/api/v1/sites/cikarang-utara/counters/1/call-next"

        async def call_and_complete() -> str:
            r = await queue.http.post(call)
            assert r.status_code == 200, r.text
            ticket: str = r.json()["ticket"]["ticket_id"]
            await queue.http.post(f"/api/v1/tickets/{ticket}/complete")
            return ticket

        # The online registrations registered first but are not here: the walk-in is called.
        assert await call_and_complete() == first_walk_in

        # 09:20 the first online citizen checks in: it joins at the place it kept (09:05),
        # ahead of the walk-in who came at 09:07.
        moment["now"] = SUNDAY_0905_WIB + timedelta(minutes=15)
        checked = await intake.http.post(
            f"/api/v1/sites/{SITE}/check-in", json={"code": online.json()["checkin_code"]}
        )
        assert checked.status_code == 200 and checked.json()["request"]["arrived"] is True

        async def in_line() -> bool:
            doc = await queue.app.state.queue.store.get(online_ticket)
            return bool(doc and doc["arrived"])

        await eventually(in_line)
        assert await call_and_complete() == online_ticket

        # 09:36: the second online citizen never came; the registration lapses, its ticket
        # leaves the line, and its place goes back to the quota.
        used_before = (await quota_row(intake, "KTP-CETAK"))["used"]
        moment["now"] = SUNDAY_0905_WIB + timedelta(minutes=31)

        async def lapsed() -> dict[str, Any] | None:
            doc = await store.get(absent.json()["request_id"])
            return doc if doc and doc.get("cancel_reason") == "not_checked_in" else None

        await eventually(lapsed)

        async def ticket_cancelled() -> bool:
            doc = await queue.app.state.queue.store.get(absent_ticket)
            return bool(doc and doc["status"] == "cancelled")

        await eventually(ticket_cancelled)
        assert (await quota_row(intake, "KTP-CETAK"))["used"] == used_before - 1
        assert await call_and_complete() == second_walk_in
        token = absent.json()["status_page_url"].rsplit("/", 1)[1]
        status = await intake.http.get(f"/s/{token}")
        assert "gugur karena belum check-in" in status.text
        late = await intake.http.post(
            f"/api/v1/sites/{SITE}/check-in", json={"code": absent.json()["checkin_code"]}
        )
        # A lapsed code opens nothing (the same answer as an unknown one, ADR 0101).
        assert late.status_code == 404 and late.json()["error"]["code"] == "check_in_code_unknown"
        # The QR (the status link) tells its holder why, as the status page does: lapsed, take a
        # number at the kiosk (it said "this booking was cancelled", as if the office had).
        scanned = await intake.http.post(
            f"/api/v1/sites/{SITE}/check-in", json={"code": absent.json()["status_page_url"]}
        )
        assert scanned.status_code == 409, scanned.text
        refusal = scanned.json()["error"]
        assert "gugur karena belum check-in" in refusal["message_id"], refusal
        assert "kios" in refusal["message_id"] and "lapsed" in refusal["message_en"], refusal


# --- anti-bot: a flood from one address ------------------------------------------------------


async def test_a_flood_from_one_address_meets_a_challenge_then_a_cap(fast: Settings) -> None:
    async with running("intake", fast) as svc:
        at(svc, SUNDAY_0905_WIB)
        async with (
            client_from(svc, "203.0.113.7") as bot,
            client_from(svc, "198.51.100.9") as other,
        ):
            for n in range(1, 4):  # MSC: a challenge after 3 registrations from one address
                assert (await bot.post("/api/v1/requests", json=body(n))).status_code == 202
            asked = await bot.post("/api/v1/requests", json=body(4))
            assert asked.status_code == 428, asked.text
            assert asked.json()["error"]["code"] == "challenge_required"
            assert "/api/v1/sites/cikarang-utara/challenge" in asked.json()["error"]["message_en"]
            challenge = (await bot.get(f"/api/v1/sites/{SITE}/challenge")).json()
            assert challenge["bits"] == 16
            answer = antibot.solve(challenge["challenge"])
            wrong = await bot.post(
                "/api/v1/requests",
                json=body(
                    4, proof={"challenge": challenge["challenge"], "nonce": str(int(answer) + 1)}
                ),
            )
            assert wrong.status_code == 428
            proof = {"challenge": challenge["challenge"], "nonce": answer}
            assert (
                await bot.post("/api/v1/requests", json=body(4, proof=proof))
            ).status_code == 202
            reused = await bot.post("/api/v1/requests", json=body(5, proof=proof))
            assert (
                reused.status_code == 428
                and "sudah dipakai" in reused.json()["error"]["message_id"]
            )
            forged = proof | {"challenge": challenge["challenge"].replace(".16.", ".8.", 1)}
            assert (
                await bot.post("/api/v1/requests", json=body(5, proof=forged))
            ).status_code == 428
            # Each further registration answers its own challenge, up to 10 from one address.
            for n in range(5, 11):
                fresh = (await bot.get(f"/api/v1/sites/{SITE}/challenge")).json()["challenge"]
                p = {"challenge": fresh, "nonce": antibot.solve(fresh)}
                assert (
                    await bot.post("/api/v1/requests", json=body(n, proof=p))
                ).status_code == 202
            fresh = (await bot.get(f"/api/v1/sites/{SITE}/challenge")).json()["challenge"]
            capped = await bot.post(
                "/api/v1/requests",
                json=body(11, proof={"challenge": fresh, "nonce": antibot.solve(fresh)}),
            )
            assert capped.status_code == 429, capped.text
            assert capped.json()["error"]["code"] == "address_cap_reached"
            assert "kios" in capped.json()["error"]["message_id"]
            # Another address is not held back by the first.
            assert (await other.post("/api/v1/requests", json=body(20))).status_code == 202
        assert (await quota_row(svc, "KTP-CETAK"))["used"] == 11


async def test_attempts_that_take_no_place_do_not_count_towards_an_address_cap(
    fast: Settings,
) -> None:
    """A village office registers its residents from one address: a resident already registered
    (409) takes no place, so it neither brings the challenge nearer nor fills the cap. It did
    both: each refused attempt stayed counted, and ten of them shut the address out for the
    session without one place taken."""
    async with running("intake", fast) as svc:
        at(svc, SUNDAY_0905_WIB)
        async with (
            client_from(svc, "203.0.113.80") as office,
            client_from(svc, "198.51.100.80") as home,
        ):
            assert (await home.post("/api/v1/requests", json=body(1))).status_code == 202
            for _ in range(10):  # MSC: challenge after 3, cap at 10 from one address
                again = await office.post("/api/v1/requests", json=body(1))
                assert again.status_code == 409, again.text
                assert again.json()["error"]["code"] == "already_registered"
            for n in range(2, 5):
                r = await office.post("/api/v1/requests", json=body(n))
                assert r.status_code == 202, (n, r.text)
            # The fourth place from the address meets the challenge, as for any address.
            asked = await office.post("/api/v1/requests", json=body(5))
            assert asked.status_code == 428, asked.text
        assert (await quota_row(svc, "KTP-CETAK"))["used"] == 4


async def test_one_ipv6_line_counts_as_one_address(fast: Settings) -> None:
    async with running("intake", fast) as svc:
        at(svc, SUNDAY_0905_WIB)
        for n in range(1, 5):
            # Four addresses of one /64: a subscriber's line, not four citizens.
            async with client_from(svc, f"2001:db8:1:2::{n}") as line:
                r = await line.post("/api/v1/requests", json=body(n))
            assert r.status_code == (202 if n <= 3 else 428), (n, r.text)


async def test_a_forwarded_loopback_address_meets_the_challenge_and_cap_like_any_other(
    fast: Settings,
) -> None:
    """Behind an ingress trusted with GILIRAN_FORWARDED_ALLOW_IPS="*" (deploy/k8s), a client
    claiming `X-Forwarded-For: 127.0.0.1` is counted under that address (ADR 0114), and so meets
    the per-address challenge and cap. It skipped both: registration took the forwarded value
    for the box's own exempt address. uvicorn's own proxy-headers middleware does the rewriting,
    as in production."""
    async with running("intake", fast) as svc:
        at(svc, SUNDAY_0905_WIB)
        behind_ingress = ProxyHeadersMiddleware(svc.app, trusted_hosts="*")
        transport = httpx.ASGITransport(app=behind_ingress, client=("10.1.2.3", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as ingress:
            claims = {"X-Forwarded-For": "127.0.0.1"}
            codes = [
                (await ingress.post("/api/v1/requests", json=body(n), headers=claims)).status_code
                for n in range(1, 6)
            ]
            assert codes == [202, 202, 202, 428, 428], codes
            # The box itself (no forwarding header) stays exempt.
            own = httpx.ASGITransport(app=svc.app, client=("127.0.0.1", 40000))
            async with httpx.AsyncClient(transport=own, base_url="http://intake") as box:
                for n in range(10, 15):
                    r = await box.post("/api/v1/requests", json=body(n))
                    assert r.status_code == 202, r.text


async def test_a_concurrent_flood_from_one_address_takes_at_most_its_cap(fast: Settings) -> None:
    async with running("intake", fast) as svc:
        at(svc, SUNDAY_0905_WIB)
        async with client_from(svc, "203.0.113.50") as bot:
            # 25 at once without answers: only the 3 before the challenge get through.
            bare = await asyncio.gather(
                *(bot.post("/api/v1/requests", json=body(n)) for n in range(1, 26))
            )
            codes = sorted(a.status_code for a in bare)
            assert codes == [202] * 3 + [428] * 22, codes
            # A minute later (past the 30-a-minute limit's window), 25 at once, each with its
            # own answer: the cap (10 a session) holds.
            at(svc, SUNDAY_0905_WIB + timedelta(minutes=1))
            challenges = [
                (await bot.get(f"/api/v1/sites/{SITE}/challenge")).json()["challenge"]
                for _ in range(25)
            ]
            proofs = [{"challenge": c, "nonce": antibot.solve(c)} for c in challenges]
            answered = await asyncio.gather(
                *(
                    bot.post("/api/v1/requests", json=body(100 + n, proof=p))
                    for n, p in enumerate(proofs)
                )
            )
        codes = sorted(a.status_code for a in answered)
        assert codes == [202] * 7 + [429] * 18, codes
        assert (await quota_row(svc, "KTP-CETAK"))["used"] == 10


# --- fees told truthfully -------------------------------------------------------------------


FAIR_DAY = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)  # Saturday 5 December 2026, 09:00 WIB


async def test_fees_are_told_truthfully_on_every_page_and_message(fast: Settings) -> None:
    fair = "botram-setu"
    async with running("intake", fast) as svc:
        at(svc, FAIR_DAY)
        added = await svc.http.post(
            f"/api/v1/admin/sites/{fair}/sessions", json={"date": "2026-12-05"}, headers=ADMIN
        )
        assert added.status_code in (200, 201), added.text
        cases = {
            "SKCK": (
                "Biaya: Rp 30.000, dibayar di loket pembayaran Polres di lokasi.",
                "Fee: Rp 30.000",
            ),
            "SIM-A-PERPANJANG": ("Biaya: Rp 80.000", "Fee: Rp 80.000"),
            "SIM-C-PERPANJANG": ("Biaya: Rp 75.000", "Fee: Rp 75.000"),
            "BPJS": ("Layanan ini GRATIS.", "This service is FREE."),
        }
        for n, (code, (said_id, said_en)) in enumerate(cases.items(), 1):
            r = await svc.http.post(
                "/api/v1/requests",
                json={"site": fair, "services": [code], "name": f"Warga {n}", "consent": True},
            )
            assert r.status_code == 202, r.text
            view = r.json()
            assert said_id in view["message_id"] and said_en in view["message_en"], code
            paid = code != "BPJS"
            assert ("GRATIS" in view["message_id"]) is not paid, view["message_id"]
            if code.startswith("SIM"):
                assert "tes psikologi, dibayar terpisah" in view["message_id"]
            token = view["status_page_url"].rsplit("/", 1)[1]
            staff = await svc.http.get(f"/api/v1/requests/{view['request_id']}")
            assert said_id in staff.json()["message_id"]
            status = await svc.http.get(f"/api/v1/status/{token}")
            assert said_id in status.json()["cost"]["id"] and status.json()["free"] is not paid
            for path in (f"/s/{token}", f"/kiosk/ticket/{token}"):
                page_id = (await svc.http.get(path)).text
                page_en = (await svc.http.get(f"{path}?lang=en")).text
                assert said_id in page_id and said_en in page_en, path
                assert ("GRATIS" in page_id) is not paid, path
            checked = await svc.http.post(
                f"/api/v1/sites/{fair}/check-in", json={"code": view["checkin_code"]}
            )
            assert said_id in checked.json()["request"]["message_id"]
        both = await svc.http.post(
            "/api/v1/requests",
            json={"site": fair, "services": ["SKCK", "BPJS"], "name": "Warga 9"},
        )
        said = both.json()["message_id"]
        assert "Surat Keterangan Catatan Kepolisian (SKCK): Biaya: Rp 30.000" in said
        assert "Layanan BPJS Kesehatan dan Ketenagakerjaan: Layanan ini GRATIS." in said
        _, fair_kiosk = await svc.runtime.accounts.issue_token("kios-2", Role.KIOSK, fair)
        for path in (f"/kiosk/{fair}", f"/daftar?site={fair}", f"/jadwal/{fair}"):
            who = {"Authorization": f"Bearer {fair_kiosk}"} if path.startswith("/kiosk") else {}
            page = (await svc.http.get(path, headers=who)).text
            for said_id, _ in cases.values():
                assert said_id in page, (path, said_id)
            assert "Layanan kependudukan GRATIS" not in page
        services = (await svc.http.get(f"/api/v1/sites/{fair}/services")).json()
        skck = next(s for s in services if s["code"] == "SKCK")
        assert (skck["free"], skck["fee_idr"]) == (False, 30000)
        # An adminduk site says GRATIS and never a price (UU 24/2013 Pasal 79A).
        msc_kiosk = await kiosk_token(svc)
        for path in (f"/kiosk/{SITE}", f"/daftar?site={SITE}", f"/jadwal/{SITE}"):
            who = msc_kiosk if path.startswith("/kiosk") else {}
            page = (await svc.http.get(path, headers=who)).text
            assert "Rp" not in re.sub(r"<[^>]+>", "", page), path
