"""`giliran accounts ...` as an operator runs it: add a person, change a password, issue, list
and revoke a token, against the real store."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from giliran.auth import AuthStore, Role
from giliran.contracts import utcnow
from giliran.settings import Settings
from giliran.store import connect

pytestmark = pytest.mark.integration


def giliran(settings: Settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GILIRAN_MONGO_URL": settings.mongo_url,
        "GILIRAN_DB_PREFIX": settings.db_prefix,
    }
    return subprocess.run(
        [sys.executable, "-m", "giliran_ops.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_accounts_cli(settings: Settings) -> None:
    add = ["accounts", "add", "sri", "--role", "supervisor", "--site", "cikarang-utara"]
    short = giliran(settings, *add, "--password-stdin", stdin="pendek\n")
    assert short.returncode != 0 and "10" in short.stderr  # too short a password is refused
    added = giliran(settings, *add, "--password-stdin", stdin="kata-sandi-panjang\n")
    assert added.returncode == 0, added.stderr
    again = giliran(settings, *add, "--password-stdin", stdin="kata-sandi-panjang\n")
    assert again.returncode == 1 and "already exists" in again.stderr
    changed = giliran(
        settings, "accounts", "password", "sri", "--password-stdin", stdin="sandi-baru-yang-lain\n"
    )
    assert changed.returncode == 0, changed.stderr
    issued = giliran(
        settings, "accounts", "token", "papan-1", "--role", "display", "--site", "cikarang-utara"
    )
    assert issued.returncode == 0, issued.stderr
    token_id = issued.stdout.split()[2]
    token = issued.stdout.strip().splitlines()[-1]
    client = connect(settings.mongo_url)
    try:
        store = AuthStore(client[settings.auth_database])
        assert await store.authenticate("sri", "sandi-baru-yang-lain") is not None
        assert await store.authenticate("sri", "kata-sandi-panjang") is None
        found = await store.by_token(token)
        assert found is not None and (found.role, found.site) == (Role.DISPLAY, "cikarang-utara")
        listed = giliran(settings, "accounts", "tokens")
        assert token_id in listed.stdout and "active" in listed.stdout
        assert token not in listed.stdout  # never shown again
        assert giliran(settings, "accounts", "revoke", token_id).returncode == 0
        assert await store.by_token(token) is None
        assert "revoked" in giliran(settings, "accounts", "tokens").stdout
        # An admin lifts a sign-in lock left by password guessing.
        for address in ("10.0.0.7", "10.0.0.8"):
            for _ in range(5):
                await store.note_failed_sign_in("sri", address, utcnow())
        assert await store.failed_sign_ins("sri", "10.0.0.7", utcnow()) == 5
        assert giliran(settings, "accounts", "unlock", "sri").returncode == 0
        for address in ("10.0.0.7", "10.0.0.8"):
            assert await store.failed_sign_ins("sri", address, utcnow()) == 0
    finally:
        await client.close()
