"""Notify configuration: the shipped example is valid; secrets come from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from giliran.settings import REPO_ROOT
from services.notify.config import HttpGatewayConfig, NotifyConfig, load_notify_config

EXAMPLE = REPO_ROOT / "deploy" / "notify" / "channels.example.yaml"
SECRETS = ("ZENZIVA_USERKEY", "ZENZIVA_PASSKEY", "FONNTE_TOKEN", "INFOBIP_KEY",
           "DUKCAPIL_WEBHOOK_SECRET", "SMTP_PASSWORD", "FONNTE_RECEIPT_SECRET",
           "INFOBIP_RECEIPT_SECRET", "WHATSAPP_ACCESS_TOKEN", "WHATSAPP_APP_SECRET",
           "WHATSAPP_VERIFY_TOKEN")  # fmt: skip


def test_the_example_configuration_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SECRETS:
        monkeypatch.setenv(name, f"{name.lower()}-value-long-enough")
    config = load_notify_config(EXAMPLE)
    assert [c.name for c in config.enabled] == ["console", "sms"]
    sms = config.enabled[1]
    assert isinstance(sms, HttpGatewayConfig)
    assert sms.fields["userkey"] == "zenziva_userkey-value-long-enough"
    assert config.approaching_for("botram-setu") == 5
    assert config.approaching_for("cikarang-utara") == 3


def test_a_missing_secret_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="ZENZIVA_USERKEY"):
        load_notify_config(EXAMPLE)


def test_without_a_file_only_the_console_runs() -> None:
    assert [c.type for c in load_notify_config(None).enabled] == ["console"]


def test_channel_names_are_unique(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="unique"):
        NotifyConfig.model_validate(
            {"channels": [{"name": "a", "type": "console"}, {"name": "a", "type": "console"}]}
        )
