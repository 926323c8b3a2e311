"""Intake at the edge: clear bilingual 422s for bad input, MSC session rules, no full NIK kept."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from giliran.settings import Settings
from tests.conftest import running

pytestmark = pytest.mark.integration

GOOD = {"site": "cikarang-utara", "services": ["KTP-CETAK"], "name": "Budi"}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"site": "bekasi-timur"}, "unknown_site"),
        ({"services": ["KTP-CETAK", "SIM-A"]}, "unknown_service"),
        ({"nik": "321609451290001"}, "invalid_nik"),
        ({"nik": "32160945129000x1"}, "invalid_nik"),
        ({"nik": "3216093213900001"}, "invalid_nik"),
        ({"nik": "3216094512900000"}, "invalid_nik"),
        ({"phone": "12345"}, "invalid_phone"),
        ({"phone": "+1 202 555 0100"}, "invalid_phone"),
        ({"name": ""}, "invalid_request"),
        ({"services": []}, "invalid_request"),
        ({"channel": "fax"}, "invalid_request"),
        ({"site": "Not A Slug"}, "invalid_request"),
    ],
)
async def test_bad_input_gets_a_clear_bilingual_422(
    settings: Settings, change: dict[str, object], code: str
) -> None:
    async with running("intake", settings) as intake:
        r = await intake.http.post("/api/v1/requests", json={**GOOD, **change})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == code
        assert error["message_id"] and error["message_en"]
        assert error["message_id"] != error["message_en"]
        count = await intake.app.state.intake.store.requests.count_documents({})
        assert count == 0  # nothing half-done is kept


async def test_registration_follows_the_msc_calendar(settings: Settings) -> None:
    settings = settings.model_copy(update={"demo": False, "ticket_wait_seconds": 0.1})
    async with running("intake", settings) as svc:
        intake = svc.app.state.intake
        cases = [
            (datetime(2026, 11, 30, 3, 0, tzinfo=UTC), None),  # Monday 10:00 WIB
            (datetime(2026, 11, 29, 2, 30, tzinfo=UTC), "cikarang-utara-20261129"),  # Sunday
            (datetime(2026, 11, 29, 4, 0, tzinfo=UTC), None),  # Sunday 11:00 WIB: closed
            (datetime(2026, 12, 25, 3, 29, tzinfo=UTC), "cikarang-utara-20261225"),  # Christmas
            (datetime(2026, 12, 24, 1, 0, tzinfo=UTC), "cikarang-utara-20261224"),  # cuti bersama
            # Online registration closes 30 minutes before the end (catalogue admission rule).
            (datetime(2026, 12, 25, 3, 31, tzinfo=UTC), "registration_not_open"),
        ]
        for i, (now, session) in enumerate(cases):
            intake.clock = lambda now=now: now
            # MSC's adminduk services need a NIK online (catalogue `requires_nik`).
            r = await svc.http.post(
                "/api/v1/requests", json={**GOOD, "nik": f"32160901019000{i + 1:02d}"}
            )
            if session == "registration_not_open":
                assert r.status_code == 409, (now, r.text)
                assert r.json()["error"]["code"] == session
                assert "10.30" in r.json()["error"]["message_id"]
            elif session is None:
                assert r.status_code == 422, (now, r.text)
                assert r.json()["error"]["code"] == "session_closed"
                assert "Minggu" in r.json()["error"]["message_id"]
            else:
                assert r.status_code in (201, 202), (now, r.text)
                assert r.json()["session_id"] == session


async def test_full_nik_is_never_kept_or_shown(settings: Settings) -> None:
    async with running("intake", settings) as svc:
        nik = "3216990101900001"  # kecamatan 99 does not exist in Bekasi: a warning, not an error
        r = await svc.http.post(
            "/api/v1/requests",
            json={**GOOD, "nik": nik, "phone": "0812 3456 7890", "consent": True},
        )
        assert r.status_code in (201, 202), r.text
        assert r.json()["warnings"] == ["unknown_region"]
        assert nik not in r.text
        doc = await svc.app.state.intake.store.requests.find_one({"_id": r.json()["request_id"]})
        assert nik not in str(doc)
        assert doc["nik_masked"] == "************0001"
        assert doc["phone"] == "+6281234567890"
        assert len(doc["nik_hash"]) == 64

        missing = await svc.http.get("/api/v1/requests/01NOSUCHREQUEST")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "request_not_found"


async def test_contact_details_are_dropped_without_consent(settings: Settings) -> None:
    async with running("intake", settings) as svc:
        r = await svc.http.post(
            "/api/v1/requests", json={**GOOD, "phone": "081234567890", "email": "a@b.id"}
        )
        assert r.status_code in (201, 202), r.text
        assert r.json()["warnings"] == ["contact_ignored_without_consent"]
        assert r.json()["phone_masked"] is None
        doc = await svc.app.state.intake.store.requests.find_one({"_id": r.json()["request_id"]})
        assert (doc["phone"], doc["email"], doc["consent"]) == (None, None, False)
        event = next(iter(doc["outbox"].values()), None) if doc.get("outbox") else None
        if event is not None:  # not yet relayed: what would go on the bus
            assert event["data"]["citizen"]["phone"] is None
