"""One IPv6 subscriber line (a /64) is one address for every per-address limit, not only the
registration caps: a guesser who takes a fresh address of their /64 for each attempt is held back
at sign-in and at check-in like one address. A real intake process over real HTTP behind a trusted
proxy (the addresses come from X-Forwarded-For, as Caddy sends them)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from giliran.auth import Role
from giliran.auth.accounts import LOGIN_FAILURES_ALLOWED
from giliran.auth.web import SESSION_COOKIE
from giliran.settings import Settings
from giliran_ops.embedded import service_process
from tests.conftest import add_account, issue_token

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
CHECKIN_LIMIT = 3  # check-in attempts per address a minute, for this test
LINE = "2001:db8:77:1"  # one home's /64


def _on_line(n: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"{LINE}::{n:x}"}


async def _sign_in(
    http: httpx.AsyncClient, name: str, password: str, headers: dict[str, str]
) -> httpx.Response:
    http.cookies.clear()  # a fresh browser each time: no known-device cookie, no old form
    page = await http.get("/login", headers=headers)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert page.status_code == 200 and found is not None, page.text
    return await http.post(
        "/login",
        data={"username": name, "password": password, "csrf": found.group(1), "next": "/"},
        headers=headers,
    )


async def test_one_ipv6_line_is_one_address_for_sign_in_and_check_in(
    settings: Settings, tmp_path: Path
) -> None:
    await add_account(settings, "budi", "rahasia-budi-1", Role.OFFICER.value, SITE)
    env = {
        "GILIRAN_FORWARDED_ALLOW_IPS": "*",
        "GILIRAN_RATE_CHECKIN_IP_PER_MINUTE": str(CHECKIN_LIMIT),
    }
    process = service_process("intake", settings, tmp_path, env=env).start()
    try:
        await process.wait_listening(within=60)
        base = f"http://127.0.0.1:{process.port}"
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            # Guessing budi's password, one fresh address of the line per guess: the name's
            # lock counts the line, so the guess after the allowance is refused unchecked.
            for n in range(1, LOGIN_FAILURES_ALLOWED + 1):
                wrong = await _sign_in(http, "budi", f"tebakan-{n}", _on_line(n))
                assert wrong.status_code == 401, (n, wrong.status_code)
            held = await _sign_in(http, "budi", "rahasia-budi-1", _on_line(0xFFFF))
            assert held.status_code == 429, f"a fresh address of the line was let guess: {held}"
            assert SESSION_COOKIE not in held.cookies
            # Another line (budi at the office) is untouched.
            office = {"X-Forwarded-For": "2001:db8:99:2::10"}
            assert (await _sign_in(http, "budi", "rahasia-budi-1", office)).status_code == 303

            # Check-in is for the office's kiosk and staff only (a stranger gets 401); an
            # officer's token guessing codes, a fresh address each time: the line's limit holds.
            http.cookies.clear()
            stranger = await http.post(
                f"/api/v1/sites/{SITE}/check-in", json={"code": "QZQZQZ"}, headers=_on_line(0xFF)
            )
            assert stranger.status_code == 401, stranger.text
            officer = {"Authorization": f"Bearer {await issue_token(settings, 'officer', SITE)}"}
            codes = [
                (
                    await http.post(
                        f"/api/v1/sites/{SITE}/check-in",
                        json={"code": f"QZQZQ{n}"},
                        headers={**_on_line(0x100 + n), **officer},
                    )
                ).status_code
                # More than two windows' worth cannot fit under the limit across a minute's end.
                for n in range(2 * CHECKIN_LIMIT + 1)
            ]
            assert set(codes) <= {404, 429}, codes
            assert 429 in codes, f"one line guessed past its limit: {codes}"
    finally:
        process.stop()
