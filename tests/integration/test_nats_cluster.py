"""The NATS configuration of deploy/k8s/ as a real 3-node JetStream cluster on this machine
(only the addresses and directories changed): a service, on its own restricted user, keeps the
streams on 3 copies (GILIRAN_STREAM_REPLICAS), a restart does not scale them down, and events
are still accepted with one node killed."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
import yaml
from nats.js.api import StreamInfo

from giliran.bus import ensure_streams, publish_event
from giliran.catalogue import load_catalogue
from giliran.contracts.subjects import STREAM, STREAM_OWNER
from giliran.settings import REPO_ROOT, SERVICES, Settings
from giliran_ops.embedded import ManagedProcess, free_port, nats_server_binary
from giliran_ops.natsauth import all_users, server_environment
from tests.conftest import eventually, request_event

pytestmark = pytest.mark.integration

NODES = 3


def _k8s_config() -> str:
    docs = yaml.safe_load_all((REPO_ROOT / "deploy/k8s/base/nats.yaml").read_text("utf-8"))
    config = next(d for d in docs if d and d["metadata"]["name"] == "nats-config")
    text: str = config["data"]["nats.conf"]
    return text


def _local(config: str, node: int, clients: list[int], routes: list[int], data: Path) -> str:
    """The pod's nats.conf with this machine's addresses: same cluster, same include."""
    for i, port in enumerate(routes):
        config = re.sub(rf"nats://nats-{i}\.nats-headless:6222", f"nats://127.0.0.1:{port}", config)
    config = config.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{clients[node]}")
    config = config.replace("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{routes[node]}")
    config = re.sub(r"http: 0\.0\.0\.0:8222", f"http: 127.0.0.1:{free_port()}", config)
    config = config.replace("/data", str(data))
    assert "nats-headless" not in config and "0.0.0.0" not in config
    return config


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[ManagedProcess], dict[str, str]]]:
    users = all_users(SERVICES, load_catalogue(Settings().catalogue_dir).sites)
    passwords = {user: secrets.token_urlsafe(12) for user in users}
    clients = [free_port() for _ in range(NODES)]
    routes = [free_port() for _ in range(NODES)]
    auth = (REPO_ROOT / "deploy/nats/giliran.conf").read_bytes()
    nodes: list[ManagedProcess] = []
    for i in range(NODES):
        root = tmp_path / f"nats-{i}"
        (root / "etc/nats").mkdir(parents=True)
        (root / "etc/nats-auth").mkdir(parents=True)
        (root / "data").mkdir()
        (root / "etc/nats-auth/giliran.conf").write_bytes(auth)
        conf = root / "etc/nats/nats.conf"
        conf.write_text(_local(_k8s_config(), i, clients, routes, root / "data"), "utf-8")
        env = {**os.environ, **server_environment(passwords), "POD_NAME": f"nats-{i}"}
        args = [nats_server_binary(), "-c", str(conf)]
        node = ManagedProcess(f"nats-{i}", args, "127.0.0.1", clients[i], root / "log", env=env)
        nodes.append(node.start())
    try:
        for node in nodes:
            asyncio.run(node.wait_listening())
        yield nodes, passwords
    finally:
        for node in nodes:
            node.stop()


async def _stream(url: str, user: str, password: str) -> StreamInfo | None:
    try:
        client = await nats.connect(
            url, user=user, password=password, inbox_prefix=f"_INBOX.{user}", connect_timeout=2
        )
    except Exception:
        return None
    try:
        js = client.jetstream(timeout=5)
        # As the service would: only the stream owner reshapes an existing stream (ADR 0111).
        await ensure_streams(js, 3, configure=user == STREAM_OWNER)
        return await js.stream_info(STREAM)
    except Exception:
        return None
    finally:
        await client.close()


async def test_streams_live_on_three_nodes_and_survive_one(
    cluster: tuple[list[ManagedProcess], dict[str, str]],
) -> None:
    nodes, passwords = cluster
    urls = [f"nats://127.0.0.1:{node.port}" for node in nodes]
    # As the queue service would at start-up (its restricted user), once the cluster has a
    # meta leader.
    info: StreamInfo = await eventually(
        lambda: _stream(urls[0], "queue", passwords["queue"]), within=60, interval=0.5
    )
    assert info.config.num_replicas == 3
    assert info.cluster is not None and len(info.cluster.replicas or []) == NODES - 1

    # Another service starting later (intake, on another node) leaves three copies.
    again = await _stream(urls[1], "intake", passwords["intake"])
    assert again is not None and again.config.num_replicas == 3

    # One node gone: the other two are a quorum and still store events.
    nodes[0].kill()
    event = request_event(["KIA"])
    client = await nats.connect(
        urls[2], user="intake", password=passwords["intake"], inbox_prefix="_INBOX.intake"
    )
    try:
        js = client.jetstream(timeout=5)

        async def published() -> bool:
            try:
                await publish_event(js, event.to_json_dict())
            except Exception:
                return False
            return True

        await eventually(published, within=30, interval=0.5)
        state = await js.stream_info(STREAM)
        assert state.state.messages == 1
    finally:
        await client.close()
