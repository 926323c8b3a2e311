"""Server push for boards and dashboards: a per-key change signal and the SSE stream over it."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse
from prometheus_client import Gauge
from pydantic import BaseModel

from giliran.contracts.subjects import site_of

HEARTBEAT_SECONDS = 15.0


class Changes:
    """A version number per key (a site, a request), bumped on every change; watchers wait for
    it to move. An event exists only while someone waits, so keys nobody watches cost an int."""

    def __init__(self) -> None:
        self._versions: dict[str, int] = defaultdict(int)
        self._moved: dict[str, asyncio.Event] = {}

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
) -> StreamingResponse:
    """Send `render()` now and after every change of `key`, with heartbeats in between; a
    browser's EventSource reconnects by itself after a drop or a restart and gets it anew.
    `connections` counts the streams open now (a board that went dark shows as a zero).
    `still_allowed` is asked before every update and heartbeat: once the viewer's credential
    is revoked the stream ends and sends nothing more (its reconnect is then refused)."""

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
            view = await render()
            yield f"event: {event}\ndata: {view.model_dump_json()}\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
