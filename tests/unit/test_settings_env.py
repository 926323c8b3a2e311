"""Settings read from the environment: an empty variable is an unset one."""

from __future__ import annotations

import pytest

from giliran.settings import Settings


def test_an_empty_variable_is_unset_whatever_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # compose's .env names every variable; the ones left empty must read as not configured.
    for name in ("NATS_USER", "NATS_PASSWORD", "SESSION_KEY", "AUDIT_KEY", "NIK_HASH_KEY"):
        monkeypatch.setenv(f"GILIRAN_{name}", "")
    monkeypatch.setenv("GILIRAN_PUBLIC_URL", "")
    monkeypatch.setenv("GILIRAN_LOG_LEVEL", "")
    settings = Settings()
    assert settings.nats_user is None and settings.nats_password is None
    assert settings.session_key is None and settings.audit_key is None
    assert settings.nik_hash_key is None
    assert settings.log_level == "INFO"  # the default, not ""
    assert settings.weak_secrets() == []


def test_a_secret_that_is_set_is_still_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GILIRAN_SESSION_KEY", "short")
    assert [p.split(":")[0] for p in Settings().weak_secrets()] == ["GILIRAN_SESSION_KEY"]
