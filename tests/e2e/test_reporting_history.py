"""The history views in real headless Chromium: from the live dashboard to a site's period, one
session and the kabupaten with its BOTRAM fairs side by side; the numbers on the pages are the
API's, the charts are inline SVG drawn on the server, and the type is big enough for a projector."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import Page, async_playwright

from giliran.settings import Settings
from giliran_ops.cli import build_service
from giliran_ops.embedded import free_port
from tests.conftest import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    add_account,
    eventually,
    issue_token,
    publish_many,
    require_chromium,
    serving,
    sign_in,
)
from tests.integration.test_reporting_history import recorded_weekend

pytestmark = pytest.mark.e2e
PERIOD = "from=2026-11-22&to=2026-11-29"


async def figure(page: Page, name: str) -> str:
    return await page.inner_text(f'[data-figure="{name}"]')


async def charts_drawn(page: Page, selector: str) -> list[dict[str, Any]]:
    """Size of each inline SVG chart as laid out by the browser."""
    boxes: list[dict[str, Any]] = await page.eval_on_selector_all(
        f"{selector} svg",
        "els => els.map(e => ({w: e.getBoundingClientRect().width,"
        " h: e.getBoundingClientRect().height, bars: e.querySelectorAll('.rect').length}))",
    )
    return boxes


async def test_history_pages_from_the_dashboard(settings: Settings) -> None:
    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    lives, events = recorded_weekend(scale=5)
    port = free_port()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            app, _ = build_service("reporting", settings)
            # A kabupaten-wide supervisor: the kabupaten views need every site.
            await add_account(settings, "kab", "rahasia-kab-1", "supervisor", "*")
            staff = {"Authorization": f"Bearer {await issue_token(settings, 'supervisor')}"}
            async with (
                serving(app, port) as url,
                httpx.AsyncClient(base_url=url, headers=staff) as api,
            ):
                await publish_many(settings, events)

                async def caught_up() -> dict[str, Any] | None:
                    body: dict[str, Any] = (
                        await api.get(f"/api/v1/kabupaten/history?{PERIOD}")
                    ).json()
                    return body if body["totals"]["issued"] == len(lives) else None

                kabupaten = await eventually(caught_up, within=60, interval=0.3)

                # The dashboard links to the site's history.
                await sign_in(page, url, "kab", "rahasia-kab-1", "/dashboard?site=cikarang-utara")
                await page.click("#history")
                await page.wait_for_url("**/history/site?site=cikarang-utara")
                await page.goto(f"{url}/history/site?site=cikarang-utara&{PERIOD}")
                site = (await api.get(f"/api/v1/sites/cikarang-utara/history?{PERIOD}")).json()
                assert await figure(page, "issued") == str(site["issued"])
                assert await figure(page, "completed") == str(site["completed"])
                assert await figure(page, "wait_p90") == f"{site['wait_seconds']['p90'] / 60:.1f}"
                drawn = await charts_drawn(page, "#charts")
                assert len(drawn) == 2 and all(c["w"] > 400 and c["h"] > 200 for c in drawn)
                assert drawn[0]["bars"] == 2 * len(site["days"])  # issued and completed per day
                size = await page.eval_on_selector(
                    "#days td", "e => parseFloat(getComputedStyle(e).fontSize)"
                )
                assert size >= 18  # readable from the back of a room
                await page.screenshot(path=str(ARTIFACTS / "history-site.png"), full_page=True)

                # A session, from the site's list of sessions.
                await page.click("#sessions a >> nth=0")
                await page.wait_for_url("**/history/session?**")
                session = (
                    await api.get("/api/v1/sites/cikarang-utara/sessions/cikarang-utara-20261129")
                ).json()
                assert await figure(page, "issued") == str(session["issued"])
                rows = await page.locator("#services tr").count()
                assert rows == 1 + len(session["by_service"])
                await page.screenshot(path=str(ARTIFACTS / "history-session.png"), full_page=True)

                # The kabupaten: every site and the BOTRAM fairs side by side.
                await page.click("text=Kabupaten")
                await page.goto(f"{url}/history/kabupaten?{PERIOD}")
                assert await figure(page, "issued") == str(kabupaten["totals"]["issued"])
                fairs = await page.locator("#fairs tr").all_inner_texts()
                assert len(fairs) == 1 + len(kabupaten["fairs"]) == 4
                assert "Kecamatan Cikarang Utara" in await page.inner_text("#sites")
                await page.screenshot(path=str(ARTIFACTS / "history-kabupaten.png"), full_page=True)

                # The daily report, with the new figures, prints on one A4 page.
                await page.goto(f"{url}/reports/daily?site=cikarang-utara&date=2026-11-29")
                assert await page.locator("#eta").count() == 1
                pdf = await page.pdf(format="A4", print_background=True)
                (ARTIFACTS / "daily-report.pdf").write_bytes(pdf)
                pages = pdf.count(b"/Type /Page") - pdf.count(b"/Type /Pages")
                if pages != 1:
                    await page.emulate_media(media="print")
                    await page.screenshot(
                        path=str(ARTIFACTS / "daily-report-print.png"), full_page=True
                    )
                assert pages == 1
        finally:
            await browser.close()
