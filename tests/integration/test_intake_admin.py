"""The admin side against a real nats-server and the embedded store: sessions added and
cancelled (registrants get request.cancelled), holiday and closed dates, the token, and the
purge of personal data after a session."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from giliran.settings import Settings
from tests.conftest import eventually, running
from tests.integration.test_intake_registration import (
    ADMIN,
    FRIDAY_10_WIB,
    SATURDAY_19_WIB,
    SITE,
    at,
    body,
    bus_events,
    nik,
)

pytestmark = pytest.mark.integration
MONDAY_10_WIB = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


@pytest.fixture
def admin_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "ticket_wait_seconds": 0.0,
            "admin_token": SecretStr("admin-secret-0123456789abcdefghij"),
            "demo": False,
        }
    )


async def test_admin_needs_an_admin_and_the_old_token_still_works(
    admin_settings: Settings,
) -> None:
    async with running("intake", admin_settings) as svc:
        url = f"/api/v1/admin/sites/{SITE}/sessions"
        assert (await svc.anonymous.get(url)).status_code == 401
        wrong = await svc.anonymous.get(url, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["message_en"]
        # GILIRAN_ADMIN_TOKEN from before accounts: still an admin API token (migration path).
        assert (await svc.anonymous.get(url, headers=ADMIN)).status_code == 200
        page = await svc.anonymous.get("/admin")
        assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
    off = admin_settings.model_copy(update={"admin_token": None})
    async with running("intake", off) as svc:
        # Once the setting is removed the old token is just a wrong token.
        assert (await svc.anonymous.get(url, headers=ADMIN)).status_code == 401


async def test_cancelling_a_session_tells_every_registrant_once(admin_settings: Settings) -> None:
    async with (
        running("intake", admin_settings) as svc,
        bus_events(admin_settings, f"giliran.{SITE}.request.cancelled") as cancelled,
    ):
        at(svc, SATURDAY_19_WIB)
        session = "cikarang-utara-20261129"
        ids = []
        for n in range(1, 4):
            r = await svc.http.post("/api/v1/requests", json=body(n, session_id=session))
            assert r.status_code == 202, r.text
            ids.append(r.json()["request_id"])
        r = await svc.http.post(
            f"/api/v1/admin/sites/{SITE}/sessions/{session}/cancel",
            json={"note": "banjir"},
            headers=ADMIN,
        )
        assert r.json() == {"session_id": session, "requests_cancelled": 3}
        again = await svc.http.post(
            f"/api/v1/admin/sites/{SITE}/sessions/{session}/cancel", json={}, headers=ADMIN
        )
        assert again.json()["requests_cancelled"] == 0

        async def three() -> bool:
            return len(cancelled) >= 3

        await eventually(three, within=10)
        await asyncio.sleep(0.5)  # a fourth (duplicate) event would have arrived by now
        assert sorted(e["data"]["request_id"] for e in cancelled) == sorted(ids)
        # notify's session-cancelled message answers exactly this reason.
        assert {e["data"]["reason"] for e in cancelled} == {"session_cancelled"}
        status = await svc.http.get(f"/api/v1/requests/{ids[0]}")
        assert status.json()["cancelled"] is True
        refused = await svc.http.post("/api/v1/requests", json=body(9, session_id=session))
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "session_not_bookable"
        listed = await svc.http.get(f"/api/v1/sites/{SITE}/sessions")
        sunday = next(s for s in listed.json() if s["session_id"] == session)
        assert sunday["cancelled"] is True and sunday["bookable"] is False


async def test_a_date_marked_closed_never_opens(admin_settings: Settings) -> None:
    async with running("intake", admin_settings) as svc:
        # Saturday 5 December, 19:00 WIB: online registration for Sunday 6 December is open.
        at(svc, datetime(2026, 12, 5, 12, 0, tzinfo=UTC))
        booked = await svc.http.post(
            "/api/v1/requests", json=body(1, session_id="cikarang-utara-20261206")
        )
        assert booked.status_code == 202
        closed = await svc.http.put(
            f"/api/v1/admin/sites/{SITE}/closed/2026-12-06",
            json={"note": "renovasi"},
            headers=ADMIN,
        )
        assert closed.json()["requests_cancelled"] == 1
        listed = await svc.http.get(f"/api/v1/sites/{SITE}/sessions")
        assert "2026-12-06" not in [s["date"] for s in listed.json()]
        # Adding a session or a holiday on a closed date does not open it either.
        add = await svc.http.post(
            f"/api/v1/admin/sites/{SITE}/sessions", json={"date": "2026-12-06"}, headers=ADMIN
        )
        assert add.status_code == 422 and add.json()["error"]["field"] == "date"
        await svc.http.put(
            f"/api/v1/admin/sites/{SITE}/holidays/2026-12-06", json={}, headers=ADMIN
        )
        refused = await svc.http.post(
            "/api/v1/requests", json=body(2, session_id="cikarang-utara-20261206")
        )
        assert refused.status_code == 422
        reopened = await svc.http.delete(
            f"/api/v1/admin/sites/{SITE}/closed/2026-12-06", headers=ADMIN
        )
        assert reopened.status_code == 200
        listed = await svc.http.get(f"/api/v1/sites/{SITE}/sessions")
        assert "2026-12-06" in [s["date"] for s in listed.json()]


async def test_holidays_added_and_removed_and_a_fair_day_scheduled(
    admin_settings: Settings,
) -> None:
    async with running("intake", admin_settings) as svc:
        at(svc, FRIDAY_10_WIB)

        async def dates(site: str = SITE) -> list[str]:
            r = await svc.http.get(f"/api/v1/sites/{site}/sessions?days=40")
            return [s["date"] for s in r.json()]

        assert "2026-12-02" not in await dates()  # a Wednesday
        await svc.http.put(
            f"/api/v1/admin/sites/{SITE}/holidays/2026-12-02",
            json={"note": "Pilkada"},
            headers=ADMIN,
        )
        assert "2026-12-02" in await dates()
        assert "2026-12-25" in await dates()  # Christmas (Friday)
        await svc.http.delete(f"/api/v1/admin/sites/{SITE}/holidays/2026-12-25", headers=ADMIN)
        assert "2026-12-25" not in await dates()

        fair = "botram-setu"
        assert await dates(fair) == []  # a fair opens only on the days an admin adds
        r = await svc.http.post(
            f"/api/v1/admin/sites/{fair}/sessions",
            json={"date": "2026-12-05", "opens": "07:30", "closes": "12:00"},
            headers=ADMIN,
        )
        assert r.status_code == 201, r.text
        assert (r.json()["opens_local"], r.json()["closes_local"]) == ("07:30", "12:00")
        assert r.json()["opens_at"].startswith("2026-12-05T00:30:00")
        assert await dates(fair) == ["2026-12-05"]
        booked = await svc.http.post(
            "/api/v1/requests",
            json={
                **body(1),
                "site": fair,
                "services": ["KTP-CETAK", "SKCK", "BPJS"],
                "session_id": "botram-setu-20261205",
            },
        )
        assert booked.status_code == 202, booked.text
        # Online, the civil-registry booth needs a NIK; the police booth does not.
        no_nik = await svc.http.post(
            "/api/v1/requests",
            json={
                "site": fair,
                "services": ["KTP-CETAK"],
                "name": "X",
                "session_id": "botram-setu-20261205",
            },
        )
        assert no_nik.status_code == 422 and no_nik.json()["error"]["field"] == "nik"
        past = await svc.http.post(
            f"/api/v1/admin/sites/{fair}/sessions", json={"date": "2026-11-01"}, headers=ADMIN
        )
        assert past.status_code == 422 and "date" in past.json()["error"]["message_en"]


async def test_personal_data_is_encrypted_and_purged_after_the_session(
    admin_settings: Settings,
) -> None:
    settings = admin_settings.model_copy(update={"purge_after_days": 30})
    async with running("intake", settings) as svc:
        intake = svc.app.state.intake
        at(svc, SATURDAY_19_WIB)
        r = await svc.http.post(
            "/api/v1/requests",
            json=body(1, session_id="cikarang-utara-20261129", phone="081234567890", consent=True),
        )
        assert r.status_code == 202, r.text
        request_id = r.json()["request_id"]
        link = r.json()["status_page_url"]
        stored = await intake.store.requests.find_one({"_id": request_id})
        assert nik(1) not in str(stored)  # not in clear anywhere in the document, outbox too
        assert intake.cipher.decrypt(stored["nik_encrypted"]) == nik(1)
        assert stored["nik_masked"] == "************0001"

        # 30 days after the Sunday session: still kept (complaints, corrections).
        at(svc, datetime(2026, 12, 29, 10, 0, tzinfo=UTC))
        assert await intake.purge() == 0
        # 31 days after: blanked; the request's services and times stay for the statistics.
        at(svc, datetime(2026, 12, 30, 10, 0, tzinfo=UTC))
        assert await intake.purge() == 1
        purged = await intake.store.requests.find_one({"_id": request_id})
        for name in ("name", "nik_encrypted", "nik_masked", "nik_hash", "phone", "email", "token"):
            assert purged[name] is None, name
        assert purged["services"] == ["KTP-CETAK"] and purged["purged_at"]
        # The status link in the citizen's old messages opens nothing any more.
        token = link.rsplit("/s/", 1)[1]
        assert (await svc.anonymous.get(f"/api/v1/status/{token}")).status_code == 404
        assert await intake.store.claims.find_one({}) is None
        assert await intake.store.codes.find_one({}) is None
        assert await intake.purge() == 0  # nothing twice


async def test_the_purge_runs_by_itself(admin_settings: Settings) -> None:
    settings = admin_settings.model_copy(
        update={"purge_after_days": 0, "purge_interval_seconds": 0.2, "demo": True}
    )
    async with running("intake", settings) as svc:
        intake = svc.app.state.intake
        r = await svc.http.post("/api/v1/requests", json=body(1))
        assert r.status_code == 202, r.text
        # Two days on, with a retention of 0 days: the periodic job blanks it unaided.
        later = datetime.now(UTC) + timedelta(days=2)
        intake.clock = lambda: later

        async def purged() -> bool:
            doc = await intake.store.requests.find_one({"_id": r.json()["request_id"]})
            return doc["purged_at"] is not None and doc["name"] is None

        await eventually(purged, within=10)
