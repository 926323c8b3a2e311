"""Intake's commands and values: what a citizen sends, SKM answers, limits, overrides."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from giliran.contracts import (
    Channel,
    Language,
    PriorityReason,
)
from giliran.contracts.events import ServiceCode
from giliran.contracts.subjects import SiteSlug
from giliran.store import Document
from services.intake import sessions

SOURCE = "intake"
# Check-in codes: six characters a person can read out without confusing 0/O, 1/I, 2/Z, 5/S.
CODE_ALPHABET = "ACDEFHJKMNPQRTUVWXY3479"
CODE_LENGTH = 6
# The quota document that holds a session's counter-minutes (catalogue `capacity_minutes`).
BUDGET = "counter-minutes"
# request.cancelled's reason when a registration was not checked in within its grace.
NOT_CHECKED_IN = "not_checked_in"
SessionId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,80}$")]


class Proof(BaseModel):
    """The answer to a proof-of-work challenge (GET /api/v1/sites/{site}/challenge)."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    challenge: str = Field(min_length=1, max_length=200)
    nonce: str = Field(min_length=1, max_length=40, pattern=r"^[0-9]+$")


class SubmitRequest(BaseModel):
    """What a citizen (online) or a kiosk sends to register."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    site: SiteSlug
    services: list[ServiceCode] = Field(min_length=1, max_length=10)
    name: str = Field(min_length=1, max_length=100)
    nik: str | None = Field(default=None, max_length=32)
    phone: str | None = Field(default=None, max_length=32)
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    consent: bool = Field(
        default=False, description="the citizen agrees to be notified by SMS/WhatsApp/e-mail"
    )
    channel: Channel = Channel.ONLINE
    language: Language = Language.ID
    session_id: SessionId | None = Field(
        default=None, description="book this session (see /api/v1/sites/{site}/sessions)"
    )
    appointment_at: AwareDatetime | None = Field(
        default=None, description="start of an appointment slot within the session"
    )
    priority: PriorityReason | None = Field(
        default=None, description="declared: disability, pregnancy, infant (elderly: from NIK)"
    )
    proof: Proof | None = Field(
        default=None,
        description="a solved challenge: needed once an address has registered a few times",
    )


class Scores(BaseModel):
    """SKM answers U1..U9 on the 1-4 scale of PermenPANRB 14/2017."""

    model_config = ConfigDict(extra="forbid")

    U1: int = Field(ge=1, le=4)
    U2: int = Field(ge=1, le=4)
    U3: int = Field(ge=1, le=4)
    U4: int = Field(ge=1, le=4)
    U5: int = Field(ge=1, le=4)
    U6: int = Field(ge=1, le=4)
    U7: int = Field(ge=1, le=4)
    U8: int = Field(ge=1, le=4)
    U9: int = Field(ge=1, le=4)


@dataclass(frozen=True)
class Limits:
    """Rate limits against bots: per client address a minute, per phone an hour."""

    ip_per_minute: int = 30
    phone_per_hour: int = 5
    exempt: frozenset[str] = frozenset()
    checkin_ip_per_minute: int = 10
    checkin_failures_per_site_per_hour: int = 60
    resend_ip_per_hour: int = 10
    resend_nik_per_hour: int = 3


class ResendLink(BaseModel):
    """A citizen asking for their status link again: the NIK and the contact they registered."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    site: SiteSlug
    nik: str = Field(min_length=1, max_length=32)
    phone: str | None = Field(default=None, max_length=32)
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Request(BaseModel):
    """A citizen's registration as intake keeps it (collection `requests`; RequestStore maps it
    to and from its document). Tickets and survey answers are added later, by their events."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    site: str
    session_id: str
    session_date: date
    services: tuple[str, ...]
    channel: Channel
    language: Language
    name: str
    # The NIK only encrypted; its mask for display, its keyed hash to recognise it.
    nik_encrypted: str | None
    nik_masked: str | None
    nik_hash: str | None
    phone: str | None
    email: str | None
    consent: bool
    priority: PriorityReason | None
    appointment_at: AwareDatetime | None
    slot: str | None
    arrived: bool
    lapse_at: AwareDatetime | None
    checkin_code: str | None
    token: str
    submitted_at: AwareDatetime


@dataclass(frozen=True)
class Submitted:
    doc: Document
    warnings: tuple[str, ...]


def calendar_from_doc(doc: Document) -> sessions.CalendarOverrides:
    """The stored overrides of a site as the pure session rules take them."""

    def day(value: str) -> date:
        return date.fromisoformat(value)

    return sessions.CalendarOverrides(
        holidays_added={day(k): v for k, v in (doc.get("holidays_added") or {}).items()},
        holidays_removed=frozenset(day(v) for v in doc.get("holidays_removed") or []),
        closed={day(k): v for k, v in (doc.get("closed") or {}).items()},
        sessions_added={
            day(k): (time.fromisoformat(v["opens"]), time.fromisoformat(v["closes"]))
            for k, v in (doc.get("sessions_added") or {}).items()
        },
        cancelled=dict(doc.get("cancelled") or {}),
        closures_lifted=frozenset(day(v) for v in doc.get("closures_lifted") or []),
    )
