"""The live dashboard in real headless Chromium: it shows the figures, follows events pushed by
the server within moments, and reconnects by itself after the reporting service restarts."""

from __future__ import annotations

import time

import pytest
from playwright.async_api import Page, async_playwright

from giliran.contracts import (
    CounterClosed,
    CounterOpened,
    TicketCalled,
    TicketStarted,
    new_event,
    utcnow,
)
from giliran.settings import Settings
from giliran_ops.cli import build_service
from giliran_ops.embedded import free_port
from tests.conftest import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    add_account,
    publish_many,
    request_event,
    require_chromium,
    serving,
    sign_in,
)
from tests.integration.test_notify_channels import ticket_events

pytestmark = pytest.mark.e2e


async def shows(page: Page, element: str, text: str) -> float:
    """Seconds until the element shows `text` (waits up to 10 s)."""
    started = time.monotonic()
    await page.wait_for_function(
        f"() => document.getElementById({element!r}).textContent === {text!r}", timeout=10_000
    )
    return time.monotonic() - started


async def test_dashboard_follows_the_session_live(settings: Settings) -> None:
    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    request = request_event(["KIA"], session_id="cikarang-utara-today")
    tickets = [ticket_events(request, n) for n in range(1, 5)]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        try:
            app, _ = build_service("reporting", settings)
            async with serving(app, port) as url:
                await add_account(settings, "spv", "rahasia-spv-1", "supervisor")
                await sign_in(page, url, "spv", "rahasia-spv-1", "/dashboard?site=cikarang-utara")
                assert page.url.endswith("/dashboard?site=cikarang-utara")
                assert await page.inner_text("#waiting") == "0"
                await page.wait_for_function(
                    "() => document.getElementById('status').textContent.startsWith('diperbarui')"
                )
                await publish_many(settings, [request, *(t[0] for t in tickets[:3])])
                seconds = await shows(page, "waiting", "3")
                print(f"\nissue → dashboard shows it: {seconds * 1000:.0f} ms (incl. bus)")
                called = TicketCalled(
                    **tickets[0][0].data.facts(),
                    counter="2",
                    called_at=utcnow(),
                )
                await publish_many(settings, [new_event(called, site="cikarang-utara")])
                await shows(page, "waiting", "2")
                await shows(page, "counters", "1")
                rows = await page.locator("#lines tr").all_inner_texts()
                assert rows == ["KIA\t2\t0"]
                # Counters opened, one on a break, and the called citizen at the counter.
                now = utcnow()
                await publish_many(settings, [
                    new_event(CounterOpened(counter=c, session_id="cikarang-utara-today",
                                            services=["KIA"], at=now), site="cikarang-utara")
                    for c in ("1", "2")
                ] + [
                    new_event(CounterClosed(counter="1", session_id="cikarang-utara-today",
                                            at=now, paused=True), site="cikarang-utara"),
                    new_event(TicketStarted(**tickets[0][0].data.facts(), counter="2",
                                            called_at=called.called_at, started_at=now),
                              site="cikarang-utara"),
                ])  # fmt: skip
                await shows(page, "open", "1")
                await shows(page, "paused", "1")
                await shows(page, "serving", "1")
                # The chart is fetched again on every change: wait for the newest one to load.
                await page.wait_for_function(
                    "() => document.getElementById('chart').complete && "
                    "document.getElementById('chart').naturalWidth > 0",
                    timeout=10_000,
                )
                await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            # The reporting service goes away: the page says so, and picks up again by itself.
            await page.wait_for_function(
                "() => document.getElementById('status').textContent.includes('menyambung')"
            )
            app, _ = build_service("reporting", settings)
            async with serving(app, port):
                await publish_many(settings, [tickets[3][0]])
                await shows(page, "waiting", "3")
                await page.screenshot(path=str(ARTIFACTS / "dashboard-after-restart.png"))
        finally:
            await browser.close()
