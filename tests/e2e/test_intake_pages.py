"""Intake's pages in real headless Chromium: register on a phone, a kiosk walk-in printing a ticket
with a QR code, a status page that follows a call pushed on NATS, and the survey."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from giliran.bus import publish_event
from giliran.settings import Settings
from giliran_ops.cli import build_service
from giliran_ops.embedded import free_port
from tests.conftest import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    add_account,
    nats_client,
    publish_many,
    require_chromium,
    running,
    serving,
    sign_in,
)
from tests.integration.test_intake_status import ticket_events

pytestmark = pytest.mark.e2e
PHONE = {"width": 390, "height": 844}


@asynccontextmanager
async def intake_in_browser(settings: Settings) -> AsyncIterator[tuple[str, Browser]]:
    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    app, runtime = build_service("intake", settings)
    async with serving(app, free_port()) as url, async_playwright() as playwright:
        await asyncio.wait_for(runtime.bus_started.wait(), timeout=15)
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield url, browser
        finally:
            await browser.close()


async def register(page: Page, url: str, nik: str) -> str:
    """Fill the registration form as a citizen would; returns the status page's token."""
    await page.goto(f"{url}/daftar?site=cikarang-utara")
    await page.check("input[value=KTP-CETAK]")
    await page.fill("#name", "Siti Aminah")
    await page.fill("#nik", nik)
    await page.fill("#phone", "0812 3456 7890")
    await page.check("input[name=consent]")
    await page.click("#submit")
    await page.wait_for_url("**/s/**")
    return page.url.rsplit("/s/", 1)[1].split("?")[0]


async def test_register_on_a_phone(settings: Settings) -> None:
    async with intake_in_browser(settings) as (url, browser):
        page = await browser.new_page(viewport=PHONE, is_mobile=True, has_touch=True)
        await page.goto(f"{url}/daftar?site=cikarang-utara")
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"]  # no sideways scrolling on a phone
        # A wrong NIK: the page says which field and how to fix it, and marks the field.
        await page.check("input[value=KTP-CETAK]")
        await page.fill("#name", "Siti Aminah")
        await page.fill("#nik", "3216093213900001")
        await page.click("#submit")
        error = await page.inner_text("#error")
        assert "Kolom 'nik'" in error and "16 digit" in error
        assert "invalid" in (await page.get_attribute("#nik", "class") or "")
        await page.screenshot(path=str(ARTIFACTS / "intake-register-error.png"), full_page=True)

        await register(page, url, "3216094512900001")
        await page.wait_for_function("() => document.getElementById('live').textContent !== '…'")
        assert "Dokumen yang perlu dibawa" in await page.content()
        await page.screenshot(path=str(ARTIFACTS / "intake-register-phone.png"), full_page=True)
        # The English toggle keeps the page.
        await page.click("#lang-toggle")
        await page.wait_for_selector("text=Documents to bring")


async def test_kiosk_walk_in_prints_a_ticket_with_a_qr_code(settings: Settings) -> None:
    async with running("queue", settings), intake_in_browser(settings) as (url, browser):
        page = await browser.new_page(viewport={"width": 1080, "height": 1920}, has_touch=True)
        # Only a kiosk's sign-in may register walk-ins straight into the line (ADR 0102).
        await page.goto(f"{url}/kiosk/cikarang-utara")
        assert "/login" in page.url
        await add_account(settings, "kios-1", "rahasia-kios-1", "kiosk", "cikarang-utara")
        await sign_in(page, url, "kios-1", "rahasia-kios-1", "/kiosk/cikarang-utara")
        assert page.url.endswith("/kiosk/cikarang-utara")
        button = page.locator("button[data-service=KTP-CETAK]")
        box = await button.bounding_box()
        assert box is not None and box["height"] >= 80  # touch-sized
        await page.screenshot(path=str(ARTIFACTS / "intake-kiosk.png"))
        await button.tap()
        await page.wait_for_url("**/kiosk/ticket/**")
        number = await page.inner_text("[data-testid=number]")
        assert number == "B-001"
        await page.screenshot(path=str(ARTIFACTS / "intake-ticket.png"), full_page=True)

        # The next walk-in declares a priority and keys in a NIK on the on-screen keypad.
        await page.goto(f"{url}/kiosk/cikarang-utara")
        await page.locator("#more summary").tap()
        await page.locator("label", has_text="Ibu hamil").tap()
        for digit in "3216094512900003":
            await page.locator(f"#keypad [data-key='{digit}']").tap()
        await page.screenshot(path=str(ARTIFACTS / "intake-kiosk-keypad.png"))
        await page.locator("button[data-service=KTP-CETAK]").tap()
        await page.wait_for_url("**/kiosk/ticket/**")
        assert await page.inner_text("[data-testid=number]") == "B-002"
        assert await page.inner_text("[data-testid=nik]") == "NIK: ************0003"
        # A mark only: the reason (a health fact) is not on the paper (test_printed_ticket.py).
        assert await page.inner_text("[data-testid=priority]") == "PRIORITAS"
        text = await page.inner_text("#ticket")
        assert "Pencetakan KTP-el" in text and "Loket 1" in text
        assert "Layanan ini GRATIS" in text
        qr = page.locator("#qr svg")
        assert await qr.count() == 1
        qr_box = await qr.bounding_box()
        assert qr_box is not None and qr_box["width"] >= 100
        await page.emulate_media(media="print")
        await page.screenshot(path=str(ARTIFACTS / "intake-ticket-print.png"), full_page=True)
        assert not await page.is_visible("header")  # the print view is the ticket only


