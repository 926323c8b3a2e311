"""Edge link drop: a hub and a site box (real nats-servers, configs from giliran_ops.edge) joined
through a TCP relay this script can cut. Both servers keep running while the link is down; the
site stores events and the hub an admin's calendar change meanwhile. Prints how long after the
link returned the hub held the site's events and the site held the hub's change, with and
without the caretakers (giliran_ops.edge.keep_hub / keep_site). Figures, never pass/fail.

    .venv/bin/python bench/edge_link.py --down 20 --events 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats

from giliran.bus import ensure_streams
from giliran.contracts.subjects import STREAM
from giliran_ops import edge
from giliran_ops.embedded import ManagedProcess, free_port, nats_server

SITE = "botram-setu"


class Relay:
    """A TCP relay standing for the site's internet link: stop() cuts every connection."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._join, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.close()
        self.writers = []

    async def _join(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hub_reader, hub_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers += [writer, hub_writer]
        for pipe in (self._pipe(reader, hub_writer), self._pipe(hub_reader, writer)):
            task = asyncio.create_task(pipe)
            self.pipes.add(task)
            task.add_done_callback(self.pipes.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()


async def until(check: Callable[[], Awaitable[bool]], within: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    return None


async def one_run(base: Path, down: float, events: int, caretakers: bool) -> None:
    leaf, relay_port = free_port(), free_port()
    (base / "hub.conf").write_text(edge.render_hub_config([SITE], leaf_port=leaf))
    (base / "site.conf").write_text(edge.render_site_config(SITE))
    password = {
        edge.leaf_password_variable(SITE): json.dumps("bench"),
        edge.HUB_PASSWORD_VARIABLE: json.dumps("bench-hub"),
    }
    url = f"nats-leaf://{edge.leaf_user(SITE)}:bench@127.0.0.1:{relay_port}"
    relay = Relay(relay_port, leaf)
    servers: list[ManagedProcess] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        hub = nats_server(base / "hub", config=base / "hub.conf", env={**os.environ, **password})
        servers.append(hub.start())
        await hub.wait_listening()
        await relay.start()
        site = nats_server(
            base / "site", config=base / "site.conf", env={**os.environ, edge.HUB_URL_VARIABLE: url}
        )
        servers.append(site.start())
        await site.wait_listening()
        hub_url = f"nats://{edge.HUB_USER}:bench-hub@127.0.0.1:{hub.port}"
        site_url = f"nats://127.0.0.1:{site.port}"
        hub_client, site_client = await nats.connect(hub_url), await nats.connect(site_url)
        hub_js, site_js = hub_client.jetstream(), site_client.jetstream()
        await edge.ensure_hub_streams(hub_js, [SITE])
        await ensure_streams(site_js)
        await edge.ensure_site_streams(site_js, SITE)
        if caretakers:
            tasks += [
                asyncio.create_task(edge.keep_hub(hub_url, [SITE])),
                asyncio.create_task(edge.keep_site(site_url, SITE)),
            ]
        subject = f"giliran.{SITE}.ticket.issued"
        for i in range(events):
            await site_js.publish(subject, b"{}", headers={"Nats-Msg-Id": f"before-{i}"})

        async def hub_has(count: int) -> bool:
            return (await hub_js.stream_info(STREAM)).state.messages == count

        assert await until(lambda: hub_has(events), 60) is not None, "no sourcing before the cut"
        await relay.stop()
        for i in range(events):
            await site_js.publish(subject, b"{}", headers={"Nats-Msg-Id": f"during-{i}"})
        await hub_js.publish(edge.catalogue_subject(SITE), b"{}", headers={"Nats-Msg-Id": "change"})
        await asyncio.sleep(down)
        await relay.start()

        async def site_has_change() -> bool:
            info = await site_js.stream_info(edge.CATALOGUE_STREAM)
            return info.state.messages == 1

        up, back = await asyncio.gather(
            until(lambda: hub_has(2 * events), 180), until(site_has_change, 180)
        )
        held = (await hub_js.stream_info(STREAM)).state.messages
        label = "with caretakers   " if caretakers else "without caretakers"
        print(
            f"{label}: link down {down:.0f} s; after it returned the hub held the site's "
            f"{2 * events} events in {_seconds(up)} (holds {held}), the site held the hub's "
            f"calendar change in {_seconds(back)}"
        )
        await hub_client.close()
        await site_client.close()
    finally:
        for task in tasks:
            task.cancel()
        await relay.stop()
        for server in reversed(servers):
            server.stop()


def _seconds(value: float | None) -> str:
    return "never (180 s)" if value is None else f"{value:.1f} s"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--down", type=float, default=20.0, help="seconds the link is cut")
    parser.add_argument("--events", type=int, default=200, help="events before and during")
    args = parser.parse_args()
    for caretakers in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            await one_run(Path(tmp), args.down, args.events, caretakers)


if __name__ == "__main__":
    asyncio.run(main())
