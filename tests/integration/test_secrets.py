"""A service refuses to start on a secret copied from an example, too short, or (intake) a NIK
encryption key that is only derived from the hash key; the migration path still starts."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from giliran.settings import Settings
from tests.conftest import running

pytestmark = pytest.mark.integration

STRONG = "Vq3xZ9-kP2mW7rT4yB8nC1dF6gH0jL5s"


@pytest.mark.parametrize(
    ("service", "setting", "value", "named"),
    [
        ("queue", "session_key", "<random>", "GILIRAN_SESSION_KEY: masih berisi contoh"),
        ("notify", "session_key", "kunci-pendek", "shorter than 32 characters"),
        ("intake", "nik_hash_key", "<random, never changed>", "GILIRAN_NIK_HASH_KEY"),
        ("reporting", "admin_token", "a" * 40, "GILIRAN_ADMIN_TOKEN: terlalu sedikit"),
        ("queue", "nats_password", "changeme", "GILIRAN_NATS_PASSWORD"),
    ],
)
async def test_a_weak_or_placeholder_secret_stops_the_service(
    settings: Settings, service: str, setting: str, value: str, named: str
) -> None:
    weak = settings.model_copy(update={setting: SecretStr(value)})
    with pytest.raises(RuntimeError) as refused:
        async with running(service, weak):  # type: ignore[arg-type]
            pass
    assert named in str(refused.value)
    assert value not in str(refused.value)  # the message names the setting, never its value


@pytest.mark.parametrize("keys", ["", "derived", f"derived,{Fernet.generate_key().decode()}"])
async def test_intake_needs_a_nik_encryption_key_of_its_own(settings: Settings, keys: str) -> None:
    """One secret must not protect both the keyed hash and the NIKs at rest."""
    shared = settings.model_copy(update={"nik_encryption_key": SecretStr(keys) if keys else None})
    with pytest.raises(RuntimeError, match="GILIRAN_NIK_ENCRYPTION_KEY"):
        async with running("intake", shared):
            pass


async def test_an_old_install_moves_to_its_own_key_with_derived_behind_it(
    settings: Settings,
) -> None:
    moving = settings.model_copy(
        update={
            "nik_encryption_key": SecretStr(f"{Fernet.generate_key().decode()},derived"),
            "session_key": SecretStr(STRONG),
        }
    )
    async with running("intake", moving) as svc:
        assert (await svc.http.get("/healthz")).status_code == 200
