"""A Sunday's rules in real headless Chromium: the registration form answers the proof-of-work
challenge itself once one address has registered a few times, the kiosk asks for the NIK on its
keypad, and the public schedule says when registration opens, places left, fees and documents."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import pytest
from playwright.async_api import Browser, async_playwright
from pydantic import SecretStr

from giliran.settings import Settings
from giliran_ops.cli import build_service
from giliran_ops.embedded import free_port
from tests.conftest import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    add_account,
    require_chromium,
    serving,
    sign_in,
)
from tests.e2e.test_intake_pages import PHONE

pytestmark = pytest.mark.e2e

SUNDAY_0905_WIB = datetime(2026, 11, 29, 2, 5, tzinfo=UTC)


@pytest.fixture
def sunday(settings: Settings) -> Settings:
    # No address is exempt here: the browser's 127.0.0.1 counts like a citizen's phone.
    return settings.model_copy(
        update={
            "demo": False,
            "rate_limit_exempt": [],
            "admin_token": SecretStr("admin-secret-0123456789abcdefghij"),
        }
    )


@asynccontextmanager
async def sunday_in_browser(settings: Settings) -> AsyncIterator[tuple[str, Browser]]:
    """Intake over real HTTP with its clock at Sunday 29 November 2026, 09:05 WIB."""
    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    app, runtime = build_service("intake", settings)
    app.state.intake.clock = lambda: SUNDAY_0905_WIB
    async with serving(app, free_port()) as url, async_playwright() as playwright:
        await asyncio.wait_for(runtime.bus_started.wait(), timeout=15)
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield url, browser
        finally:
            await browser.close()


def nik(n: int) -> str:
    return f"321609010190{n:04d}"


async def test_the_registration_form_answers_the_challenge_itself(sunday: Settings) -> None:
    async with (
        sunday_in_browser(sunday) as (url, browser),
        httpx.AsyncClient(base_url=url) as plain,
    ):
        page = await browser.new_page(viewport=PHONE, is_mobile=True, has_touch=True)
        for n in range(1, 5):  # the 4th from this address needs a solved challenge
            await page.goto(f"{url}/daftar?site=cikarang-utara")
            await page.check("input[value=KTP-CETAK]")
            await page.fill("#name", f"Warga {n}")
            await page.fill("#nik", nik(n))
            await page.click("#submit")
            await page.wait_for_url("**/s/**")
            assert "check-in" in (await page.inner_text("#checkin-rule"))
        await page.screenshot(path=str(ARTIFACTS / "intake-status-checkin.png"), full_page=True)
        # What the challenge costs this browser (printed, not asserted: a measurement).
        await page.goto(f"{url}/daftar?site=cikarang-utara")
        took = await page.evaluate(
            """async () => {
                const text = document.getElementById("challenge").value, t = performance.now();
                for (let i = 0; i < 20; i++) await solve(text + "x" + i);
                return (performance.now() - t) / 20;
            }"""
        )
        print(f"\nproof of work, 2^16 on average, headless Chromium: {took:.0f} ms per challenge")
        # Without the page's script (a bare form post), the 5th is asked for the challenge.
        bare = await plain.post(
            "/daftar",
            data={
                "site": "cikarang-utara",
                "services": "KTP-CETAK",
                "name": "Bot",
                "nik": nik(5),
            },
        )
        assert bare.status_code == 428, bare.text[:300]
        assert "tantangan" in bare.text


async def test_the_kiosk_asks_for_the_nik_on_its_keypad(sunday: Settings) -> None:
    async with sunday_in_browser(sunday) as (url, browser):
        page = await browser.new_page(viewport={"width": 1024, "height": 1366}, has_touch=True)
        await add_account(sunday, "kios-1", "rahasia-kios-1", "kiosk", "cikarang-utara")
        await sign_in(page, url, "kios-1", "rahasia-kios-1", "/kiosk/cikarang-utara")
        assert page.url.endswith("/kiosk/cikarang-utara")
        card = page.locator("[data-service-card=AKTA-LAHIR]")
        assert "Layanan ini GRATIS." in await card.inner_text()
        assert "Surat keterangan lahir" in await card.inner_text()
        assert "Sisa 24 tempat" in await card.inner_text()
        await page.locator("[data-service=AKTA-LAHIR]").tap()
        error = await page.inner_text("#error")
        assert "NIK wajib" in error and "tombol angka" in error
        for digit in nik(7):
            await page.locator(f"#keypad [data-key='{digit}']").tap()
        await page.screenshot(path=str(ARTIFACTS / "intake-kiosk-nik.png"), full_page=True)
        await page.locator("[data-service=AKTA-LAHIR]").tap()
        await page.wait_for_url("**/kiosk/ticket/**")
        assert "Layanan ini GRATIS." in await page.inner_text("#cost")
        await page.goto(f"{url}/kiosk/cikarang-utara")
        assert "Sisa 23 tempat" in await page.locator("[data-service-card=AKTA-LAHIR]").inner_text()


async def test_the_public_schedule_reads_plainly(sunday: Settings) -> None:
    async with sunday_in_browser(sunday) as (url, browser):
        page = await browser.new_page(viewport=PHONE, is_mobile=True, has_touch=True)
        await page.goto(f"{url}/jadwal/cikarang-utara")
        text = await page.inner_text("main")
        assert (
            "Pendaftaran daring sedang dibuka, sampai Minggu, 29 November 2026 pukul 10.30 WIB."
            in text
        )
        assert "Layanan ini GRATIS." in text and "Rp" not in text
        assert "Surat keterangan lahir" in text
        row = page.locator("[data-session=cikarang-utara-20261129] [data-service=KTP-CETAK]")
        assert "96" in await row.inner_text()
        await page.screenshot(path=str(ARTIFACTS / "intake-schedule.png"), full_page=True)
