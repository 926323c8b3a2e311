"""Server push for boards and dashboards: a per-key change signal and the SSE stream over it."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import Gauge
from pydantic import BaseModel
from starlette.background import BackgroundTask

from giliran.auth.web import DEVICE_COOKIE, SESSION_COOKIE
from giliran.contracts.subjects import site_of
from giliran.hardening import client_key

HEARTBEAT_SECONDS = 15.0
# How long one rendering of a change is handed to the screens that ask for it: the burst of
# screens woken by one change, not a screen that connects minutes later.
RENDERING_REUSED_SECONDS = 1.0


class Changes:
    """A version number per key (a site, a request), bumped on every change; watchers wait for
    it to move. An event exists only while someone waits, so keys nobody watches cost an int."""

    def __init__(self, *, reuse_seconds: float = RENDERING_REUSED_SECONDS) -> None:
        self._versions: dict[str, int] = defaultdict(int)
        self._moved: dict[str, asyncio.Event] = {}
        # The latest rendering of each (key, view) and the version it shows: every stream of a
        # key gets it, rendered once however many screens watch (a site's TVs and tablets).
        self._rendered: dict[tuple[str, str], tuple[int, float, asyncio.Future[str]]] = {}
        self._reuse_seconds = reuse_seconds

    def version(self, key: str) -> int:
        return self._versions[key]

    def bump(self, key: str) -> None:
        self._versions[key] += 1
        moved = self._moved.pop(key, None)
        if moved is not None:
            moved.set()

    def bump_from_subject(self, subject: str) -> None:
        """For a bus watch: an event on giliran.<site>.… changes that site."""
        site = site_of(subject)
        if site is not None:
            self.bump(site)

    async def wait(self, key: str, seen: int, seconds: float) -> int:
        """The key's version once it differs from `seen`, or the same after `seconds`."""
        if self._versions[key] != seen:
            return self._versions[key]
        moved = self._moved.setdefault(key, asyncio.Event())
        try:
            async with asyncio.timeout(seconds):
                await moved.wait()
        except TimeoutError:
            pass
        return self._versions[key]

    async def rendered(
        self, key: str, view: str, version: int, render: Callable[[], Awaitable[str]]
    ) -> str:
        """`render()` of `key` at `version`, made once and shared by every caller asking for
        the same (key, view, version), also while it is being made. The caller guarantees that
        what `render` shows depends on the key alone, never on who asks."""
        now = time.monotonic()
        made = self._rendered.get((key, view))
        if made is None or made[0] < version or now - made[1] > self._reuse_seconds:
            # A view also shows what moves without a change (the clock, the session of the
            # hour, memory re-read from the store): a screen that connects long after the last
            # change gets a fresh rendering, not the one of that change.
            made = (version, now, asyncio.ensure_future(render()))
            self._rendered[(key, view)] = made
        elif made[0] > version:
            # A newer rendering is out already: this caller is behind, it renders its own.
            return await render()
        try:
            return await asyncio.shield(made[2])
        except Exception:
            if self._rendered.get((key, view)) is made:
                del self._rendered[(key, view)]  # the next caller tries again
            raise


