"""Counter commands (NATS request-reply, mirrored over HTTP) and the ticket view APIs return."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from giliran.contracts.events import CounterId, Outcome, PriorityReason, ServiceCode, TicketStatus
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
    session_id: str | None = None
    priority: PriorityReason | None = None
    appointment_at: AwareDatetime | None = None
    arrived: bool = True
    # Keeps its place but cannot be called: the citizen is at another booth.
    held: bool = False
    recalls: int = 0
    outcome: Outcome | None = None
    issued_at: AwareDatetime | None = None
    queued_at: AwareDatetime | None = None
    called_at: AwareDatetime | None = None
    started_at: AwareDatetime | None = None
    completed_at: AwareDatetime | None = None
    eta: AwareDatetime | None = None
    # Tickets ahead of this one in its line (waiting only).
    position: int | None = None


CounterState = Literal["open", "paused", "closed"]


class CounterView(BaseModel):
    """A counter (loket/booth) as its console and the board see it."""

    model_config = ConfigDict(frozen=True)

    counter: CounterId
    status: CounterState
    session_id: str | None = None
    services: list[ServiceCode]
    current_ticket_id: str | None = None


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


TicketId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class CompleteTicket(BaseModel):
    action: Literal["complete"] = "complete"
    site: SiteSlug
    ticket_id: TicketId
    # When given, the ticket must be at this counter (always given by consoles).
    counter: CounterId | None = None
    outcome: Outcome = Outcome.SERVED

    @staticmethod
    def subject(site: str) -> str:
        return command_subject(site, "queue", "complete")


class TicketAction(BaseModel):
    """A counter's action on one ticket. `to_service` for transfer, `reason` for cancel."""

    action: Literal["call", "recall", "start", "no_show", "recheck_in", "transfer", "cancel"]
    site: SiteSlug
    counter: CounterId | None = None
    ticket_id: TicketId
    to_service: ServiceCode | None = None
    reason: str | None = Field(default=None, max_length=200)

    @staticmethod
    def subject(site: str, action: str) -> str:
        return command_subject(site, "queue", action)


class CounterAction(BaseModel):
    """Open (optionally with an ordered set of services), pause or close a counter."""

    action: Literal["open", "pause", "close"]
    site: SiteSlug
    counter: CounterId
    services: list[ServiceCode] | None = Field(default=None, min_length=1, max_length=20)
    session_id: str | None = Field(default=None, max_length=64)

    @staticmethod
    def subject(site: str, action: str) -> str:
        return command_subject(site, "queue", action)


class CommandReply(BaseModel):
    """`ok` with the ticket acted on (None: nothing to call), or a Problem."""

    ok: bool
    ticket: TicketView | None = None
    counter: CounterView | None = None
    error: Problem | None = None
    at: AwareDatetime | None = None


class RequestStatusQuery(BaseModel):
    """Another service (intake's status page) asks the queue where a request's tickets stand."""

    site: SiteSlug
    request_id: str = Field(min_length=1, max_length=64)

    @staticmethod
    def subject(site: str) -> str:
        return command_subject(site, "queue", "request_status")


class RequestStatusReply(BaseModel):
    """Each ticket of the request with its status, position in line and current ETA."""

    ok: bool
    tickets: list[TicketView] = Field(default_factory=list)
    error: Problem | None = None
