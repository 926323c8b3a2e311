"""Notify's configuration: which channels run and how, from YAML with ${ENV} secrets."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.notify.domain import VARIABLES

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


class BodyRuleConfig(BaseModel):
    """A generic gateway's "yes" in a 2xx body: `field` (dotted path) holds one of `values`."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(min_length=1)
    values: list[str] = Field(min_length=1)
    reason_field: str | None = None
    id_field: str | None = None


class ReceiptRuleConfig(BaseModel):
    """A generic gateway's delivery report: items at `items` (dotted; the body itself if
    unset), each naming the gateway's message id and a status."""

    model_config = ConfigDict(extra="forbid")

    id_field: str = Field(min_length=1)
    status_field: str = Field(min_length=1)
    delivered: list[str] = Field(min_length=1)
    undelivered: list[str] = Field(min_length=1)
    items: str | None = None
    reason_field: str | None = None


# Gateways whose answers Giliran knows from their documentation; `generic` is told by `accept`.
GatewayProfile = Literal["generic", "zenziva", "fonnte", "infobip"]
# Which profiles send delivery reports Giliran can read (Zenziva documents none).
PROFILES_WITH_RECEIPTS = {"generic", "fonnte", "infobip"}


class HttpGatewayConfig(ChannelBase):
    """Any HTTP SMS/WhatsApp gateway: the request is configuration, not code.

    `fields` values are templates over: {phone} (+628...), {phone_local} (08...),
    {phone_digits} (628...), {text}, {ref} (the delivery id, for gateways that dedupe on it),
    {receipt_url} (where this site's delivery reports go); with `encoding: json` a value may be a
    nested list or mapping (Infobip's `messages[].destinations[]`), templated at every leaf.
    `profile` says how the gateway's answer and its delivery reports read."""

    type: Literal["http"]
    profile: GatewayProfile = "generic"
    medium: Literal["sms", "whatsapp"] = "sms"
    url: str = Field(pattern=r"^https?://")
    method: Literal["POST", "GET"] = "POST"
    encoding: Literal["form", "json", "query"] = "form"
    headers: dict[str, str] = Field(default_factory=dict)
    fields: dict[str, Any]
    success_statuses: list[int] = Field(default_factory=lambda: [200, 201, 202])
    # Units billed per message: SMS segments for SMS, 1 per message for WhatsApp.
    cost: Literal["segments", "one"] = "segments"
    # generic only: how a 2xx body says yes (unset: any success status is a yes).
    accept: BodyRuleConfig | None = None
    # generic only: how its delivery reports read (unset: it sends none).
    receipt: ReceiptRuleConfig | None = None
    # Keys the delivery-report URL per site (see services/notify/gateways.receipt_key).
    receipt_secret: str | None = Field(default=None, min_length=16)

    @model_validator(mode="after")
    def _profile_fits(self) -> HttpGatewayConfig:
        if self.profile != "generic" and (self.accept or self.receipt):
            raise ValueError(f"channel {self.name}: accept/receipt are for the generic profile")
        if self.encoding != "json" and any(not isinstance(v, str) for v in self.fields.values()):
            raise ValueError(f"channel {self.name}: nested fields need encoding: json")
        return self

    @property
    def receipts(self) -> bool:
        """Whether this channel can take delivery reports."""
        if self.receipt_secret is None or self.profile not in PROFILES_WITH_RECEIPTS:
            return False
        return self.profile != "generic" or self.receipt is not None


class WhatsAppTemplate(BaseModel):
    """A pre-approved WhatsApp message template and the values that fill its body's {{1}}..{{n}},
    in order, named from the message's variables (number, service, counter, ahead, local_time,
    status_url, cost)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9_]{1,512}$")
    parameters: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_parameters(self) -> WhatsAppTemplate:
        unknown = [p for p in self.parameters if p not in VARIABLES]
        if unknown:
            raise ValueError(f"template {self.name}: unknown parameters {unknown}; use {VARIABLES}")
        return self


class WhatsAppCloudConfig(ChannelBase):
    """The official WhatsApp Business Platform (Cloud API): template messages only, statuses by
    a webhook signed with the app secret (X-Hub-Signature-256)."""

    type: Literal["whatsapp_cloud"]
    api_url: str = Field(default="https://graph.facebook.com/v21.0", pattern=r"^https?://")
    phone_number_id: str = Field(pattern=r"^[0-9]{5,20}$")
    access_token: str = Field(min_length=8)
    app_secret: str = Field(min_length=16)
    verify_token: str = Field(min_length=16)
    # Giliran's template name -> the approved template; a message with none is not sent here.
    templates: dict[str, WhatsAppTemplate]
    # The citizen's language -> the template language code registered with Meta.
    languages: dict[str, str] = Field(default_factory=lambda: {"id": "id", "en": "en"})
    # Receipts: one business number may serve several sites; a report for another site's
    # message is refused by the endpoint the report arrived at.

    @property
    def receipts(self) -> bool:
        return True


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


AnyChannelConfig = (
    ConsoleConfig | HttpGatewayConfig | WhatsAppCloudConfig | WebhookConfig | EmailConfig
)
ChannelConfig = Annotated[AnyChannelConfig, Field(discriminator="type")]


def _console_only() -> list[AnyChannelConfig]:
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
    # Delivery reports accepted per client address per minute (a flood is answered 429; the
    # gateways documented here retry a report that was not answered 2xx).
    receipts_per_minute: int = Field(default=600, ge=1)

    @model_validator(mode="after")
    def _unique_names(self) -> NotifyConfig:
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise ValueError("channel names must be unique")
        return self

    def approaching_for(self, site: str) -> int:
        return self.approaching_ahead_by_site.get(site, self.approaching_ahead)

    @property
    def enabled(self) -> list[AnyChannelConfig]:
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
