"""Counter commands (NATS request-reply, mirrored over HTTP) and the ticket view APIs return."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from giliran.contracts.events import CounterId, ServiceCode, TicketStatus
from giliran.contracts.subjects import SiteSlug, command_subject


class TicketView(BaseModel):
    """A ticket as officers, boards and citizens see it (no personal data)."""

    model_config = ConfigDict(frozen=True)

    ticket_id: str
    request_id: str
    number: str
    service: ServiceCode
    status: TicketStatus
    counter: CounterId | None = None
    issued_at: AwareDatetime | None = None
    called_at: AwareDatetime | None = None
    completed_at: AwareDatetime | None = None


class Problem(BaseModel):
    """A domain error as it crosses an edge: a stable code and the message in both languages."""

    code: str
    message_id: str = Field(description="Bahasa Indonesia")
    message_en: str


class CallNext(BaseModel):
    action: Literal["call_next"] = "call_next"
    site: SiteSlug
    counter: CounterId

    @staticmethod
    def subject(site: str) -> str:
        return command_subject(site, "queue", "call_next")


class CompleteTicket(BaseModel):
    action: Literal["complete"] = "complete"
    site: SiteSlug
    ticket_id: str = Field(min_length=1, max_length=128)

    @staticmethod
    def subject(site: str) -> str:
        return command_subject(site, "queue", "complete")


class CommandReply(BaseModel):
    """`ok` with the ticket acted on (None: nothing to call), or a Problem."""

    ok: bool
    ticket: TicketView | None = None
    error: Problem | None = None
    at: AwareDatetime | None = None
