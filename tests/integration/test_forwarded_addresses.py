"""Behind a proxy that passes X-Forwarded-For through (GILIRAN_FORWARDED_ALLOW_IPS="*"), a client
claiming 127.0.0.1 is not exempt from intake's rate limits: only the real TCP peer can be
(ADR 0114). A real intake process over real HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from giliran.settings import Settings
from giliran_ops.embedded import service_process

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
LIMIT = 3  # registrations per address a minute, for this test
# More than two windows' worth cannot fit under the limit even across a minute boundary.
ATTEMPTS = 2 * LIMIT + 1


def _registration(n: int) -> dict[str, object]:
    return {
        "site": SITE,
        "services": ["KTP-CETAK"],
        "name": "Warga Uji",
        "nik": f"32160945129{n:05d}",
        "phone": f"0812555{n:05d}",
        "consent": True,
    }


async def test_a_forwarded_loopback_address_is_rate_limited_like_any_other(
    settings: Settings, tmp_path: Path
) -> None:
    env = {
        "GILIRAN_FORWARDED_ALLOW_IPS": "*",
        "GILIRAN_RATE_IP_PER_MINUTE": str(LIMIT),
        "GILIRAN_DEMO": "true",
        "GILIRAN_TICKET_WAIT_SECONDS": "0",
    }
    process = service_process("intake", settings, tmp_path, env=env).start()
    try:
        await process.wait_listening(within=60)
        base = f"http://127.0.0.1:{process.port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            # A stranger behind the ingress, claiming to be the box itself.
            claimed = [
                await http.post(
                    "/api/v1/requests",
                    json=_registration(n),
                    headers={"X-Forwarded-For": "127.0.0.1"},
                )
                for n in range(1, ATTEMPTS + 1)
            ]
            codes = [r.status_code for r in claimed]
            assert 429 in codes, f"a forwarded 127.0.0.1 was exempt: {codes}"
            refused = next(r for r in claimed if r.status_code == 429)
            assert refused.json()["error"]["message_id"]
            assert refused.headers.get("retry-after")
            # The box itself (a kiosk on it, no forwarding header) stays exempt.
            own = [
                await http.post("/api/v1/requests", json=_registration(n))
                for n in range(100, 100 + ATTEMPTS)
            ]
            assert [r.status_code for r in own if r.status_code == 429] == [], [
                r.text for r in own if r.status_code >= 400
            ]
    finally:
        process.stop()
