"""Every 422 names the field and how to fix it in both languages (the schemathesis run over
intake's OpenAPI is in test_openapi_fuzz.py, with the other services')."""

from __future__ import annotations

import pytest

from giliran.settings import Settings
from tests.conftest import running

pytestmark = pytest.mark.integration

GOOD = {"site": "cikarang-utara", "services": ["KTP-CETAK"], "name": "Budi"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"services": []}, "services"),
        ({"services": ["ktp cetak"]}, "services.0"),
        ({"channel": "fax"}, "channel"),
        ({"site": "Not A Slug"}, "site"),
        ({"email": "nope", "consent": True}, "email"),
        ({"appointment_at": "2026-11-29T09:00:00"}, "appointment_at"),  # no time zone
        ({"priority": "vip"}, "priority"),
        ({"extra": 1}, "extra"),
        ({"nik": "1234"}, "nik"),
        ({"phone": "12345"}, "phone"),
        ({"session_id": "cikarang-utara-20990101"}, "session_id"),
    ],
)
async def test_every_422_names_the_field_and_the_fix_in_both_languages(
    settings: Settings, change: dict[str, object], field: str
) -> None:
    async with running("intake", settings.model_copy(update={"ticket_wait_seconds": 0})) as svc:
        r = await svc.http.post("/api/v1/requests", json={**GOOD, **change})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["field"] == field
        assert f"'{field}'" in error["message_id"] and f"'{field}'" in error["message_en"]
        assert error["message_id"] != error["message_en"]
        assert error["message_id"].startswith("Kolom")
        assert error["message_en"].startswith("Field")


async def test_a_broken_body_is_named_too(settings: Settings) -> None:
    async with running("intake", settings) as svc:
        r = await svc.http.post(
            "/api/v1/requests", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422
        assert r.json()["error"]["message_id"].startswith("Kolom")
