"""Attacks on registration and check-in (issue 14, findings 1, 5 and 6) against a real
nats-server, the embedded store and intake's (and notify's) real HTTP apps: a known NIK opens
nothing of another citizen's request, check-in codes cannot be guessed, and only a signed-in
kiosk registers as the kiosk."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from giliran.auth import Role
from giliran.settings import Settings
from giliran.store import count
from tests.conftest import RunningService, eventually, running
from tests.fakes.gateway import FakeGateway
from tests.integration.test_intake_registration import body, bus_events, nik
from tests.integration.test_notify_channels import sms_channel

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
OTHER_SITE = "botram-babelan"
PUBLIC = "https://giliran.test"
SATURDAY_19_WIB = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SUNDAY_0830_WIB = datetime(2026, 11, 29, 1, 30, tzinfo=UTC)
SUNDAY_1130_WIB = datetime(2026, 11, 29, 4, 30, tzinfo=UTC)
SUNDAY = "cikarang-utara-20261129"
VICTIM_PHONE = "0812 3456 7890"
ATTACKER_PHONE = "0813 9999 0001"


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """No queue runs here: do not wait for tickets; no address is exempt from the limits."""
    return settings.model_copy(
        update={
            "ticket_wait_seconds": 0.0,
            "admin_token": SecretStr("admin-secret-0123456789abcdefghij"),
            "public_url": PUBLIC,
            "rate_limit_exempt": [],
        }
    )


@asynccontextmanager
async def client_from(
    svc: RunningService, address: str, **headers: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A stranger's client from `address`, keeping cookies like a browser, following nothing."""
    transport = httpx.ASGITransport(app=svc.app, client=(address, 40000))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://intake", headers=headers
    ) as client:
        yield client


def at(svc: RunningService, moment: datetime) -> None:
    svc.app.state.intake.clock = lambda: moment


async def token_for(svc: RunningService, role: Role, site: str) -> dict[str, str]:
    _, token = await svc.runtime.accounts.issue_token(f"{role.value}-{site}", role, site)
    return {"Authorization": f"Bearer {token}"}


# --- finding 1: a NIK opens another citizen's request ---------------------------------------


async def test_a_known_nik_gets_a_refusal_that_reveals_nothing_of_the_first_request(
    fast: Settings,
) -> None:
    async with running("intake", fast) as svc, client_from(svc, "203.0.113.50") as stranger:
        victim = await svc.anonymous.post(
            "/api/v1/requests", json=body(1, phone=VICTIM_PHONE, consent=True)
        )
        assert victim.status_code in (201, 202), victim.text
        theirs = victim.json()
        token = theirs["status_page_url"].rsplit("/s/", 1)[1]
        secrets_of_victim = [theirs["request_id"], token, theirs["phone_masked"], "Warga 1"]

        # The stranger knows the NIK (printed on the KK, photocopied at every office).
        over_api = await stranger.post("/api/v1/requests", json=body(1, name="Orang lain"))
        assert over_api.status_code == 409, over_api.text
        error = over_api.json()["error"]
        assert error["code"] == "already_registered"
        assert error["message_id"].startswith("NIK ini sudah terdaftar")
        assert "kirim-ulang" in error["message_en"]
        for secret in secrets_of_victim:
            assert secret not in over_api.text
        assert "location" not in over_api.headers
        # Nor through the registration page (it used to redirect to the victim's /s/<token>).
        form = {"site": SITE, "services": "KTP-CETAK", "name": "Orang lain", "nik": nik(1)}
        page = await stranger.post("/daftar", data=form)
        assert page.status_code == 409 and "location" not in page.headers
        assert "NIK ini sudah terdaftar" in page.text
        for secret in secrets_of_victim:
            assert secret not in page.text
        # Nor at the kiosk (it used to print the victim's ticket, QR code and all).
        kiosk = await token_for(svc, Role.KIOSK, SITE)
        async with client_from(svc, "192.0.2.40", **kiosk) as device:
            walk_in = {"service": "KTP-CETAK", "nik": nik(1)}
            printed = await device.post(f"/kiosk/{SITE}", data=walk_in)
        assert printed.status_code == 409 and "location" not in printed.headers
        assert "NIK ini sudah terdaftar" in printed.text
        for secret in secrets_of_victim:
            assert secret not in printed.text
        # Every holder's refusal is the same answer: it says "refused", nothing about whose.
        other = await svc.anonymous.post(
            "/api/v1/requests", json=body(2, phone="0812 1111 2222", consent=True)
        )
        assert other.status_code in (201, 202)
        second = await stranger.post("/api/v1/requests", json=body(2, name="Orang lain"))
        assert second.status_code == 409 and second.json() == over_api.json()
        # Ten at once with one fresh NIK: one request, nine refusals, nothing shared.
        burst = await asyncio.gather(
            *(svc.anonymous.post("/api/v1/requests", json=body(3)) for _ in range(10))
        )
        assert sorted(r.status_code for r in burst) == [202] + [409] * 9
        store = svc.app.state.intake.store
        assert await count(store.requests, {}) == 3


