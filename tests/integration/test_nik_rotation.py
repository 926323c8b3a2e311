"""NIK encryption key rotation against the embedded store: stored NIKs stay readable while two
keys are configured, `giliran keys rotate-nik` moves every one to the newest key (resumably,
and a second run finds nothing to do), and afterwards the old key can go."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from giliran.settings import Settings
from giliran.store import connect
from services.intake.privacy import NikCipher
from services.intake.rotation import rotate_niks
from services.intake.store import RequestStore

pytestmark = pytest.mark.integration

HASH_KEY = b"test-hash-key"
RECORDS = 23


def nik(n: int) -> str:
    return f"32160945129{n:05d}"


def cli(settings: Settings, keys: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GILIRAN_MONGO_URL": settings.mongo_url,
        "GILIRAN_DB_PREFIX": settings.db_prefix,
        "GILIRAN_NIK_HASH_KEY": HASH_KEY.decode(),
        "GILIRAN_NIK_ENCRYPTION_KEY": keys,
    }
    return subprocess.run(
        [sys.executable, "-m", "giliran_ops.cli", "keys", "rotate-nik", "--batch", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_rotation_re_encrypts_every_nik_and_frees_the_old_key(mongo_url: str) -> None:
    settings = Settings(
        mongo_url=mongo_url,
        db_prefix=f"t{uuid.uuid4().hex[:12]}",
        nik_hash_key=SecretStr(HASH_KEY.decode()),
    )
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = NikCipher.from_keys(old, HASH_KEY)
    client = connect(settings.mongo_url)
    try:
        requests = RequestStore(client[settings.database_name("intake")]).requests
        docs = [
            {"_id": f"r{n:03d}", "nik_encrypted": before.encrypt(nik(n)), "site": "x"}
            for n in range(RECORDS)
        ]
        # A purged record and one registered without a NIK: nothing to rotate, nothing written.
        docs.append({"_id": "r900", "nik_encrypted": None, "purged_at": "20261101T000000Z"})
        docs.append({"_id": "r901", "site": "x"})
        await requests.insert_many(docs)

        # Both keys configured, newest first: every old record still reads.
        both = NikCipher.from_keys(f"{new},{old}", HASH_KEY)
        stored = {d["_id"]: d.get("nik_encrypted") async for d in requests.find({})}
        assert all(both.decrypt(stored[f"r{n:03d}"]) == nik(n) for n in range(RECORDS))
        assert not any(both.is_current(stored[f"r{n:03d}"]) for n in range(RECORDS))

        # A pass stopped after two batches of five ...
        partial = await rotate_niks(requests, both, batch=5, max_batches=2)
        assert partial.rotated == 10 and partial.current == 0

        # ... is finished by the real command, which leaves the first ten alone.
        done = cli(settings, f"{new},{old}")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{RECORDS - 10} dienkripsi ulang" in done.stdout
        assert "10 sudah dengan kunci terbaru" in done.stdout
        assert "2 tanpa NIK" in done.stdout
        assert new not in done.stdout + done.stderr and old not in done.stdout + done.stderr

        again = cli(settings, f"{new},{old}")
        assert again.returncode == 0 and "0 dienkripsi ulang" in again.stdout

        # The old key removed: the new one alone reads every NIK, the old one alone none.
        only_new = NikCipher.from_keys(new, HASH_KEY)
        only_old = NikCipher.from_keys(old, HASH_KEY)
        after = {d["_id"]: d.get("nik_encrypted") async for d in requests.find({})}
        for n in range(RECORDS):
            assert only_new.decrypt(after[f"r{n:03d}"]) == nik(n)
            assert only_old.decrypt(after[f"r{n:03d}"]) is None
        assert after["r900"] is None and after["r901"] is None
        untouched = await requests.find_one({"_id": "r901"})
        assert untouched is not None and "nik_encrypted" not in untouched
    finally:
        await client.close()


async def test_a_nik_no_configured_key_reads_is_reported_and_left_alone(mongo_url: str) -> None:
    settings = Settings(
        mongo_url=mongo_url,
        db_prefix=f"t{uuid.uuid4().hex[:12]}",
        nik_hash_key=SecretStr(HASH_KEY.decode()),
    )
    lost, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = NikCipher.from_keys(lost, HASH_KEY).encrypt(nik(1))
    derived_token = NikCipher.from_keys(None, HASH_KEY).encrypt(nik(2))
    client = connect(settings.mongo_url)
    try:
        requests = RequestStore(client[settings.database_name("intake")]).requests
        await requests.insert_many(
            [{"_id": "a", "nik_encrypted": token}, {"_id": "b", "nik_encrypted": derived_token}]
        )
        # Moving off the derived default: `derived` names it as the old key.
        result = cli(settings, f"{new},derived")
        assert result.returncode == 1
        assert "1 dienkripsi ulang" in result.stdout and "1 tidak terbaca" in result.stdout
        kept = await requests.find_one({"_id": "a"})
        assert kept is not None and kept["nik_encrypted"] == token
        moved = await requests.find_one({"_id": "b"})
        assert moved is not None
        assert NikCipher.from_keys(new, HASH_KEY).decrypt(moved["nik_encrypted"]) == nik(2)
    finally:
        await client.close()


def test_a_malformed_key_is_refused_without_showing_it() -> None:
    with pytest.raises(ValueError) as refused:
        NikCipher.from_keys(f"{Fernet.generate_key().decode()},not-a-key", HASH_KEY)
    assert "key 2" in str(refused.value) and "not-a-key" not in str(refused.value)