async def test_status_page_follows_a_call_and_the_survey_submits(settings: Settings) -> None:
    async with intake_in_browser(settings) as (url, browser):
        page = await browser.new_page(viewport=PHONE, is_mobile=True)
        token = await register(page, url, "3216094512900002")
        request: dict[str, Any] = await page.evaluate(
            f"fetch('/api/v1/status/{token}').then(r => r.json())"
        )
        request = {**request, "services": ["KTP-CETAK"]}
        issued, called, completed = ticket_events(request)
        await publish_many(settings, [issued])
        state = page.locator("[data-testid=state]")
        await state.filter(has_text="Menunggu").wait_for()
        async with nats_client(settings) as nc:  # connected before the clock starts
            started = asyncio.get_running_loop().time()
            await publish_event(nc.jetstream(), called.to_json_dict())
            await state.filter(has_text="Dipanggil! Silakan ke Loket 2").wait_for(timeout=10_000)
            took = asyncio.get_running_loop().time() - started
        print(f"\nticket.called on NATS -> status page shows it: {took * 1000:.0f} ms")
        await page.screenshot(path=str(ARTIFACTS / "intake-status-called.png"), full_page=True)

        await publish_many(settings, [completed])
        survey = page.locator(f"#survey-{issued.data.ticket_id}")
        await survey.wait_for(timeout=10_000)
        await survey.click()
        await page.wait_for_url("**/survey/**")
        for n in range(1, 10):
            await page.check(f"input[name=U{n}][value='{4 if n == 4 else 3}']")
        await page.screenshot(path=str(ARTIFACTS / "intake-survey.png"), full_page=True)
        await page.click("#send")
        await page.wait_for_selector("#thanks")
        # The status page no longer offers a survey for that ticket.
        await page.goto(f"{url}/s/{token}")
        await state.filter(has_text="Selesai").wait_for()
        assert await survey.count() == 0


async def test_the_admin_page_cancels_a_session_and_marks_a_holiday(settings: Settings) -> None:
    await add_account(settings, "admin1", "rahasia-admin-1", "admin")
    async with intake_in_browser(settings) as (url, browser):
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(f"{url}/admin")
        assert "/login" in page.url  # not signed in: sent to the login page
        await page.fill("#username", "admin1")
        await page.fill("#password", "rahasia-admin-1")
        await page.click("#login-submit")
        await page.wait_for_selector("#sessions")
        rows = page.locator("#sessions tr")
        first = (await rows.nth(1).inner_text()).split("\t")[0]
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await rows.nth(1).locator("button", has_text="Batalkan").click()
        await page.wait_for_selector(f"#sessions tr:has-text('{first}') >> text=dibatalkan")
        await page.fill("input[name=day] >> nth=1", "2026-12-16")
        await page.fill("input[name=note]", "Pilkada")
        await page.select_option("select[name=what]", "holiday_add")
        await page.click("text=Simpan >> nth=0")
        await page.wait_for_selector("#sessions >> text=Pilkada")
        await page.screenshot(path=str(ARTIFACTS / "intake-admin.png"), full_page=True)
        # Both changes are in the audit trail, under this admin's name.
        await page.goto(f"{url}/audit")
        trail = await page.inner_text("#audit")
        assert "admin1 (admin)" in trail and "cancel" in trail and "holiday_add" in trail
