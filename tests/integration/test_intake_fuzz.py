"""Every 422 names the field and how to fix it in both languages; a schemathesis run over
intake's OpenAPI (real HTTP, real store and NATS) finds no 500."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from giliran.cli import build_service
from giliran.embedded import free_port
from giliran.settings import Settings
from tests.conftest import running, serving

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


async def test_fuzzing_the_openapi_finds_no_server_error(
    settings: Settings, tmp_path: Path
) -> None:
    fuzzed = settings.model_copy(
        update={"ticket_wait_seconds": 0.0, "admin_token": SecretStr("admin-secret")}
    )
    app, runtime = build_service("intake", fuzzed)
    async with serving(app, free_port()) as url:
        await asyncio.wait_for(runtime.bus_started.wait(), timeout=15)
        started = asyncio.get_running_loop().time()
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "st"),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--phases",
            "examples,fuzzing",
            "--max-examples",
            "12",
            "--seed",
            "4",
            "--workers",
            "2",
            "--request-timeout",
            "10",
            "--generation-database",
            "none",
            "-H",
            "Authorization: Bearer admin-secret",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
        output, _ = await process.communicate()
        seconds = asyncio.get_running_loop().time() - started
        text = output.decode(errors="replace")
        print(f"\nschemathesis over intake's OpenAPI: {seconds:.1f} s\n{text[-1500:]}")
        assert process.returncode == 0, text[-4000:]
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/healthz")).status_code == 200
