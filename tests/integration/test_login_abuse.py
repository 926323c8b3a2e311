"""Anonymous /login cannot exhaust a service: password checks are bounded per process (the rest
answered 503 at once), fresh names from one address are throttled, and a login form's token
works once. Against a real intake process over real HTTP, and the real accounts store."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from giliran.auth import Role
from giliran.auth.accounts import LOGIN_FAILURES_PER_ADDRESS
from giliran.auth.web import SESSION_COOKIE
from giliran.settings import Settings
from tests.conftest import add_account, running, service_process

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
MIB = 1024 * 1024
ARGON2_MIB = 64  # argon2-cffi's default memory cost (RFC 9106 low-memory profile)
BURST = 40


def _status_kib(pid: int, field: str) -> int:
    """A field of /proc/<pid>/status in KiB (VmRSS: now; VmHWM: the peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing for pid {pid}")


async def _login_form(client: httpx.AsyncClient) -> str:
    page = await client.get("/login")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert page.status_code == 200 and found is not None, page.text
    return found.group(1)


async def _attempt(base: str, name: str) -> httpx.Response:
    """One stranger: fetch the form, post a guess for a name nobody has."""
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        csrf = await _login_form(client)
        return await client.post(
            "/login", data={"username": name, "password": "tebakan-123", "csrf": csrf}
        )


async def test_a_burst_of_forty_sign_ins_keeps_a_real_intake_process_memory_bounded(
    settings: Settings, tmp_path: Path
) -> None:
    """40 strangers at once, each a fresh name (so no per-name lock applies): at most
    `login_concurrency` argon2id checks (64 MiB each) run together; the rest are answered 503
    with Retry-After at once, bilingual. The process's peak RSS (VmHWM, read by the kernel, so
    no sample can miss the peak) grows by less than (concurrency + 1) x 64 MiB; before the
    bound, the thread pool ran six checks together (~384 MiB)."""
    process = service_process("intake", settings, tmp_path).start()
    try:
        await process.wait_listening(within=60)
        assert process.process is not None
        pid = process.process.pid
        base = f"http://127.0.0.1:{process.port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            assert (await http.get("/healthz")).status_code == 200
        idle_kib = _status_kib(pid, "VmRSS")
        answers = await asyncio.gather(*(_attempt(base, f"orang-{n}") for n in range(BURST)))
        peak_kib = _status_kib(pid, "VmHWM")
        growth_mib = (peak_kib - idle_kib) / 1024
        print(f"intake RSS idle {idle_kib / 1024:.0f} MiB, peak {peak_kib / 1024:.0f} MiB, "
              f"growth {growth_mib:.0f} MiB over a burst of {BURST}")  # fmt: skip
        codes = sorted(a.status_code for a in answers)
        assert set(codes) <= {401, 503}, codes
        busy = [a for a in answers if a.status_code == 503]
        assert busy, "every attempt was let through to a password check at once"
        assert all(a.headers.get("retry-after") == "2" for a in busy)
        assert "Coba lagi beberapa detik lagi" in busy[0].text
        assert "Try again in a few seconds" in busy[0].text
        bound_mib = (settings.login_concurrency + 1) * ARGON2_MIB
        assert growth_mib < bound_mib, f"peak grew {growth_mib:.0f} MiB (bound {bound_mib})"
        # Still serving citizens.
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/daftar")).status_code == 200
    finally:
        process.stop()


def _from(svc_app: object, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=svc_app, client=(address, 40000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://intake")


async def _sign_in(client: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    csrf = await _login_form(client)
    return await client.post(
        "/login", data={"username": name, "password": password, "csrf": csrf, "next": "/"}
    )


async def test_fresh_names_from_one_address_are_throttled_but_an_office_keeps_signing_in(
    settings: Settings,
) -> None:
    """A guesser who never repeats a name is held back per address; an officer who signed in
    from this browser before (known-device cookie) still can, so a stranger sharing the office's
    address cannot lock the office out; another address is untouched."""
    await add_account(settings, "budi", "rahasia-budi-1", Role.OFFICER.value, SITE)
    await add_account(settings, "sari", "rahasia-sari-1", Role.OFFICER.value, SITE)
    office = "10.1.2.3"
    async with (
        running("intake", settings) as svc,
        _from(svc.app, office) as budi_pc,
        _from(svc.app, office) as guesser,
        _from(svc.app, office) as new_pc,
        _from(svc.app, "10.9.9.9") as elsewhere,
    ):
        assert (await _sign_in(budi_pc, "budi", "rahasia-budi-1")).status_code == 303
        for n in range(LOGIN_FAILURES_PER_ADDRESS):
            wrong = await _sign_in(guesser, f"nama-baru-{n}", "tebakan")
            assert wrong.status_code == 401, (n, wrong.status_code)
        held = await _sign_in(guesser, "nama-baru-x", "tebakan")
        assert held.status_code == 429
        assert "dari alamat jaringan ini" in held.text
        assert "from this network address" in held.text
        # A first sign-in from a new browser at the office waits with the guesser...
        first = await _sign_in(new_pc, "sari", "rahasia-sari-1")
        assert first.status_code == 429 and SESSION_COOKIE not in first.cookies
        # ...but budi's browser, known for budi, signs in; and so does anyone elsewhere.
        assert (await _sign_in(budi_pc, "budi", "rahasia-budi-1")).status_code == 303
        assert (await _sign_in(elsewhere, "sari", "rahasia-sari-1")).status_code == 303
        # The known-device cookie is budi's only: a guess at another name from it is held.
        assert (await _sign_in(budi_pc, "sari", "tebakan")).status_code == 429


async def test_a_login_form_token_works_once(settings: Settings) -> None:
    """A script that fetched one form cannot replay its token for a stream of guesses."""
    async with (
        running("intake", settings) as svc,
        _from(svc.app, "10.4.4.4") as client,
    ):
        csrf = await _login_form(client)
        guess = {"username": "siapa", "password": "tebakan-1", "csrf": csrf}
        assert (await client.post("/login", data=guess)).status_code == 401
        replay = await client.post("/login", data={**guess, "password": "tebakan-2"})
        assert replay.status_code == 403
        assert replay.json()["error"]["code"] == "csrf_rejected"
        assert replay.json()["error"]["message_id"].startswith("Akses ditolak")
        # Reloading the page gives a fresh form: a person retyping carries on as usual.
        again = await _sign_in(client, "siapa", "tebakan-3")
        assert again.status_code == 401
