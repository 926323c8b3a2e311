"""The devices page in real headless Chromium: a supervisor pairs the board TV and a counter tablet;
the QR code is read off a screenshot of the page (zxing-cpp on the pixels Chromium drew); each
device opens its link in a browser of its own, works (the tablet calls a citizen, the board shows
it), and the supervisor's Revoke click ends the tablet."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from giliran.settings import Settings
from giliran_ops.embedded import free_port, service_process
from tests.conftest import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    add_account,
    eventually,
    publish,
    request_event,
    require_chromium,
    sign_in,
)

pytestmark = pytest.mark.e2e
SITE = "cikarang-utara"


async def qr_on_screen(page: Page) -> str:
    """What the pairing QR code on the page says, read from a screenshot of it."""
    import zxingcpp
    from PIL import Image

    shot = await page.locator("#pairing-qr").screenshot()
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(shot)).convert("L"))
    assert len(found) == 1, "no QR code read from the screenshot"
    return str(found[0].text)


async def pair(keeper: Page, kind: str, counter: str = "") -> str:
    await keeper.select_option("select[name=kind]", kind)
    if counter:
        await keeper.select_option("select[name=counter]", counter)
    async with keeper.expect_navigation():
        await keeper.click("#pair-form button[type=submit]")
    link = await qr_on_screen(keeper)
    assert link == (await keeper.text_content("#pairing-url") or "").strip()
    await keeper.screenshot(path=str(ARTIFACTS / f"devices-pair-{kind}.png"))
    return link


async def device(browser: Browser, link: str) -> Page:
    """A device of its own (its own cookies) that opens the scanned link."""
    context = await browser.new_context(viewport={"width": 1024, "height": 700})
    page = await context.new_page()
    await page.goto(link)
    return page


async def test_a_supervisor_pairs_a_board_and_a_tablet_in_the_browser(
    settings: Settings, tmp_path: Path
) -> None:
    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    ports = {"intake": free_port(), "queue": free_port()}
    # Each process knows where the other's pages are (a paired device is sent to its page).
    env = {f"GILIRAN_{name.upper()}_PORT": str(port) for name, port in ports.items()}
    intake = service_process("intake", settings, tmp_path, port=ports["intake"], env=env).start()
    queue = service_process("queue", settings, tmp_path, port=ports["queue"], env=env).start()
    office = f"http://127.0.0.1:{ports['intake']}"
    queue_url = f"http://127.0.0.1:{ports['queue']}"
    try:
        await intake.wait_listening()
        await queue.wait_listening()
        await add_account(settings, "penyelia", "rahasia-penyelia-1", "supervisor", SITE)
        async with httpx.AsyncClient(timeout=5) as http:

            async def ready() -> bool:
                for url in (office, queue_url):
                    try:
                        if (await http.get(f"{url}/readyz")).status_code != 200:
                            return False
                    except httpx.HTTPError:
                        return False
                return True

            await eventually(ready, within=60)
        event = request_event(["KTP-REKAM"])
        await publish(settings, event)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            keeper = await browser.new_page(viewport={"width": 1280, "height": 900})
            await sign_in(keeper, office, "penyelia", "rahasia-penyelia-1", f"/devices?site={SITE}")
            assert "/devices" in keeper.url

            board = await device(browser, await pair(keeper, "board"))
            assert board.url == f"{queue_url}/board?site={SITE}"
            await board.wait_for_function(
                "() => document.getElementById('status').textContent.startsWith('tersambung')"
            )
            tablet = await device(browser, await pair(keeper, "counter", "1"))
            assert tablet.url == f"{queue_url}/console?site={SITE}&counter=1"

            # The tablet calls (its page sends the device's CSRF token); the board shows it.
            await eventually(lambda: _waiting(tablet), within=30)
            await tablet.click("#call-next")
            await tablet.wait_for_function(
                "() => document.getElementById('number').textContent.trim() === 'A-001'"
            )
            await board.wait_for_function(
                "() => document.getElementById('now-number').textContent.trim() === 'A-001'"
            )
            await board.screenshot(path=str(ARTIFACTS / "devices-board-paired.png"))

            # The supervisor revokes the tablet; its next action is refused, in its language.
            await keeper.goto(f"{office}/devices?site={SITE}")
            row = keeper.locator("#devices tr", has_text="counter-1")
            assert await row.count() == 1
            async with keeper.expect_navigation():
                await row.locator("button").click()
            assert await row.locator(".state").text_content() == "dicabut"
            await tablet.click("#recall")
            await tablet.wait_for_function(
                "() => document.getElementById('message').textContent.startsWith('Perlu masuk')"
            )
            await tablet.screenshot(path=str(ARTIFACTS / "devices-tablet-revoked.png"))
            await browser.close()
    finally:
        queue.stop()
        intake.stop()


async def _waiting(tablet: Page) -> bool:
    await tablet.reload()
    rows: int = await tablet.locator("#waiting button[data-call]").count()
    return rows > 0
