"""The kiosk's ticket printed by real headless Chromium on 58 and 80 mm paper (its @page size),
the PDF turned into the printer's dots by pdftoppm (203 dpi, a thermal head's resolution) and
the QR code read back by zxing-cpp; the text read back by pdftotext. A status link only the box
can open is flagged to staff on the screen, never printed."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image
from playwright.async_api import Page, async_playwright

from giliran.settings import Settings
from giliran_ops.cli import build_service
from giliran_ops.embedded import free_port
from tests.conftest import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    add_account,
    require_chromium,
    require_tools,
    running,
    serving,
    sign_in,
)

pytestmark = pytest.mark.e2e
SITE = "cikarang-utara"
PUBLIC = "https://antrean.cikarang-utara.test"
MM_PER_POINT = 25.4 / 72


@asynccontextmanager
async def kiosk(settings: Settings) -> AsyncIterator[tuple[str, Page]]:
    require_chromium()
    require_tools("pdftoppm", "pdfinfo", "pdftotext")
    ARTIFACTS.mkdir(exist_ok=True)
    app, runtime = build_service("intake", settings)
    async with (
        running("queue", settings),
        serving(app, free_port()) as url,
        async_playwright() as playwright,
    ):
        await asyncio.wait_for(runtime.bus_started.wait(), timeout=15)
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1080, "height": 1920}, has_touch=True)
            # The kiosk pages are a kiosk's own (ADR 0102): its browser signs in once.
            await add_account(settings, "kios-1", "rahasia-kios-1", "kiosk", SITE)
            await sign_in(page, url, "kios-1", "rahasia-kios-1", f"/kiosk/{SITE}")
            yield url, page
        finally:
            await browser.close()


async def walk_in(page: Page, url: str, priority: str | None) -> str:
    """A walk-in at the kiosk, as a citizen taps it; returns the ticket page's token."""
    await page.goto(f"{url}/kiosk/{SITE}")
    if priority:
        await page.locator("#more summary").tap()
        await page.locator("label", has_text=priority).tap()
    await page.locator("button[data-service=KTP-CETAK]").tap()
    await page.wait_for_url("**/kiosk/ticket/**")
    return page.url.split("/kiosk/ticket/")[1].split("?")[0]


def printed(pdf: Path) -> tuple[dict[str, str], str, list[str]]:
    """pdfinfo's facts, pdftotext's text, and the QR codes zxing-cpp finds at 203 dpi."""
    info = dict(
        line.split(":", 1)
        for line in subprocess.run(
            ["pdfinfo", str(pdf)], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        if ":" in line
    )
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    subprocess.run(
        ["pdftoppm", "-r", "203", "-gray", "-png", str(pdf), str(pdf.with_suffix(""))], check=True
    )
    dots = sorted(pdf.parent.glob(f"{pdf.stem}*.png"))
    codes = [r.text for png in dots for r in zxingcpp.read_barcodes(Image.open(png))]
    for kept in (pdf, *dots):  # what a person can look at afterwards
        shutil.copy(kept, ARTIFACTS)
    return {k.strip(): v.strip() for k, v in info.items()}, text, codes


async def test_the_browser_prints_the_ticket_on_58_and_80_mm_paper(
    settings: Settings, tmp_path: Path
) -> None:
    configured = settings.model_copy(update={"public_url": PUBLIC})
    async with kiosk(configured) as (url, page):
        token = await walk_in(page, url, "Ibu hamil")
        number = await page.inner_text("[data-testid=number]")
        assert re.fullmatch(r"B-\d{3}", number)
        assert await page.inner_text("[data-testid=priority]") == "PRIORITAS"
        assert not await page.is_visible("#qr-warning")
        for paper in (58, 80):
            await page.goto(f"{url}/kiosk/ticket/{token}?paper={paper}")
            pdf = tmp_path / f"ticket-{paper}.pdf"
            await page.pdf(path=str(pdf), prefer_css_page_size=True, print_background=True)
            info, text, codes = await asyncio.to_thread(printed, pdf)
            width_pt = float(info["Page size"].split()[0])
            print(f"\n{paper} mm ticket: {info['Page size']}, pages {info['Pages']}, QR {codes}")
            assert info["Pages"] == "1"  # the whole slip on one piece of the roll
            assert abs(width_pt * MM_PER_POINT - paper) < 0.5
            assert codes == [f"{PUBLIC}/s/{token}"]
            assert number in text and "Pencetakan KTP-el" in text
            assert "Layanan ini GRATIS." in text and "PRIORITAS" in text
            assert "hamil" not in text.lower()  # the mark, never the reason
            assert "Cetak" not in text and "Selesai" not in text  # buttons stay on the screen


async def test_a_loopback_status_link_is_flagged_to_staff_not_printed(
    settings: Settings, tmp_path: Path
) -> None:
    async with kiosk(settings.model_copy(update={"public_url": ""})) as (url, page):
        token = await walk_in(page, url, None)
        warning = page.locator("#qr-warning")
        assert await warning.is_visible()
        assert "GILIRAN_PUBLIC_URL" in await warning.inner_text()
        pdf = tmp_path / "ticket-loopback.pdf"
        await page.pdf(path=str(pdf), prefer_css_page_size=True)
        _info, text, codes = await asyncio.to_thread(printed, pdf)
        assert codes == [f"{url}/s/{token}"]  # what an unconfigured box prints: 127.0.0.1
        assert "GILIRAN_PUBLIC_URL" not in text and "PRIORITAS" not in text
