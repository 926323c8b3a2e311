"""The spoken call a board plays (ADR 0146), against real NATS, the embedded store and the real
eSpeak NG: a WAV that Python's wave module reads back as chime plus speech; only a called
ticket of the board's own site can be made to speak; a flood of one call is synthesized once."""

from __future__ import annotations

import asyncio
import io
import math
import wave
from array import array
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from giliran.auth import Role
from giliran.settings import Settings
from services.queue.voice import (
    CHIME_NOTE_SECONDS,
    CHIME_NOTES,
    MAKING_AT_MOST,
    PAUSE_SECONDS,
    Announcer,
    VoiceBusy,
)
from tests.conftest import eventually, publish, request_event, require_tools, running

pytestmark = pytest.mark.integration
SITE = "cikarang-utara"
API = f"/api/v1/sites/{SITE}"


def require_espeak() -> None:
    require_tools("espeak-ng")


def rms(samples: array[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / max(len(samples), 1)) / 32768


def decoded(data: bytes) -> tuple[float, array[int]]:
    """Seconds and samples of a WAV, read by Python's own wave module."""
    with wave.open(io.BytesIO(data), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        frames = w.readframes(w.getnframes())
        return w.getnframes() / w.getframerate(), array("h", frames)


async def called(http: httpx.AsyncClient, counter: str) -> dict[str, Any]:
    r = await http.post(f"{API}/counters/{counter}/call-next")
    assert r.status_code == 200, r.text
    ticket: dict[str, Any] = r.json()["ticket"]
    return ticket


def wav_path(ticket_id: str, site: str = SITE) -> str:
    return f"/api/v1/sites/{site}/calls/{quote(ticket_id, safe='')}/announcement.wav"


async def test_a_called_ticket_is_said_after_a_chime(settings: Settings) -> None:
    require_espeak()
    events = [request_event(["KTP-REKAM"]) for _ in range(3)]
    async with running("queue", settings) as svc:
        await issued(settings, svc.http, *events)
        ticket = await called(svc.http, "2")
        board = (await svc.http.get(f"{API}/board")).json()
        call = next(c for c in board["calls"] if c["number"] == ticket["number"])
        last = {"1": "satu", "2": "dua", "3": "tiga"}[call["number"][-1]]
        digits = f"nol nol {last}"
        assert call["spoken"] == f"Nomor antrean A {digits}, silakan ke loket dua"
        assert call["audio"] == wav_path(ticket["ticket_id"])

        r = await svc.http.get(call["audio"])
        assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
        seconds, samples = decoded(r.content)
        rate = 22_050
        chime_end = round((CHIME_NOTES[-1][1] + CHIME_NOTE_SECONDS) * rate)
        speech = samples[chime_end + round(PAUSE_SECONDS * rate) :]
        print(f"\nspoken call {call['spoken']!r}: {seconds:.2f} s (wave module)")
        # A sentence of eleven words takes seconds to say, and the speech is not silence.
        assert seconds > 2.5
        assert rms(samples[:chime_end]) > 0.02 and rms(speech) > 0.02
        announcer: Announcer = svc.app.state.announcer
        assert announcer.synthesized == 1


async def test_only_a_called_ticket_of_the_boards_own_site_speaks(settings: Settings) -> None:
    require_espeak()
    here, there = request_event(["KTP-REKAM"]), request_event(["KTP-REKAM"])
    waiting = request_event(["KIA"])
    async with running("queue", settings) as svc:
        await issued(settings, svc.http, here, there, waiting)
        ticket = await called(svc.http, "1")
        board_token = (await svc.runtime.accounts.issue_token("tv", Role.DISPLAY, SITE))[1]
        other_board = (
            await svc.runtime.accounts.issue_token("tv", Role.DISPLAY, "botram-babelan")
        )[1]
        as_board = {"Authorization": f"Bearer {board_token}"}
        as_other = {"Authorization": f"Bearer {other_board}"}
        anonymous = svc.anonymous

        assert (await anonymous.get(wav_path(ticket["ticket_id"]))).status_code == 401
        r = await anonymous.get(wav_path(ticket["ticket_id"]), headers=as_board)
        assert r.status_code == 200
        # Another site's board: not its site, whichever path it names.
        r = await anonymous.get(wav_path(ticket["ticket_id"]), headers=as_other)
        assert r.status_code == 403
        r = await anonymous.get(wav_path(ticket["ticket_id"], "botram-babelan"), headers=as_other)
        assert r.status_code == 404 and r.json()["error"]["message_id"]
        # A ticket still waiting is not announced (nobody makes the board call it early), and a
        # made-up id makes nothing speak.
        waiting_id = f"{waiting.data.request_id}-KIA"
        assert (await svc.http.get(f"/api/v1/tickets/{waiting_id}")).status_code == 200
        for tid in (waiting_id, "no-such-ticket", "../../board"):
            r = await anonymous.get(wav_path(tid), headers=as_board)
            assert r.status_code == 404, (tid, r.text)
        announcer: Announcer = svc.app.state.announcer
        assert announcer.synthesized == 1


async def test_a_flood_of_one_call_is_synthesized_once(settings: Settings) -> None:
    require_espeak()
    async with running("queue", settings) as svc:
        await issued(settings, svc.http, request_event(["KTP-REKAM"]))
        ticket = await called(svc.http, "3")
        path = wav_path(ticket["ticket_id"])
        replies = await asyncio.gather(*(svc.http.get(path) for _ in range(40)))
        assert {r.status_code for r in replies} == {200}
        assert len({r.content for r in replies}) == 1
        announcer: Announcer = svc.app.state.announcer
        assert announcer.synthesized == 1
        # A recall says the same sentence: served from the cache.
        r = await svc.http.post(f"{API}/counters/3/tickets/{ticket['ticket_id']}/recall")
        assert r.status_code == 200, r.text
        assert (await svc.http.get(wav_path(ticket["ticket_id"]))).content == replies[0].content
        assert announcer.synthesized == 1


async def test_without_espeak_the_board_is_told_in_both_languages(settings: Settings) -> None:
    without = settings.model_copy(update={"voice_command": "espeak-ng-not-installed"})
    async with running("queue", without) as svc:
        await issued(settings, svc.http, request_event(["KTP-REKAM"]))
        ticket = await called(svc.http, "1")
        r = await svc.http.get(wav_path(ticket["ticket_id"]))
        assert r.status_code == 503
        error = r.json()["error"]
        assert error["code"] == "voice_unavailable"
        assert "eSpeak NG" in error["message_id"] and "eSpeak NG" in error["message_en"]


async def issued(settings: Settings, http: httpx.AsyncClient, *events: Any) -> None:
    """Publish requests as intake would and wait until the queue has issued their tickets."""
    for event in events:
        await publish(settings, event)

    async def all_issued() -> bool:
        for event in events:
            r = await http.get(f"{API}/requests/{event.data.request_id}")
            if r.status_code != 200 or not r.json():
                return False
        return True

    await eventually(all_issued, within=20)


async def test_many_distinct_calls_at_once_are_refused_beyond_a_bound(tmp_path: Path) -> None:
    """A board credential can ask for any call of the day: distinct sentences beyond
    MAKING_AT_MOST are refused at once (503 voice_busy), not queued without bound behind the two
    eSpeak slots; the ones admitted are all spoken, and a refused one can be asked again."""
    require_espeak()
    slow = tmp_path / "slow-espeak-ng"  # the real eSpeak NG, half a second late each time
    slow.write_text('#!/bin/sh\nsleep 0.5\nexec espeak-ng "$@"\n')
    slow.chmod(0o755)
    announcer = Announcer(command=str(slow))
    sentences = [f"Nomor antrean A nol nol {n}, silakan ke loket satu" for n in range(12)]
    outcomes = await asyncio.gather(*(announcer.wav(s) for s in sentences), return_exceptions=True)
    busy = [o for o in outcomes if isinstance(o, VoiceBusy)]
    made = [o for o in outcomes if isinstance(o, bytes)]
    assert len(made) == MAKING_AT_MOST and len(busy) == len(sentences) - MAKING_AT_MOST
    assert announcer.synthesized == MAKING_AT_MOST
    assert busy[0].http_status == 503 and busy[0].message_id and busy[0].message_en
    # Once the burst is made, a refused sentence is spoken on the next ask.
    refused = sentences[outcomes.index(busy[0])]
    assert decoded(await announcer.wav(refused))[0] > 2.0
