"""Notification rules with no I/O: which events make a message, its text, its SMS segment count."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from giliran.contracts import Event, EventData, TicketCalled, TicketCompleted, TicketIssued

TEMPLATES = Path(__file__).parent / "templates"

# Which ticket events tell the citizen something, and the template that says it.
TEMPLATE_OF: dict[type[EventData], str] = {
    TicketIssued: "ticket_issued",
    TicketCalled: "ticket_called",
    TicketCompleted: "ticket_completed",
}


def delivery_id(event_id: str, channel: str, recipient: str) -> str:
    """One delivery per (event, channel, recipient): the key that makes sending idempotent."""
    return f"{event_id}:{channel}:{recipient}"


@dataclass(frozen=True)
class Message:
    template: str
    language: str
    text: str

    @property
    def segments(self) -> int:
        return sms_segments(self.text)


_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXT = set("^{}\\[~]|€")


def sms_segments(text: str) -> int:
    """SMS parts a text needs: GSM-7 160/153 septets, else UCS-2 70/67 characters."""
    if all(c in _GSM7 or c in _GSM7_EXT for c in text):
        septets = sum(2 if c in _GSM7_EXT else 1 for c in text)
        return 1 if septets <= 160 else -(-septets // 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)


class Renderer:
    """Jinja2 templates per language (`<template>.<lang>.txt.j2`); Bahasa Indonesia by default."""

    def __init__(self, directory: Path = TEMPLATES, timezone: str = "Asia/Jakarta") -> None:
        self._env = Environment(
            loader=FileSystemLoader(directory),
            undefined=StrictUndefined,
            autoescape=False,  # plain-text messages, never HTML
            keep_trailing_newline=False,
        )
        self._zone = ZoneInfo(timezone)

    def render(self, event: Event[Any], language: str, status_url: str | None) -> Message:
        template = TEMPLATE_OF[type(event.data)]
        lang = language if language in ("id", "en") else "id"
        data = event.data.model_dump()
        local_time = event.time.astimezone(self._zone).strftime("%H.%M")
        text = self._env.get_template(f"{template}.{lang}.txt.j2").render(
            **data, local_time=local_time, status_url=status_url
        )
        return Message(template=template, language=lang, text=" ".join(text.split()))
