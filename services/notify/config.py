"""Notify's configuration: which channels run and how, from YAML with ${ENV} secrets."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

ChannelName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")]


class Retry(BaseModel):
    """Exponential backoff with jitter between attempts, then the message is dead-lettered."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=5, ge=1, le=50)
    base_seconds: float = Field(default=1.0, gt=0)
    max_seconds: float = Field(default=60.0, gt=0)


class Breaker(BaseModel):
    """After `failures` consecutive gateway failures, stop calling it for `reset_seconds`."""

    model_config = ConfigDict(extra="forbid")

    failures: int = Field(default=5, ge=1)
    reset_seconds: float = Field(default=30.0, gt=0)


class ChannelBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ChannelName
    enabled: bool = True
    rate_per_second: float = Field(default=10.0, gt=0, description="gateway rate limit")
    timeout_seconds: float = Field(default=10.0, gt=0)
    retry: Retry = Field(default_factory=Retry)
    breaker: Breaker = Field(default_factory=Breaker)


class ConsoleConfig(ChannelBase):
    type: Literal["console"]


class HttpGatewayConfig(ChannelBase):
    """Any HTTP SMS/WhatsApp gateway: the request is configuration, not code.

    `fields` values are templates over: {phone} (+628...), {phone_local} (08...),
    {phone_digits} (628...), {text}, {ref} (the delivery id, for gateways that dedupe on it)."""

    type: Literal["http"]
    medium: Literal["sms", "whatsapp"] = "sms"
    url: str = Field(pattern=r"^https?://")
    method: Literal["POST", "GET"] = "POST"
    encoding: Literal["form", "json", "query"] = "form"
    headers: dict[str, str] = Field(default_factory=dict)
    fields: dict[str, str]
    success_statuses: list[int] = Field(default_factory=lambda: [200, 201, 202])
    # Units billed per message: SMS segments for SMS, 1 per message for WhatsApp.
    cost: Literal["segments", "one"] = "segments"


class WebhookConfig(ChannelBase):
    """Posts every event (or those matching `types`) to an agency, signed with HMAC-SHA256."""

    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    secret: str = Field(min_length=16)
    types: list[str] = Field(default_factory=lambda: ["*"])


class EmailConfig(ChannelBase):
    type: Literal["email"]
    host: str
    port: int = 587
    username: str | None = None
    password: str | None = None
    starttls: bool = True
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")


ChannelConfig = Annotated[
    ConsoleConfig | HttpGatewayConfig | WebhookConfig | EmailConfig, Field(discriminator="type")
]


def _console_only() -> list[ConsoleConfig | HttpGatewayConfig | WebhookConfig | EmailConfig]:
    return [ConsoleConfig(type="console", name="console")]


class NotifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: list[ChannelConfig] = Field(default_factory=_console_only)
    # "Your turn is N tickets away": sent once when N or fewer are ahead; per-site overrides.
    approaching_ahead: int = Field(default=3, ge=1, le=50)
    approaching_ahead_by_site: dict[str, int] = Field(default_factory=dict)
    # How long a citizen's phone/e-mail/status link is kept after the request, then purged
    # (UU 27/2022): GILIRAN_CONTACT_RETENTION_HOURS, which also bounds the personal stream; a
    # value here may only shorten it for notify (ADR 0115).
    contact_retention_hours: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _unique_names(self) -> NotifyConfig:
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise ValueError("channel names must be unique")
        return self

    def approaching_for(self, site: str) -> int:
        return self.approaching_ahead_by_site.get(site, self.approaching_ahead)

    @property
    def enabled(self) -> list[ConsoleConfig | HttpGatewayConfig | WebhookConfig | EmailConfig]:
        return [c for c in self.channels if c.enabled]


_ENV = re.compile(r"\$\{([A-Z0-9_]+)\}")


def _substitute(value: Any) -> Any:
    """Secrets stay out of the file: ${NAME} in a string value is read from the environment
    (after parsing, so comments are left alone and a secret cannot inject YAML)."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ValueError(f"notify config needs the environment variable {name}")
        return os.environ[name]

    if isinstance(value, str):
        return _ENV.sub(lookup, value)
    if isinstance(value, list):
        return [_substitute(v) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v) for k, v in value.items()}
    return value


def load_notify_config(path: Path | None) -> NotifyConfig:
    if path is None:
        return NotifyConfig()
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return NotifyConfig.model_validate(_substitute(raw))