@asynccontextmanager
async def notify_with_sms(
    settings: Settings, tmp_path: Path, gw: FakeGateway
) -> AsyncIterator[RunningService]:
    path = tmp_path / "notify.yaml"
    path.write_text(yaml.safe_dump({"channels": [sms_channel(gw)]}))
    async with running("notify", settings.model_copy(update={"notify_config": path})) as svc:
        yield svc


async def test_the_status_link_goes_again_only_to_the_contact_registered_with_it(
    fast: Settings, tmp_path: Path
) -> None:
    settings = fast.model_copy(update={"rate_resend_nik_per_hour": 2})
    async with (
        FakeGateway() as gw,
        running("intake", settings) as svc,
        notify_with_sms(settings, tmp_path, gw) as notify,
        bus_events(settings, f"giliran.{SITE}.request.link_requested") as asked,
        client_from(svc, "203.0.113.51") as stranger,
    ):
        victim = await svc.anonymous.post(
            "/api/v1/requests", json=body(1, phone=VICTIM_PHONE, consent=True)
        )
        assert victim.status_code in (201, 202), victim.text
        token = victim.json()["status_page_url"].rsplit("/s/", 1)[1]

        async def contact_known() -> bool:
            store = notify.app.state.notify_store
            return await store.contact(victim.json()["request_id"]) is not None

        await eventually(contact_known, within=15)

        def ask(n: int, phone: str) -> dict[str, Any]:
            return {"site": SITE, "nik": nik(n), "phone": phone}

        # A stranger with the victim's NIK and their own phone; a NIK nobody registered; the
        # victim with their own: one and the same answer for all three.
        answers = [
            await stranger.post("/api/v1/requests/resend-link", json=ask(1, ATTACKER_PHONE)),
            await stranger.post("/api/v1/requests/resend-link", json=ask(9, ATTACKER_PHONE)),
            await svc.anonymous.post("/api/v1/requests/resend-link", json=ask(1, VICTIM_PHONE)),
        ]
        assert [a.status_code for a in answers] == [202, 202, 202], answers[0].text
        assert answers[0].json() == answers[1].json() == answers[2].json()
        assert answers[0].json()["message_id"].startswith("Jika NIK")
        for answer in answers:
            assert token not in answer.text and victim.json()["request_id"] not in answer.text

        # Only the registered phone receives the link: the stranger's phone gets nothing.
        await gw.wait_for(1, within=20)
        await asyncio.sleep(1.0)  # a second message, if any, would have been sent by now
        sent = gw.messages("/sms")
        assert [m.form["to"] for m in sent] == ["081234567890"], [m.form for m in sent]
        assert f"{PUBLIC}/s/{token}" in sent[0].form["message"]
        # The event names the request, never a contact (notify uses the one it holds).
        await eventually(lambda: _nonempty(asked))
        assert asked[0]["data"]["request_id"] == victim.json()["request_id"]
        assert "081" not in str(asked) and "+62" not in str(asked) and token not in str(asked)

        # A stranger who knows the NIK spends its allowance with made-up phones (from any
        # address)...
        async with client_from(svc, "198.51.100.77") as elsewhere:
            spent = [
                await elsewhere.post("/api/v1/requests/resend-link", json=ask(1, phone))
                for phone in (ATTACKER_PHONE, ATTACKER_PHONE, "0813 9999 0002", "0813 9999 0003")
            ]
        # ...and the citizen still gets their link (before, the NIK's 3 asks an hour were the
        # stranger's to spend: the citizen was refused 429 for as long as the stranger kept on).
        again = await svc.anonymous.post("/api/v1/requests/resend-link", json=ask(1, VICTIM_PHONE))
        assert again.status_code == 202, again.text
        held = spent[1]  # its second ask with its own phone: that pair's allowance is spent
        assert held.status_code == 429, held.text
        assert "NIK dan kontak ini" in held.json()["error"]["message_id"]
        assert int(held.headers["retry-after"]) >= 1
        await gw.wait_for(2, within=20)
        assert [m.form["to"] for m in gw.messages("/sms")] == ["081234567890"] * 2
        # Asking over and over with the registered phone is held back: it gets so many links.
        spam = await svc.anonymous.post("/api/v1/requests/resend-link", json=ask(1, VICTIM_PHONE))
        assert spam.status_code == 429, spam.text
        # The page says the same as the API, in the page's language.
        page = await stranger.post(
            "/kirim-ulang", data={"site": SITE, "nik": nik(8), "contact": ATTACKER_PHONE}
        )
        assert page.status_code == 202 and "Jika NIK dan nomor HP/e-mail itu cocok" in page.text


