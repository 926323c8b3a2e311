"""Notification channels: one module each; `build_channel` turns configuration into a channel."""

from __future__ import annotations

from services.notify.channels.base import (
    Channel,
    Contact,
    Handed,
    Outgoing,
    PermanentFailure,
    Recipient,
    Refused,
    TransientFailure,
)
from services.notify.channels.console import ConsoleChannel
from services.notify.channels.email import EmailChannel
from services.notify.channels.http_gateway import HttpGatewayChannel
from services.notify.channels.webhook import WebhookChannel
from services.notify.channels.whatsapp_cloud import WhatsAppCloudChannel
from services.notify.config import (
    AnyChannelConfig,
    ConsoleConfig,
    HttpGatewayConfig,
    WebhookConfig,
    WhatsAppCloudConfig,
)


def build_channel(config: AnyChannelConfig) -> Channel:
    if isinstance(config, ConsoleConfig):
        return ConsoleChannel(config)
    if isinstance(config, HttpGatewayConfig):
        return HttpGatewayChannel(config)
    if isinstance(config, WhatsAppCloudConfig):
        return WhatsAppCloudChannel(config)
    if isinstance(config, WebhookConfig):
        return WebhookChannel(config)
    return EmailChannel(config)


__all__ = [
    "Channel",
    "Contact",
    "Handed",
    "HttpGatewayChannel",
    "Outgoing",
    "PermanentFailure",
    "Recipient",
    "Refused",
    "TransientFailure",
    "WhatsAppCloudChannel",
    "build_channel",
]
