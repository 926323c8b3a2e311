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
from giliran.contracts import utcnow
from giliran.settings import Settings
from giliran.store import connect
from giliran_ops.embedded import ManagedProcess
from tests.conftest import RunningService, eventually, running, service_process

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


async def test_an_action_asks_the_store_even_before_the_notice_arrives(
    settings: Settings,
) -> None:
    async with running("queue", settings) as svc:
        accounts = svc.runtime.accounts
        token_id, token = await accounts.issue_token("loket-1", Role.OFFICER, SITE)
        auth = {"Authorization": f"Bearer {token}"}
        assert (await svc.anonymous.get(COUNTER, headers=auth)).status_code == 200  # remembered
        # Revoked where no notice comes from (as if it were still on its way).
        await accounts.tokens.update_one({"_id": token_id}, {"$set": {"revoked": True}})
        acted = await svc.anonymous.post(f"{COUNTER}/call-next", headers=auth)
        assert acted.status_code == 401, acted.text
        # A read may still be answered from memory until the notice (or 30 s) comes.
        assert (await svc.anonymous.get(COUNTER, headers=auth)).status_code == 200


# Three scenarios from the review of ADR 0231 (taken back), where a revoked credential acted
# again under the credential epoch: each acting process here never receives the notice (its own
# memory), so only "an action asks the store" refuses it.


async def _acting_unnoticed(queue: RunningService) -> tuple[str, dict[str, str]]:
    """An officer's token that has acted at the queue, remembered there by a memory of its
    own, which no notice ever empties."""
    accounts = queue.runtime.accounts
    accounts._remembered = Remembered()
    token_id, token = await accounts.issue_token("loket-1", Role.OFFICER, SITE)
    auth = {"Authorization": f"Bearer {token}"}
    acted = await queue.anonymous.post(f"{COUNTER}/call-next", headers=auth)
    assert acted.status_code in (200, 204), acted.text
    return token_id, auth


async def test_revoked_elsewhere_without_the_notice_arriving_is_refused(
    settings: Settings,
) -> None:
    async with running("queue", settings) as queue, running("intake", settings) as intake:
        token_id, auth = await _acting_unnoticed(queue)
        assert await intake.runtime.accounts.revoke_token(token_id)
        acted = await queue.anonymous.post(f"{COUNTER}/call-next", headers=auth)
        assert acted.status_code == 401, acted.status_code


async def test_a_token_revoked_while_nats_restarts_stays_refused(
    settings: Settings, nats_proc: ManagedProcess
) -> None:
    async with running("queue", settings) as queue, running("intake", settings) as intake:
        token_id, auth = await _acting_unnoticed(queue)
        nats_proc.stop()

        async def down() -> bool:
            return not queue.runtime.broker.connection.is_connected

        async def up() -> bool:
            return bool(queue.runtime.broker.connection.is_connected)

        await eventually(down, within=10)
        assert await intake.runtime.accounts.revoke_token(token_id)  # no notice can go out
        acted = await queue.anonymous.post(f"{COUNTER}/call-next", headers=auth)
        assert acted.status_code == 401, acted.status_code
        nats_proc.start()
        await nats_proc.wait_listening()
        await eventually(up, within=20)
        acted = await queue.anonymous.post(f"{COUNTER}/call-next", headers=auth)
        assert acted.status_code == 401, acted.status_code


async def test_revoked_by_a_service_cut_off_from_nats_is_refused(settings: Settings) -> None:
    async with running("queue", settings) as queue, running("intake", settings) as intake:
        token_id, auth = await _acting_unnoticed(queue)
        intake.runtime.bus_started.clear()  # as intake sees itself while NATS is away
        try:
            assert await intake.runtime.accounts.revoke_token(token_id)
        finally:
            intake.runtime.bus_started.set()
        acted = await queue.anonymous.post(f"{COUNTER}/call-next", headers=auth)
        assert acted.status_code == 401, acted.status_code
