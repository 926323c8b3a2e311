"""A TV board in real headless Chromium (no Indonesian voice, as most TVs) started the way a paired
board is, with `--autoplay-policy=no-user-gesture-required`: calls are said by playing the box's
own WAV, one after another, and a call made while the board was offline is said once when it is
back. The audio the page fetched is captured and measured with Python's wave module and sox; the
page's own HTMLAudioElement reports when each clip ended."""

from __future__ import annotations

import asyncio
import io
import itertools
import math
import subprocess
import wave
from array import array
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, Response, async_playwright

from giliran.settings import Settings
from giliran_ops.cli import build_service
from giliran_ops.embedded import free_port
from tests.conftest import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    eventually,
    issue_token,
    publish,
    request_event,
    require_chromium,
    require_tools,
    serving,
)

pytestmark = pytest.mark.e2e
SITE = "cikarang-utara"
API = f"/api/v1/sites/{SITE}"
# What docs/devices.md tells a kecamatan to start the TV's Chromium with. (Headless Chromium
# plays without a press whatever the policy: this test cannot show that a TV needs the flag,
# only that a board started with it speaks with no press at all.)
PAIRED_BOARD_ARGS = ["--autoplay-policy=no-user-gesture-required"]


def sox_seconds(data: bytes) -> float:
    """The clip's length as sox reads it (an independent decoder)."""
    out = subprocess.run(
        ["sox", "-t", "wav", "-", "-n", "stat"], input=data, capture_output=True, check=True
    ).stderr.decode()
    line = next(x for x in out.splitlines() if x.startswith("Length (seconds)"))
    return float(line.split(":")[1])


def wave_seconds_and_rms(data: bytes) -> tuple[float, float]:
    with wave.open(io.BytesIO(data), "rb") as w:
        samples = array("h", w.readframes(w.getnframes()))
        seconds = w.getnframes() / w.getframerate()
    return seconds, math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768


async def said(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await page.evaluate("window.giliranAnnouncements")
    return found


async def test_the_board_says_each_call_with_the_boxs_voice(settings: Settings) -> None:
    require_chromium()
    require_tools("espeak-ng", "sox")
    ARTIFACTS.mkdir(exist_ok=True)
    events = [request_event(["KTP-REKAM"]) for _ in range(4)]
    # Two queue instances on the same store and bus (as when scaled out): the officers' calls go
    # to one, the TV's board is served by the other, which the test stops and starts again.
    desk_app, desk_runtime = build_service("queue", settings)
    board_port = free_port()
    async with (
        serving(desk_app, free_port()) as desk_url,
        board_instance(settings, board_port) as board,
        async_playwright() as playwright,
    ):
        await asyncio.wait_for(desk_runtime.bus_started.wait(), timeout=15)
        supervisor = await issue_token(settings, "supervisor", SITE)
        display = await issue_token(settings, "display", SITE, label="tv-1")
        async with httpx.AsyncClient(
            base_url=desk_url, timeout=20, headers={"Authorization": f"Bearer {supervisor}"}
        ) as http:
            for event in events:
                await publish(settings, event)
            await eventually(lambda: _issued(http, events), within=30)
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS + PAIRED_BOARD_ARGS
            )
            try:
                page = await browser.new_page(viewport={"width": 1920, "height": 1080})
                fetched: dict[str, bytes] = {}

                async def keep(response: Response) -> None:
                    if "/announcement.wav" in response.url and response.ok:
                        fetched[response.url.removeprefix(board.url)] = await response.body()

                page.on("response", keep)
                await page.goto(f"{board.url}/device?token={display}&next=/board%3Fsite%3D{SITE}")
                await page.wait_for_function(
                    "() => document.getElementById('status').textContent.startsWith('tersambung')"
                )
                # No press on the page: a paired board speaks by itself.
                for counter in ("1", "2", "3"):
                    r = await http.post(f"{API}/counters/{counter}/call-next")
                    assert r.status_code == 200, r.text
                await eventually(lambda: _finished(page, 3), within=60, interval=0.2)
                first = await said(page)
                assert not await page.is_visible("#sound")  # nobody had to enable sound

                # --- the board's server goes away while a call is made; back, it says it once
                await board.stop()
                await page.wait_for_function(
                    "() => document.getElementById('status').textContent.startsWith('terputus')",
                    timeout=15_000,
                )
                r = await http.post(f"{API}/counters/4/call-next")
                assert r.status_code == 200, r.text
                missed = r.json()["ticket"]["number"]
                await board.start()
                await eventually(lambda: _finished(page, 4), within=60, interval=0.2)
                await asyncio.sleep(3.0)  # further renders after reconnecting say nothing more
                announcements = await said(page)
                await page.screenshot(path=str(ARTIFACTS / "board-voice.png"))
            finally:
                await browser.close()

    assert [a["number"] for a in announcements].count(missed) == 1
    assert len(announcements) == 4 and announcements[:3] == first
    for before, after in itertools.pairwise(announcements):
        assert after["started"] >= before["ended"], "announcements overlapped"
    print()
    for entry in announcements:
        assert entry["mode"] == "server" and entry["how"] == "ended", entry
        data = fetched[entry["audio"]]
        seconds, loudness = wave_seconds_and_rms(data)
        by_sox = sox_seconds(data)
        played_ms = entry["ended"] - entry["started"]
        print(
            f"{entry['text']!r}: WAV {seconds:.2f} s (wave), {by_sox:.2f} s (sox), browser "
            f"duration {entry['duration']:.2f} s, played to 'ended' in {played_ms / 1000:.2f} s"
        )
        assert abs(by_sox - seconds) < 0.01 and abs(entry["duration"] - seconds) < 0.05
        assert seconds > 2.5 and loudness > 0.02  # a spoken sentence, not a click or silence
        # The page moved on only after the clip had played to its end.
        assert entry["played"] >= seconds - 0.05
        assert played_ms >= seconds * 1000 * 0.95


@dataclass
class BoardInstance:
    """The board's queue instance: stopped and started again on the same port."""

    settings: Settings
    port: int
    stack: AsyncExitStack | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app, runtime = build_service("queue", self.settings)
        self.stack = AsyncExitStack()
        await self.stack.enter_async_context(serving(app, self.port))
        await asyncio.wait_for(runtime.bus_started.wait(), timeout=15)

    async def stop(self) -> None:
        if self.stack is not None:
            await self.stack.aclose()
            self.stack = None


@asynccontextmanager
async def board_instance(settings: Settings, port: int) -> AsyncIterator[BoardInstance]:
    board = BoardInstance(settings, port)
    await board.start()
    try:
        yield board
    finally:
        await board.stop()


async def _issued(http: httpx.AsyncClient, events: list[Any]) -> bool:
    for event in events:
        r = await http.get(f"{API}/requests/{event.data.request_id}")
        if r.status_code != 200 or not r.json():
            return False
    return True


async def _finished(page: Page, n: int) -> bool:
    found = await said(page)
    return len(found) >= n and all(a["ended"] is not None for a in found)
