"""A stolen site box (its leaf credentials, its own nats-server reconfigured at will) cannot
publish another site's calendar changes or events at the kabupaten hub, nor use the hub's
JetStream API beyond sourcing its own; the honest flows (events up, calendar changes down)
still work. Real nats-servers: the hub, two site boxes and the thief, on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from giliran.bus import ensure_streams
from giliran.contracts.subjects import STREAM
from giliran.settings import Settings
from giliran_ops import edge
from giliran_ops.embedded import ManagedProcess, free_port, nats_server
from tests.conftest import eventually, publish_many, request_event

pytestmark = pytest.mark.integration

SITE, OTHER = "botram-setu", "cikarang-utara"


@dataclass
class Kabupaten:
    hub_url: str
    site_urls: dict[str, str]
    leaf_port: int
    passwords: dict[str, str]


@asynccontextmanager
async def kabupaten(tmp: Path) -> AsyncIterator[tuple[Kabupaten, list[ManagedProcess]]]:
    leaf_port = free_port()
    passwords = {site: secrets.token_hex(16) for site in (SITE, OTHER)}
    hub_password = secrets.token_hex(16)
    config = edge.render_hub_config([SITE, OTHER], leaf_port=leaf_port)
    (tmp / "hub.conf").write_text(config.replace("0.0.0.0", "127.0.0.1"))
    env = {
        **os.environ,
        **{edge.leaf_password_variable(s): json.dumps(p) for s, p in passwords.items()},
        edge.HUB_PASSWORD_VARIABLE: json.dumps(hub_password),
    }
    processes = [nats_server(tmp / "hub", config=tmp / "hub.conf", env=env).start()]
    try:
        await processes[0].wait_listening()
        hub_url = f"nats://{edge.HUB_USER}:{hub_password}@127.0.0.1:{processes[0].port}"
        site_urls = {}
        for site, password in passwords.items():
            (tmp / f"{site}.conf").write_text(edge.render_site_config(site))
            url = f"nats-leaf://{edge.leaf_user(site)}:{password}@127.0.0.1:{leaf_port}"
            box = nats_server(
                tmp / site,
                config=tmp / f"{site}.conf",
                env={**os.environ, edge.HUB_URL_VARIABLE: url},
            ).start()
            processes.append(box)
            await box.wait_listening()
            site_urls[site] = f"nats://127.0.0.1:{box.port}"
        yield Kabupaten(hub_url, site_urls, leaf_port, passwords), processes
    finally:
        for process in reversed(processes):
            process.stop()


async def _messages(url: str, stream: str) -> int:
    client = await nats.connect(url)
    try:
        return (await client.jetstream().stream_info(stream)).state.messages
    finally:
        await client.close()


async def test_a_stolen_site_box_cannot_speak_for_another_site_at_the_hub(tmp_path: Path) -> None:
    async with kabupaten(tmp_path) as (k, processes):
        # The streams as `giliran up --site` / `giliran hub` make them, and their caretakers.
        for site, url in k.site_urls.items():
            client = await nats.connect(url)
            await ensure_streams(client.jetstream())
            await edge.ensure_site_streams(client.jetstream(), site)
            await client.close()
        hub = await nats.connect(k.hub_url)
        await edge.ensure_hub_streams(hub.jetstream(), [SITE, OTHER])
        keepers = [asyncio.create_task(edge.keep_hub(k.hub_url, [SITE, OTHER], every=0.5))]
        keepers += [
            asyncio.create_task(edge.keep_site(url, site, every=0.5))
            for site, url in k.site_urls.items()
        ]
        try:
            # Honest flows: each site's event reaches the hub; each site's calendar change
            # reaches that site.
            for site, url in k.site_urls.items():
                await publish_many(Settings(nats_url=url), [request_event(["KIA"], site=site)])
                await hub.jetstream().publish(
                    edge.catalogue_subject(site), json.dumps({"genuine": site}).encode()
                )
            await eventually(lambda: _at_least(k.hub_url, STREAM, 2), within=60)
            for url in k.site_urls.values():
                await eventually(lambda u=url: _at_least(u, edge.CATALOGUE_STREAM, 1), within=60)  # type: ignore[misc]

            # The thief: the stolen box's leaf credentials on a server of its own, without the
            # honest box's deny rules, claiming the other site's JetStream domain.
            (tmp_path / "thief.conf").write_text(
                f'jetstream {{ domain: "{OTHER}" }}\n'
                f'leafnodes {{ remotes: [ {{ url: "nats-leaf://{edge.leaf_user(SITE)}:'
                f'{k.passwords[SITE]}@127.0.0.1:{k.leaf_port}" }} ] }}\n'
            )
            thief_server = nats_server(tmp_path / "thief", config=tmp_path / "thief.conf").start()
            processes.append(thief_server)
            await thief_server.wait_listening()
            thief = await nats.connect(f"nats://127.0.0.1:{thief_server.port}")
            await eventually(lambda: _linked(thief), within=20)
            hub_catalogue = await _messages(k.hub_url, edge.CATALOGUE_STREAM)
            hub_events = await _messages(k.hub_url, STREAM)
            # A calendar change for the other site, and events in the other site's name.
            await thief.publish(edge.catalogue_subject(OTHER), b'{"forged": "cancel"}')
            await thief.publish(f"giliran.{OTHER}.ticket.called", b"{}")
            await thief.flush()
            # The hub's JetStream API: purge the kabupaten's history, reshape it, read it.
            answered = []
            for verb in ("STREAM.PURGE", "STREAM.UPDATE", "STREAM.INFO", "STREAM.DELETE"):
                try:
                    await thief.request(f"$JS.{edge.HUB_DOMAIN}.API.{verb}.{STREAM}", b"{}", 2)
                    answered.append(verb)
                except Exception:  # refused at the hub: no responder is ever reached
                    pass
            await asyncio.sleep(2)  # what would have arrived has arrived
            assert answered == [], f"the hub answered a stolen box: {answered}"
            assert await _messages(k.hub_url, edge.CATALOGUE_STREAM) == hub_catalogue
            assert await _messages(k.hub_url, STREAM) >= hub_events  # nothing purged
            other_copy = await _messages(k.site_urls[OTHER], edge.CATALOGUE_STREAM)
            assert other_copy == 1, "the other site received a forged calendar change"
            await thief.close()
        finally:
            for keeper in keepers:
                keeper.cancel()
            await hub.close()


async def _at_least(url: str, stream: str, count: int) -> bool:
    try:
        return await _messages(url, stream) >= count
    except Exception:
        return False


async def _linked(client: nats.NATS) -> bool:
    """The thief's server has its leaf connection to the hub (the hub's INFO answers)."""
    try:
        await client.request(f"$JS.{edge.HUB_DOMAIN}.API.INFO", b"", timeout=1)
    except Exception:
        return False
    return True


async def test_a_stolen_site_box_cannot_read_or_answer_the_hubs_own_processes(
    tmp_path: Path,
) -> None:
    """The hub's intake and reporting fetch the kabupaten's events (every site's) into their
    reply inboxes (`_INBOX.<service>.…`): a leaf user that may subscribe to `_INBOX.>` at the
    hub had them all copied to the stolen box, and could slip answers into them. Only the
    caretakers' plain inboxes cross the leaf link."""
    async with kabupaten(tmp_path) as (k, processes):
        (tmp_path / "thief.conf").write_text(
            f'leafnodes {{ remotes: [ {{ url: "nats-leaf://{edge.leaf_user(SITE)}:'
            f'{k.passwords[SITE]}@127.0.0.1:{k.leaf_port}" }} ] }}\n'
        )
        thief_server = nats_server(tmp_path / "thief", config=tmp_path / "thief.conf").start()
        processes.append(thief_server)
        await thief_server.wait_listening()
        thief = await nats.connect(f"nats://127.0.0.1:{thief_server.port}")
        hub = await nats.connect(k.hub_url)
        try:
            await eventually(lambda: _linked(thief), within=20)
            stolen = []
            for prefix in ("_INBOX.reporting", "_INBOX.intake", f"_INBOX.{edge.HUB_USER}"):
                stolen.append(await thief.subscribe(f"{prefix}.>"))
            await thief.flush()
            at_hub = await hub.subscribe("_INBOX.reporting.>")
            await hub.flush()
            await asyncio.sleep(2)  # the thief's interest has reached the hub, if allowed
            # What the hub's JetStream hands its reporting (here: a stand-in sent at the hub).
            await hub.publish("_INBOX.reporting.fetch.1", b'{"type": "request.submitted"}')
            await hub.flush()
            await asyncio.sleep(2)  # what would have arrived has arrived
            copied = sum(sub.pending_msgs for sub in stolen)
            assert copied == 0, "the stolen box read the hub's own processes' inboxes"
            for sub in stolen:  # (its own publish below would land in them on its server)
                await sub.unsubscribe()
            # And an answer slipped into the hub's reporting's inbox from the stolen box.
            await thief.publish("_INBOX.reporting.fetch.2", b'{"forged": true}')
            await thief.flush()
            await asyncio.sleep(2)
            received = []
            while at_hub.pending_msgs:
                received.append((await at_hub.next_msg(timeout=1)).data)
            assert received == [b'{"type": "request.submitted"}'], received
            # The caretakers' plain inboxes still cross: the hub's JetStream answers the box.
            assert await _linked(thief)
        finally:
            await thief.close()
            await hub.close()