# A refused stream may be asked for again this much later (an EventSource gives up on a 429;
# a page reloading later gets its stream).
STREAMS_RETRY_SECONDS = 30
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def credential_of(request: Request) -> str | None:
    """What a stream's viewer signed in with (an API token, a session or a device cookie), to
    count its streams: the same credential on many screens counts as one viewer."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header
    return request.cookies.get(SESSION_COOKIE) or request.cookies.get(DEVICE_COOKIE)


@dataclass
class StreamLimits:
    """Open server-push streams in this process, per client address and per credential: each
    holds a connection and a task for hours, so one address or one stolen token opening
    thousands would exhaust the process (docs/security.md)."""

    per_address: int
    per_credential: int
    _open: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def open_for(self, key: str) -> int:
        return self._open.get(key, 0)

    def admit(self, request: Request, credential: str | None) -> Callable[[], None] | None:
        """A release function for a new stream, or None when a limit is reached."""
        address = client_key(request) or "-"
        keys = [(f"address:{address}", self.per_address)]
        if credential:
            digest = hashlib.sha256(credential.encode()).hexdigest()[:32]
            keys.append((f"credential:{digest}", self.per_credential))
        if any(self._open.get(key, 0) >= limit for key, limit in keys):
            return None
        for key, _ in keys:
            self._open[key] += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            for key, _ in keys:
                self._open[key] -= 1
                if self._open[key] <= 0:
                    del self._open[key]

        return release


def too_many_streams() -> JSONResponse:
    body = {
        "error": {
            "code": "too_many_streams",
            "message_id": "Terlalu banyak tayangan langsung yang terbuka dari alamat atau akun ini."
            " Tutup salah satu lalu coba lagi.",
            "message_en": "Too many live streams are open from this address or credential. "
            "Close one and try again.",
        }
    }
    headers = {"Retry-After": str(STREAMS_RETRY_SECONDS)}
    return JSONResponse(body, status_code=429, headers=headers)


def limited_stream(
    request: Request,
    limits: StreamLimits | None,
    credential: str | None,
    chunks: Callable[[], AsyncIterator[str]],
) -> Response:
    """The SSE response over `chunks()`, or 429 (bilingual, Retry-After) when this address or
    credential already holds its share of open streams."""
    release = limits.admit(request, credential) if limits is not None else None
    if limits is not None and release is None:
        return too_many_streams()

    async def body() -> AsyncIterator[str]:
        try:
            async for chunk in chunks():
                yield chunk
        finally:
            if release is not None:
                release()

    # Released again (idempotent) once the response is over, also when the body never started.
    background = BackgroundTask(release) if release is not None else None
    return StreamingResponse(
        body(), media_type="text/event-stream", headers=SSE_HEADERS, background=background
    )


def sse_response(
    request: Request,
    changes: Changes,
    key: str,
    render: Callable[[], Awaitable[BaseModel]],
    *,
    event: str,
    coalesce_seconds: float = 0.0,
    connections: Gauge | None = None,
    still_allowed: Callable[[], Awaitable[bool]] | None = None,
    limits: StreamLimits | None = None,
    credential: str | None = None,
) -> Response:
    """Send `render()` now and after every change of `key`, with heartbeats in between; a
    browser's EventSource reconnects by itself after a drop or a restart and gets it anew.
    `connections` counts the streams open now (a board that went dark shows as a zero).
    `still_allowed` is asked before every update and heartbeat: once the viewer's credential
    is revoked the stream ends and sends nothing more (its reconnect is then refused).
    `limits`: at most so many open streams per address and per `credential` (429 beyond).
    `render` must show what every viewer of `key` may see, the same for all: one rendering per
    change is shared by all the key's streams (`Changes.rendered`)."""

    async def rendered_json() -> str:
        return (await render()).model_dump_json()

    async def events() -> AsyncIterator[str]:
        if connections is not None:
            connections.inc()
        try:
            async for chunk in stream():
                yield chunk
        finally:
            if connections is not None:
                connections.dec()

    async def stream() -> AsyncIterator[str]:
        seen = -1
        while not await request.is_disconnected():
            version = await changes.wait(key, seen, HEARTBEAT_SECONDS)
            if still_allowed is not None and not await still_allowed():
                return
            if version == seen:
                yield ": heartbeat\n\n"
                continue
            if coalesce_seconds:
                await asyncio.sleep(coalesce_seconds)  # one update for a burst of changes
            seen = changes.version(key)
            data = await changes.rendered(key, event, seen, rendered_json)
            yield f"event: {event}\ndata: {data}\n\n"

    return limited_stream(request, limits, credential, events)