async def _nonempty(seen: list[Any]) -> bool:
    return len(seen) > 0


# --- finding 5: check-in codes can be guessed ----------------------------------------------


async def test_check_in_codes_cannot_be_guessed(fast: Settings) -> None:
    limited = fast.model_copy(
        update={
            "demo": False,
            "rate_checkin_ip_per_minute": 5,
            "rate_checkin_failures_per_site_per_hour": 8,
        }
    )
    async with running("intake", limited) as svc:
        # Saturday 19:00 WIB: MSC's online registration for Sunday opens at 18:00 (catalogue).
        at(svc, SATURDAY_19_WIB)
        booked = []
        for n in (1, 2, 3):
            answer = await svc.anonymous.post("/api/v1/requests", json=body(n, session_id=SUNDAY))
            assert answer.status_code == 202, answer.text
            booked.append(answer.json())
        code = booked[0]["checkin_code"]
        url = f"/api/v1/sites/{SITE}/check-in"
        # Nobody checks in from home, with their own code or a guessed one: check-in is the
        # office's (kiosk or staff) — a stranger gets 401 and the booking stays not arrived.
        async with client_from(svc, "203.0.113.59") as stranger:
            from_home = await stranger.post(url, json={"code": booked[0]["status_page_url"]})
        assert from_home.status_code == 401, from_home.text
        # The guessing below is by a site credential used from elsewhere (a leaked officer
        # token): codes are limited per address and wrong codes per site all the same.
        officer = await token_for(svc, Role.OFFICER, SITE)

        # The evening before, a real code and a made-up one get the very same answer.
        async with client_from(svc, "203.0.113.60", **officer) as guesser:
            real = await guesser.post(url, json={"code": code})
            made_up = await guesser.post(
                url, json={"code": "XXXXXX" if code != "XXXXXX" else "YYYYYY"}
            )
        assert real.status_code == made_up.status_code == 404, real.text
        assert real.json() == made_up.json()
        assert real.json()["error"]["code"] == "check_in_code_unknown"

        # One address: a few attempts a minute, then 429 (even for a right code).
        at(svc, SUNDAY_0830_WIB)
        async with client_from(svc, "203.0.113.61", **officer) as guesser:
            tries = [await guesser.post(url, json={"code": f"AAAAA{c}"}) for c in "CDEFH"]
            assert {t.status_code for t in tries} == {404}
            held = await guesser.post(url, json={"code": code})
        assert held.status_code == 429, held.text
        assert held.json()["error"]["message_en"].startswith("Too many check-in attempts")
        # The site's own kiosk checks everyone in from one address: not held back by it.
        kiosk = await token_for(svc, Role.KIOSK, SITE)
        async with client_from(svc, "203.0.113.61", **kiosk) as device:
            at_kiosk = await device.post(url, json={"code": booked[2]["checkin_code"]})
        assert at_kiosk.status_code == 200 and at_kiosk.json()["checked_in"] is True

        # Many addresses: wrong codes count against the whole site. Once spent, a code is not
        # even looked up (the right one too), while the unguessable QR still checks in.
        for i, c in enumerate("CDE"):  # 5 failures above + 3 here = the site's 8
            async with client_from(svc, f"198.51.100.{i + 1}", **officer) as bot:
                assert (await bot.post(url, json={"code": f"CCCCC{c}"})).status_code == 404
        async with client_from(svc, "198.51.100.50", **officer) as bot:
            spent = await bot.post(url, json={"code": code})
        assert spent.status_code == 429 and "lokasi ini" in spent.json()["error"]["message_id"]
        async with client_from(svc, "203.0.113.61", **kiosk) as device:  # the kiosk as well
            assert (await device.post(url, json={"code": code})).status_code == 429
        async with client_from(svc, "192.0.2.10", **officer) as desk:
            qr = await desk.post(url, json={"code": booked[1]["status_page_url"]})
        assert qr.status_code == 200 and qr.json()["checked_in"] is True
        doc = await svc.app.state.intake.store.get(booked[0]["request_id"])
        assert doc is not None and doc["arrived"] is False  # the guessed code opened nothing

        # After its session a code is worth nothing (it no longer lives 30 days).
        at(svc, SUNDAY_1130_WIB)
        async with client_from(svc, "192.0.2.11", **officer) as late:
            after = await late.post(url, json={"code": code})
        assert after.status_code == 404 and after.json() == made_up.json()


