"""Notification rules with no I/O: which event says what, stale and approaching rules, texts,
SMS segments and webhook signatures."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel, ConfigDict, Field, field_validator

from giliran.catalogue import Catalogue
from giliran.contracts import (
    EventData,
    RequestCancelled,
    TicketCalled,
    TicketCompleted,
    TicketIssued,
    TicketNoShow,
    TicketRecalled,
    TicketStatus,
)

TEMPLATES = Path(__file__).parent / "templates"

# Which events tell the citizen something, and the template that says it.
TEMPLATE_OF: dict[type[EventData], str] = {
    TicketIssued: "ticket_issued",
    TicketCalled: "ticket_called",
    TicketRecalled: "ticket_called",
    TicketCompleted: "ticket_completed",
    TicketNoShow: "ticket_no_show",
    RequestCancelled: "session_cancelled",
}
APPROACHING = "ticket_approaching"
STATUS_LINK = "status_link"  # the status link again, asked for by the citizen
# A registration not checked in within its grace lapsed (intake's reason `not_checked_in`): the
# citizen is told it lapsed and that the kiosk still takes walk-ins — never "cancelled".
LAPSED = "registration_lapsed"
# Which `request.cancelled` reasons tell the citizen what, by template; others say nothing (the
# citizen cancelled it themselves).
CANCELLED_TEMPLATE: Mapping[str, str] = {
    "session_cancelled": "session_cancelled",
    "not_checked_in": LAPSED,
}

SUBJECTS: Mapping[str, Mapping[str, str]] = {
    "ticket_issued": {"id": "Nomor antrean Anda", "en": "Your queue number"},
    "ticket_approaching": {"id": "Giliran Anda sebentar lagi", "en": "Your turn is coming"},
    "ticket_called": {"id": "Nomor Anda dipanggil", "en": "Your number is called"},
    "ticket_completed": {"id": "Layanan selesai", "en": "Service completed"},
    "ticket_no_show": {"id": "Nomor Anda terlewat", "en": "You missed your call"},
    "session_cancelled": {"id": "Sesi layanan dibatalkan", "en": "Service session cancelled"},
    "registration_lapsed": {
        "id": "Pendaftaran gugur: belum check-in",
        "en": "Registration lapsed: not checked in",
    },
    "status_link": {
        "id": "Tautan status pendaftaran Anda",
        "en": "Your registration's status link",
    },
}

STATUS_OF_TEMPLATE = {
    "ticket_issued": TicketStatus.WAITING,
    "ticket_approaching": TicketStatus.WAITING,
    "ticket_called": TicketStatus.CALLED,
}


def is_requests_ticket(ticket_id: str, request_id: str) -> bool:
    """Whether `ticket_id` can be one of `request_id`'s tickets: the queue makes every ticket id
    from its request's (`f"{request_id}-{service}"`, a transfer's `~{service}` and a recheck's
    `~R` after it: services/queue/domain.py). An event pairing a request with another's ticket
    is not the queue's: a site's forged `ticket.issued` naming its own request and a ticket of
    another site that notify has not seen yet would otherwise create that ticket at the
    forger's site, and the real one's event would then be refused as foreign."""
    return ticket_id.startswith(f"{request_id}-")


def is_stale(template: str, current: TicketStatus | None) -> bool:
    """A message about a state the ticket has already left is not sent: "go to counter 2" after
    the service completed would only confuse (it is recorded as dropped instead)."""
    announced = STATUS_OF_TEMPLATE.get(template)
    if announced is None or current is None:
        return False
    return current.rank > announced.rank


class DeliveryStatus(StrEnum):
    """Where a delivery stands (docs/notify.md, *A delivery's states*)."""

    SENDING = "sending"  # recorded, an attempt may be under way (held) or due
    SENT = "sent"  # the gateway took it
    FAILED = "failed"  # refused, or attempts used up
    DROPPED = "dropped"  # its ticket moved on before it went


class Step(StrEnum):
    """What an attempt does about a delivery that already exists (a redelivered event, the
    operator's retry, another replica's event)."""

    DONE = "done"  # sent, failed or dropped: a redelivery changes nothing
    DROP = "drop"  # still sending, but its ticket has moved on
    WAIT = "wait"  # another attempt holds it: come back when that hold ends
    TAKE = "take"  # nobody holds it (a crash, a transient failure): take it and send


@dataclass(frozen=True)
class Attempt:
    step: Step
    wait_seconds: float = 0.0


def first_status(template: str, ticket_status: TicketStatus | None) -> DeliveryStatus:
    """The status a new delivery is recorded with: held for its first attempt in the same
    write (one insert, no separate claim), or dropped at once when its ticket has moved on."""
    return DeliveryStatus.DROPPED if is_stale(template, ticket_status) else DeliveryStatus.SENDING


def next_step(
    status: DeliveryStatus, held_until: datetime, now: datetime, *, stale: bool
) -> Attempt:
    """An existing delivery met again. Only a `sending` one may go; while an attempt holds it
    (until `held_until`) sending would send it twice (ADR 0005); a lapsed hold means that
    attempt crashed or let go, and the message goes again."""
    if status is not DeliveryStatus.SENDING:
        return Attempt(Step.DONE)
    if stale:
        return Attempt(Step.DROP)
    if held_until > now:
        return Attempt(Step.WAIT, max(1.0, (held_until - now).total_seconds()))
    return Attempt(Step.TAKE)


class Claim(BaseModel):
    """A ticket message's claim, kept in its ticket's document (ADR 0198): taken in the same
    write that moves the ticket for the event that causes the message, held by one attempt at a
    time until `held_until`, and counted. The delivery log gets the message once it was sent (or
    failed, or dropped); until then the claim is the only record of it."""

    model_config = ConfigDict(frozen=True)

    delivery_id: str
    held_until: datetime
    attempts: int = Field(ge=0)
    claimed_at: datetime
    last_error: str | None = None
    # The event that decided it, for messages another event may also decide ("your turn is
    # near": any call of the line): that event's redelivery resumes it, no other event does.
    cause_event_id: str | None = None

    @field_validator("held_until", "claimed_at", mode="before")
    @classmethod
    def _stored_instant(cls, value: Any) -> Any:
        # Stored as instant strings (ADR 0004); fromisoformat reads the basic form too.
        return datetime.fromisoformat(value) if isinstance(value, str) else value


class Go(StrEnum):
    """What a ticket's own message does when its event's write did not take the claim at once."""

    SEND = "send"  # take the claim (again) and send: first time, or a lapsed hold after a crash
    WAIT = "wait"  # another attempt holds it: come back when the hold ends
    DONE = "done"  # the log has it settled (sent, failed, dropped): a repeat changes nothing
    DROP = "drop"  # its ticket moved on before it went: recorded dropped, never sent
    LOG = "log"  # the log holds it still sending (the operator's retry): the log's own holds decide


@dataclass(frozen=True)
class MessagePlan:
    go: Go
    attempt: int = 0  # SEND: the attempt's number
    wait_seconds: float = 0.0  # WAIT: when to come back


def plan_message(
    template: str,
    ticket_status: TicketStatus | None,
    claim: Claim | None,
    logged: DeliveryStatus | None,
    now: datetime,
) -> MessagePlan:
    """A ticket's own message met again (a redelivered event, the other instance's copy, a
    second channel, an event late after a later one): the log decides what it holds; else a
    claim another attempt holds is waited for; else the stale rule; else the claim is free or
    left by a crashed attempt (its hold lapsed: the message goes again rather than never,
    ADR 0005)."""
    if logged is DeliveryStatus.SENDING:
        return MessagePlan(Go.LOG)
    if logged is not None:
        return MessagePlan(Go.DONE)
    if claim is not None and claim.held_until > now:
        # Held before stale: the attempt holding it may have it on the wire, and a drop recorded
        # now would be a record of a message the citizen gets, with no notification.sent (the
        # attempt's record would meet the drop). Its record (or its lapse) decides.
        return MessagePlan(Go.WAIT, wait_seconds=max(1.0, (claim.held_until - now).total_seconds()))
    if is_stale(template, ticket_status):
        return MessagePlan(Go.DROP)
    if claim is None:
        return MessagePlan(Go.SEND, attempt=1)
    return MessagePlan(Go.SEND, attempt=claim.attempts + 1)


def approaching_due(
    waiting_in_order: Sequence[tuple[str, int]], threshold: int, already: set[str]
) -> list[str]:
    """Tickets to tell "your turn is near": within `threshold` of the front of their line now,
    but not when they were issued (they knew already), and not told before.
    `waiting_in_order` holds (ticket id, tickets ahead at issue) in call order."""
    return [
        ticket_id
        for ahead_now, (ticket_id, ahead_at_issue) in enumerate(waiting_in_order)
        if ahead_now <= threshold < ahead_at_issue and ticket_id not in already
    ]


def delivery_id(cause: str, channel: str, recipient_key: str) -> str:
    """One delivery per (cause, channel, recipient): the key that makes sending idempotent."""
    return f"{cause}:{channel}:{recipient_key}"


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>`: the receiver recomputes it with the
    shared secret and rejects old timestamps, so a captured call cannot be replayed later."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


# What a message is made of, for channels that send parameters rather than text (WhatsApp
# templates): the names a channel's configuration may ask for.
VARIABLES = ("number", "service", "counter", "ahead", "local_time", "status_url", "cost")


@dataclass(frozen=True)
class Message:
    template: str
    language: str
    text: str
    subject: str
    variables: Mapping[str, str] = field(default_factory=dict)

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
    """Jinja2 templates per language (`<template>.<lang>.txt.j2`); Bahasa Indonesia by default.

    What a service costs comes from the catalogue (`ServiceDef.cost`): a template says GRATIS
    only for a service the catalogue marks free, states the fee and where it is paid for the
    others, and says nothing about cost for a service it cannot find (never a wrong "free")."""

    def __init__(
        self,
        directory: Path = TEMPLATES,
        timezone: str = "Asia/Jakarta",
        catalogue: Catalogue | None = None,
    ) -> None:
        self._catalogue = catalogue
        self._env = Environment(
            loader=FileSystemLoader(directory),
            undefined=StrictUndefined,
            autoescape=False,  # plain-text messages, never HTML
            keep_trailing_newline=False,
        )
        self._zone = ZoneInfo(timezone)

    def cost(self, site: str | None, service: Any, lang: str) -> tuple[str | None, bool | None]:
        """The cost sentence and whether the service is free; (None, None) when unknown."""
        found = self._catalogue.site(site) if self._catalogue and site else None
        definition = found.service(str(service)) if found and service else None
        if definition is None:
            return None, None
        return definition.cost(lang), definition.fee is None

    def render(
        self,
        template: str,
        language: str,
        data: Mapping[str, Any],
        *,
        site: str | None = None,
        **extra: Any,
    ) -> Message:
        lang = language if language in ("id", "en") else "id"
        at = extra.pop("at", None)
        local_time = at.astimezone(self._zone).strftime("%H.%M") if at is not None else ""
        cost, free = self.cost(site, data.get("service"), lang)
        values = {"cost": cost, "free": free, **data, "local_time": local_time, **extra}
        text = self._env.get_template(f"{template}.{lang}.txt.j2").render(**values)
        return Message(
            template=template,
            language=lang,
            text=" ".join(text.split()),
            subject=SUBJECTS[template][lang],
            variables={
                name: str(values[name])
                for name in VARIABLES
                if values.get(name) is not None and values.get(name) != ""
            },
        )
