"""Who a token is, remembered by each process (ADR 0180): one store read per credential instead
of one per request, and still a revoked token stops working at once in another process."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from giliran.auth import AuthStore, Principal, Role
from giliran.auth.credentials import REMEMBERED, Remembered
from giliran.auth.epochs import KvEpochs
from giliran.contracts import utcnow
from giliran.settings import Settings
from giliran.store import connect
from tests.conftest import eventually, nats_client, running, service_process

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
COUNTER = f"/api/v1/sites/{SITE}/counters/1"
TOKEN_READS = 'giliran_store_commands_total{collection="tokens",command="find"}'


def _reads(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(TOKEN_READS + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _cli(settings: Settings, *args: str, nats_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GILIRAN_MONGO_URL": settings.mongo_url,
        "GILIRAN_DB_PREFIX": settings.db_prefix,
        "GILIRAN_NATS_URL": nats_url,
    }
    command = [sys.executable, "-m", "giliran_ops.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


async def _ready(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/readyz")).status_code == 200
    except httpx.HTTPError:
        await asyncio.sleep(0.1)
        return False


async def test_a_token_is_read_once_and_a_revocation_elsewhere_ends_it_at_once(
    settings: Settings, tmp_path: Path
) -> None:
    client = connect(settings.mongo_url)
    store = AuthStore(client[settings.auth_database])
    await store.ensure_indexes()
    token_id, token = await store.issue_token("loket-1", Role.OFFICER, SITE)
    _, other_id_token = await store.issue_token("loket-2", Role.OFFICER, SITE)
    await client.close()
    queue = service_process("queue", settings, tmp_path).start()
    try:
        await queue.wait_listening()
        url = f"http://127.0.0.1:{queue.port}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            await eventually(lambda: _ready(http), within=30)
            auth = {"Authorization": f"Bearer {token}"}
            before = _reads((await http.get("/metrics")).text)
            for _ in range(5):
                assert (await http.get(COUNTER, headers=auth)).status_code == 200
            assert _reads((await http.get("/metrics")).text) == before + 1

            # Revoked by the operator's CLI, another process: refused by the queue at once.
            revoked = _cli(settings, "accounts", "revoke", token_id, nats_url=settings.nats_url)
            assert revoked.returncode == 0, revoked.stderr
            refused = await http.get(COUNTER, headers=auth)
            assert refused.status_code == 401, refused.text
            # The other token is read again, and still works.
            other = {"Authorization": f"Bearer {other_id_token}"}
            assert (await http.get(COUNTER, headers=other)).status_code == 200
    finally:
        queue.stop()


async def test_a_revocation_that_cannot_be_announced_says_when_it_takes_effect(
    settings: Settings,
) -> None:
    client = connect(settings.mongo_url)
    store = AuthStore(client[settings.auth_database])
    await store.ensure_indexes()
    token_id, _ = await store.issue_token("loket-1", Role.OFFICER, SITE)
    await client.close()
    revoked = _cli(settings, "accounts", "revoke", token_id, nats_url="nats://127.0.0.1:9")
    assert revoked.returncode == 0, revoked.stderr
    assert "within 30 s" in revoked.stderr and "dalam 30 detik" in revoked.stderr


async def test_made_up_tokens_are_never_remembered_and_each_is_refused(
    settings: Settings,
) -> None:
    async with running("queue", settings) as svc:
        REMEMBERED.forget_all()
        for _ in range(200):
            forged = {"Authorization": f"Bearer gl_{secrets.token_urlsafe(32)}"}
            assert (await svc.anonymous.get(COUNTER, headers=forged)).status_code == 401
        assert len(REMEMBERED) == 0


async def test_a_logout_or_new_password_ends_the_session_in_memory_too(
    settings: Settings,
) -> None:
    async with running("queue", settings) as svc:
        accounts = svc.runtime.accounts
        await accounts.add_user("budi", "rahasia-budi-1", Role.OFFICER, SITE)
        user = await accounts.authenticate("budi", "rahasia-budi-1")
        assert user is not None
        first, second = await accounts.open_session(user), await accounts.open_session(user)
        assert await accounts.by_session(first) is not None  # now remembered
        assert await accounts.by_session(second) is not None
        await accounts.close_session(first)
        assert await accounts.by_session(first) is None
        assert await accounts.by_session(second) is not None
        await accounts.set_password("budi", "another-pass-2")
        assert await accounts.by_session(second) is None


def test_memory_holds_a_credential_no_longer_than_its_end_or_its_time() -> None:
    who = Principal("budi", Role.OFFICER, SITE, "session", "s")
    memory = Remembered(seconds=0.05)
    memory.put("ended", who, utcnow() - timedelta(seconds=1))
    memory.put("open", who, utcnow() + timedelta(hours=1))
    memory.put("token", who)
    assert memory.get("ended") is None
    assert memory.get("open") is who and memory.get("token") is who
    time.sleep(0.06)
    assert memory.get("open") is None and memory.get("token") is None


async def test_an_action_asks_the_store_once_the_epoch_moved_even_before_the_notice_arrives(
    settings: Settings,
) -> None:
    async with running("queue", settings) as svc:
        accounts = svc.runtime.accounts
        assert accounts.epochs is not None
        token_id, token = await accounts.issue_token("loket-1", Role.OFFICER, SITE)
        auth = {"Authorization": f"Bearer {token}"}
        before = _reads((await svc.http.get("/metrics")).text)
        for _ in range(3):  # actions: the first reads the store, the others trust the memory
            acted = await svc.anonymous.post(f"{COUNTER}/call-next", headers=auth)
            assert acted.status_code in (200, 204), acted.text
        assert _reads((await svc.http.get("/metrics")).text) == before + 1
        # Revoked by another process, whose notice is still on its way: it has only advanced
        # the epoch (over its own NATS connection), as AuthStore does before it answers.
        await accounts.tokens.update_one({"_id": token_id}, {"$set": {"revoked": True}})
        async with nats_client(settings) as nc:
            await (await KvEpochs.open(nc, nc.jetstream())).advance()
        acted = await svc.anonymous.post(f"{COUNTER}/call-next", headers=auth)
        assert acted.status_code == 401, acted.text
        # A read may still be answered from memory until the notice (or 30 s) comes.
        assert (await svc.anonymous.get(COUNTER, headers=auth)).status_code == 200


async def test_without_the_epoch_every_action_asks_the_store(settings: Settings) -> None:
    """NATS away (or a process that cannot read the epoch): the memory never decides an action."""
    async with running("queue", settings) as svc:
        accounts = svc.runtime.accounts
        token_id, token = await accounts.issue_token("loket-1", Role.OFFICER, SITE)
        auth = {"Authorization": f"Bearer {token}"}
        accounts.epochs = Unknown()
        before = _reads((await svc.http.get("/metrics")).text)
        for _ in range(3):
            acted = await svc.anonymous.post(f"{COUNTER}/call-next", headers=auth)
            assert acted.status_code in (200, 204), acted.text
        assert _reads((await svc.http.get("/metrics")).text) == before + 3
        # Revoked behind the services' back, no epoch, no notice: the next action is refused.
        await accounts.tokens.update_one({"_id": token_id}, {"$set": {"revoked": True}})
        acted = await svc.anonymous.post(f"{COUNTER}/call-next", headers=auth)
        assert acted.status_code == 401, acted.text


class Unknown:
    """An epoch that cannot be read, as when the NATS connection is down."""

    async def current(self) -> int | None:
        return None

    async def advance(self) -> None:
        raise ConnectionError("NATS is not connected")


async def test_a_credential_found_under_an_older_epoch_is_not_trusted_by_an_action(
    settings: Settings,
) -> None:
    """The epoch is read before the store: a revocation landing between the two leaves the
    credential remembered under the older epoch, so the next action reads it again."""
    async with running("queue", settings) as svc:
        accounts = svc.runtime.accounts
        assert accounts.epochs is not None
        token_id, token = await accounts.issue_token("loket-1", Role.OFFICER, SITE)
        real = accounts.epochs

        class RevokedMeanwhile:
            async def current(self) -> int | None:
                now = await real.current()
                # Another process revokes and advances after this read, before the store read.
                await accounts.tokens.update_one({"_id": token_id}, {"$set": {"revoked": True}})
                await real.advance()
                await accounts.tokens.update_one({"_id": token_id}, {"$set": {"revoked": False}})
                return now

            async def advance(self) -> None:
                await real.advance()

        accounts.epochs = RevokedMeanwhile()
        assert await accounts.by_token(token, fresh=True) is not None  # found, under epoch E
        accounts.epochs = real
        await accounts.tokens.update_one({"_id": token_id}, {"$set": {"revoked": True}})
        # The epoch is now E+1: the memory (found under E) does not decide; the store refuses.
        assert await accounts.by_token(token, fresh=True) is None
