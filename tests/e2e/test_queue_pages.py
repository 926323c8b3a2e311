"""The counter console and the waiting-room board in real headless Chromium: the console's
buttons drive a ticket through its life; the board shows a call within a second of the click,
announces calls one at a time, and keeps working (missing no call) after the queue restarts."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, async_playwright

from giliran.settings import Settings
from tests.conftest import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    add_account,
    eventually,
    issue_token,
    publish,
    request_event,
    require_chromium,
    service_process,
    sign_in,
)

pytestmark = pytest.mark.e2e
SITE = "cikarang-utara"
API = f"/api/v1/sites/{SITE}"


async def text_becomes(page: Page, selector: str, text: str, timeout_ms: int = 10_000) -> float:
    started = time.monotonic()
    await page.wait_for_function(
        "([s, t]) => document.querySelector(s)?.textContent.trim() === t",
        arg=[selector, text],
        timeout=timeout_ms,
    )
    return time.monotonic() - started


async def announcements(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await page.evaluate("window.giliranAnnouncements")
    return found


async def _ready(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def _tickets(http: httpx.AsyncClient, request_ids: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for request_id in request_ids:
        found += (await http.get(f"{API}/requests/{request_id}")).json()
    return found


async def test_console_and_board(settings: Settings, tmp_path: Path) -> None:
    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    queue = service_process("queue", settings, tmp_path).start()
    port = queue.port
    url = f"http://127.0.0.1:{port}"
    events = [request_event(["KTP-REKAM"]) for _ in range(4)] + [request_event(["KIA"])]
    ids = [e.data.request_id for e in events]
    try:
        await queue.wait_listening()
        # A supervisor's API token for the test's own calls; a display token for the board;
        # an officer who signs in at the console.
        supervisor = await issue_token(settings, "supervisor", SITE)
        display = await issue_token(settings, "display", SITE, label="board-1")
        await add_account(settings, "petugas1", "rahasia-loket-1", "officer", SITE)
        async with (
            httpx.AsyncClient(
                base_url=url, timeout=10, headers={"Authorization": f"Bearer {supervisor}"}
            ) as http,
            async_playwright() as playwright,
        ):
            await eventually(lambda: _ready(http), within=30)
            for event in events:
                await publish(settings, event)
            await eventually(lambda: _count_at_least(http, ids, 5), within=30)
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            board = await browser.new_page(viewport={"width": 1920, "height": 1080})
            console = await browser.new_page(viewport={"width": 1024, "height": 700})
            await board.goto(f"{url}/device?token={display}&next=/board%3Fsite%3D{SITE}")
            assert board.url.endswith(f"/board?site={SITE}")  # the token left the address bar
            await board.wait_for_function(
                "() => document.getElementById('status').textContent.startsWith('tersambung')"
            )
            await sign_in(
                console, url, "petugas1", "rahasia-loket-1", f"/console?site={SITE}&counter=1"
            )
            assert "/console" in console.url

            # --- the console drives one ticket through its life --------------------------
            clicked = time.monotonic()
            await console.click("#call-next")
            await text_becomes(console, "#number", "A-001")
            shown = await text_becomes(board, "#now-number", "A-001")
            print(
                f"\nconsole click → board shows A-001: {(time.monotonic() - clicked) * 1000:.0f} ms"
            )
            assert shown < 1.0 and time.monotonic() - clicked < 1.0  # within a second of the click
            said = await announcements(board)
            assert [a["number"] for a in said] == ["A-001"]
            assert said[0]["text"] == "Nomor antrean A nol nol satu, silakan ke loket satu"
            await console.screenshot(path=str(ARTIFACTS / "console-called.png"))
            await board.screenshot(path=str(ARTIFACTS / "board-called.png"))

            await console.keyboard.press("r")  # recall by shortcut
            await console.wait_for_function(
                "() => document.getElementById('meta').textContent.includes('1×')"
            )
            await eventually(lambda: _said_count(board, 2), within=20)  # a recall is said again
            await console.click("#start")
            await console.wait_for_function(
                "() => document.getElementById('meta').textContent.includes('dilayani')"
            )
            await console.select_option("#outcome", "documents_incomplete")
            await console.click("#complete")
            await text_becomes(console, "#number", "–")
            first = await _numbered(http, ids, "A-001")
            assert first["status"] == "completed" and first["outcome"] == "documents_incomplete"
            # English toggle
            await console.click("#lang")
            await text_becomes(console, "#call-next span", "Call next")
            await console.click("#lang")

            # --- transfer from the console: the ticket moves to the KIA line -------------
            await console.click("#call-next")
            await text_becomes(console, "#number", "A-002")
            await console.select_option("#to-service", "KIA")
            await console.click("#transfer")
            await text_becomes(console, "#number", "–")
            second = await _numbered(http, ids, "A-002")
            assert second["status"] == "transferred"
            moved = (await http.get(f"/api/v1/tickets/{second['ticket_id']}~KIA")).json()["ticket"]
            assert moved["status"] == "waiting" and moved["number"] == "A-002"

            # --- calls from three counters at once are announced one at a time -----------
            for counter in ("2", "3", "4"):
                r = await http.post(f"{API}/counters/{counter}/call-next")
                assert r.status_code == 200, r.text
            # Each call is played to its end (~6 s of chime and speech, test_board_voice.py).
            await eventually(lambda: _said_count(board, 5, finished=True), within=90)
            said = await announcements(board)
            for before, after in itertools.pairwise(said):
                assert after["started"] >= before["ended"], "announcements overlapped"

            # --- kill -9 the queue; a call made while the board is disconnected is not lost
            queue.kill()
            await board.wait_for_function(
                "() => document.getElementById('status').textContent.startsWith('terputus')",
                timeout=10_000,
            )
            queue = service_process("queue", settings, tmp_path, port=port).start()
            await queue.wait_listening()
            await eventually(lambda: _ready(http), within=30)
            for counter in ("2", "3", "4"):
                current = (await http.get(f"{API}/counters/{counter}")).json()["current"]
                if current:
                    await http.post(
                        f"{API}/counters/{counter}/tickets/{current['ticket']['ticket_id']}/complete"
                    )
            r = await http.post(f"{API}/counters/2/call-next")
            assert r.status_code == 200, r.text
            number = r.json()["ticket"]["number"]
            await text_becomes(board, "#now-number", number, timeout_ms=15_000)
            await eventually(lambda: _said_number(board, number), within=15)
            await board.screenshot(path=str(ARTIFACTS / "board-after-restart.png"))
            await browser.close()
    finally:
        queue.stop()


async def _numbered(http: httpx.AsyncClient, ids: list[str], number: str) -> dict[str, Any]:
    """Requests are issued concurrently, so look the ticket up by its number."""
    return next(t for t in await _tickets(http, ids) if t["number"] == number)


async def _count_at_least(http: httpx.AsyncClient, ids: list[str], n: int) -> bool:
    return len(await _tickets(http, ids)) >= n


async def _said_count(page: Page, n: int, *, finished: bool = False) -> bool:
    said = await announcements(page)
    return len(said) >= n and (not finished or all(a["ended"] is not None for a in said))


async def _said_number(page: Page, number: str) -> bool:
    return any(a["number"] == number for a in await announcements(page))