# --- finding 6: anyone can claim to be the kiosk ------------------------------------------


async def test_only_a_signed_in_kiosk_of_the_site_registers_as_the_kiosk(fast: Settings) -> None:
    async with running("intake", fast) as svc:
        walk_in = {
            "site": SITE,
            "services": ["KTP-CETAK"],
            "name": "Pengunjung",
            "channel": "kiosk",
        }
        # KTP-CETAK needs a NIK online; the kiosk channel skips that and joins the line at once.
        anonymous = await svc.anonymous.post("/api/v1/requests", json=walk_in)
        assert anonymous.status_code == 403, anonymous.text
        assert anonymous.json()["error"]["code"] == "channel_forbidden"
        assert anonymous.json()["error"]["message_id"].startswith("Kolom 'channel'")
        for role, where in (
            (Role.OFFICER, SITE),
            (Role.DISPLAY, SITE),
            (Role.KIOSK, OTHER_SITE),
        ):
            async with client_from(svc, "203.0.113.70", **await token_for(svc, role, where)) as c:
                refused = await c.post("/api/v1/requests", json=walk_in)
            assert refused.status_code == 403, (role, where, refused.text)
        counter = await svc.anonymous.post(
            "/api/v1/requests", json={**walk_in, "channel": "counter"}
        )
        assert counter.status_code == 403
        store = svc.app.state.intake.store
        assert await count(store.requests, {}) == 0

        kiosk = await token_for(svc, Role.KIOSK, SITE)
        async with client_from(svc, "192.0.2.20", **kiosk) as device:
            taken = await device.post("/api/v1/requests", json=walk_in)
        assert taken.status_code in (201, 202), taken.text
        assert taken.json()["channel"] == "kiosk"
        officer = await token_for(svc, Role.OFFICER, SITE)
        async with client_from(svc, "192.0.2.21", **officer) as desk:
            at_desk = await desk.post("/api/v1/requests", json={**walk_in, "channel": "counter"})
        assert at_desk.status_code in (201, 202), at_desk.text

        # The kiosk pages: a stranger is sent to sign in and gets no ticket.
        async with client_from(svc, "203.0.113.71") as stranger:
            page = await stranger.get(f"/kiosk/{SITE}")
            assert page.status_code == 303 and page.headers["location"].startswith("/login")
            posted = await stranger.post(f"/kiosk/{SITE}", data={"service": "KTP-CETAK"})
            assert posted.status_code == 303 and "/kiosk/ticket/" not in posted.headers["location"]
        assert await count(store.requests, {}) == 2


async def test_a_kiosk_signed_in_with_its_account_takes_a_number_with_csrf(fast: Settings) -> None:
    async with running("intake", fast) as svc, client_from(svc, "192.0.2.30") as kiosk:
        await svc.runtime.accounts.add_user("kios-1", "rahasia-kios-1", Role.KIOSK, SITE)
        form = await kiosk.get("/login")
        pre = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert pre is not None
        signed = await kiosk.post(
            "/login", data={"username": "kios-1", "password": "rahasia-kios-1", "csrf": pre[1]}
        )
        assert signed.status_code == 303
        page = await kiosk.get(f"/kiosk/{SITE}")
        assert page.status_code == 200 and 'data-service="KTP-CETAK"' in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None and csrf[1]
        # The session cookie is ambient: a form from another page (no CSRF field) is refused.
        forged = await kiosk.post(f"/kiosk/{SITE}", data={"service": "KTP-CETAK"})
        assert forged.status_code == 403
        took = await kiosk.post(f"/kiosk/{SITE}", data={"service": "KTP-CETAK", "csrf": csrf[1]})
        assert took.status_code == 303 and "/kiosk/ticket/" in took.headers["location"]
        # Signed in for one site, not another.
        other = await kiosk.get(f"/kiosk/{OTHER_SITE}")
        assert other.status_code == 403


async def test_one_request_names_at_most_the_services_a_visit_needs(fast: Settings) -> None:
    async with running("intake", fast) as svc:
        four = ["KTP-CETAK", "KK-UBAH", "AKTA-LAHIR", "KIA"]
        refused = await svc.anonymous.post("/api/v1/requests", json=body(1, services=four))
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "too_many_services" and error["field"] == "services"
        assert "paling banyak 3 layanan" in error["message_id"]
        assert "at most 3 services" in error["message_en"]
        assert await count(svc.app.state.intake.store.requests, {}) == 0
        three = await svc.anonymous.post("/api/v1/requests", json=body(1, services=four[:3]))
        assert three.status_code in (201, 202), three.text
