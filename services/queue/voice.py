"""Spoken calls generated on the box: eSpeak NG's Indonesian voice behind a two-note chime, one
WAV per sentence, cached, for boards whose browser has no Indonesian voice (ADR 0146)."""

from __future__ import annotations

import asyncio
import io
import math
import shutil
import struct
import tempfile
import wave
from collections import OrderedDict
from pathlib import Path

from giliran.errors import DomainError

SAMPLE_RATE = 22_050  # eSpeak NG's own rate: the chime is made at it, nothing is resampled
CHIME_NOTES = ((659.25, 0.0), (523.25, 0.35))  # E5 then C5, the familiar "ding-dong"
CHIME_NOTE_SECONDS = 0.6
PAUSE_SECONDS = 0.25  # between the chime and the voice
VOICE = "id"
WORDS_PER_MINUTE = 140  # a little slower than eSpeak's 175: a hall echoes
# A call's WAV is ~260 kB (about 6 s of 16-bit mono at 22 050 Hz): 128 of them, ~33 MB at most,
# hold every recall and every board of a busy morning (a recall comes within minutes).
CACHED_SENTENCES = 128
SYNTH_AT_ONCE = 2  # the box has few cores; boards asking together wait rather than pile up
SYNTH_TIMEOUT_SECONDS = 10.0
# Distinct sentences being made at once (running or waiting for a slot). Any credential of a
# site may ask for any call of the day: beyond this, new sentences are refused at once instead
# of queueing without bound behind the two slots (a stolen TV cookie cannot pin both cores).
MAKING_AT_MOST = 8


class VoiceUnavailable(DomainError):
    http_status = 503
    code = "voice_unavailable"

    def __init__(self, why: str) -> None:
        super().__init__(
            "Suara panggilan tidak tersedia di server ini (eSpeak NG tidak terpasang atau "
            "gagal); nomor tetap ditampilkan di layar.",
            "Spoken calls are not available on this server (eSpeak NG is missing or failed); "
            "numbers are still shown on the board.",
        )
        self.why = why


def chime_pcm(rate: int = SAMPLE_RATE) -> bytes:
    """Two decaying sine notes, 16-bit mono little-endian, pure arithmetic (no audio library)."""
    total = round((CHIME_NOTES[-1][1] + CHIME_NOTE_SECONDS) * rate)
    samples = [0.0] * total
    length = round(CHIME_NOTE_SECONDS * rate)
    for frequency, start in CHIME_NOTES:
        offset = round(start * rate)
        for i in range(length):
            t = i / rate
            samples[offset + i] += 0.3 * math.exp(-6.0 * t) * math.sin(2 * math.pi * frequency * t)
    return struct.pack(f"<{total}h", *(round(max(-1.0, min(1.0, s)) * 32767) for s in samples))


def wav_bytes(pcm: bytes, rate: int = SAMPLE_RATE) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def read_pcm(data: bytes) -> tuple[bytes, int]:
    """The 16-bit mono frames and rate of a WAV file (what eSpeak NG writes)."""
    with wave.open(io.BytesIO(data), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise VoiceUnavailable(f"unexpected WAV: {w.getnchannels()} ch, {w.getsampwidth()} B")
        return w.readframes(w.getnframes()), w.getframerate()


class VoiceBusy(DomainError):
    http_status = 503
    code = "voice_busy"

    def __init__(self) -> None:
        super().__init__(
            "Server sedang menyiapkan banyak suara panggilan; coba lagi sebentar. Nomor tetap "
            "ditampilkan di layar.",
            "The server is preparing many spoken calls; try again shortly. Numbers are still "
            "shown on the board.",
        )


class Announcer:
    """Announcement WAVs by sentence: chime, pause, speech. The same sentence (a recall, a second
    board, a reload) is synthesized once; a few at a time, off the event loop (a subprocess)."""

    def __init__(self, command: str = "espeak-ng", cached: int = CACHED_SENTENCES) -> None:
        self._command = command
        self._cached = cached
        self._wavs: OrderedDict[str, bytes] = OrderedDict()
        self._making: dict[str, asyncio.Future[bytes]] = {}
        self._slots = asyncio.Semaphore(SYNTH_AT_ONCE)
        self._chime = chime_pcm()
        self.synthesized = 0  # how many sentences were actually spoken by eSpeak (tests read it)

    async def wav(self, sentence: str) -> bytes:
        if (found := self._wavs.get(sentence)) is not None:
            self._wavs.move_to_end(sentence)
            return found
        if (pending := self._making.get(sentence)) is not None:
            return await asyncio.shield(pending)
        if len(self._making) >= MAKING_AT_MOST:
            raise VoiceBusy()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._making[sentence] = future
        try:
            made = await self._make(sentence)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        finally:
            self._making.pop(sentence, None)
        future.set_result(made)
        self._wavs[sentence] = made
        while len(self._wavs) > self._cached:
            self._wavs.popitem(last=False)
        return made

    async def _make(self, sentence: str) -> bytes:
        binary = shutil.which(self._command)
        if binary is None:
            raise VoiceUnavailable(f"{self._command} not found")
        async with self._slots:
            speech = await self._speak(binary, sentence)
        pcm, rate = read_pcm(speech)
        if rate != SAMPLE_RATE:
            raise VoiceUnavailable(f"eSpeak NG wrote {rate} Hz, expected {SAMPLE_RATE}")
        pause = b"\0\0" * round(PAUSE_SECONDS * SAMPLE_RATE)
        self.synthesized += 1
        return wav_bytes(self._chime + pause + pcm)

    async def _speak(self, binary: str, sentence: str) -> bytes:
        # A file, not --stdout: eSpeak NG's streamed WAV header carries no length.
        with tempfile.TemporaryDirectory(prefix="giliran-voice-") as tmp:
            out = Path(tmp) / "speech.wav"
            process = await asyncio.create_subprocess_exec(
                binary,
                "-v",
                VOICE,
                "-s",
                str(WORDS_PER_MINUTE),
                "-w",
                str(out),
                "--stdin",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                async with asyncio.timeout(SYNTH_TIMEOUT_SECONDS):
                    _, err = await process.communicate(sentence.encode())
            except TimeoutError:
                process.kill()
                await process.wait()
                raise VoiceUnavailable("eSpeak NG timed out") from None
            if process.returncode != 0 or not out.exists():
                raise VoiceUnavailable(f"eSpeak NG exit {process.returncode}: {err[:200]!r}")
            return await asyncio.to_thread(out.read_bytes)
