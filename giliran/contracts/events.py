"""Event payloads (version 1) of the minimum event set, and the registry that parses them."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from giliran.contracts.envelope import Event, EventData

ServiceCode = Annotated[
    str, StringConstraints(pattern=r"^[A-Z0-9]+(?:-[A-Z0-9]+)*$", min_length=1, max_length=32)
]
CounterId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
E164 = Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{6,14}$")]
Email = Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]


class Channel(StrEnum):
    """How a request reached us."""

    ONLINE = "online"
    KIOSK = "kiosk"
    COUNTER = "counter"


class Language(StrEnum):
    ID = "id"
    EN = "en"


class PriorityReason(StrEnum):
    """Who is called ahead by the priority ratio (DOMAIN.md): declared, or derived from the NIK."""

    ELDERLY = "elderly"  # lansia, 60+ (from the NIK's birth date)
    DISABILITY = "disability"
    PREGNANCY = "pregnancy"
    INFANT = "infant"  # a parent carrying an infant


class Outcome(StrEnum):
    """How a completed service ended (the officer's outcome code)."""

    SERVED = "served"
    DOCUMENTS_INCOMPLETE = "documents_incomplete"
    REFERRED = "referred"
    REJECTED = "rejected"


class TicketStatus(StrEnum):
    WAITING = "waiting"
    CALLED = "called"
    SERVING = "serving"
    COMPLETED = "completed"
    NO_SHOW = "no_show"
    TRANSFERRED = "transferred"
    CANCELLED = "cancelled"

    @property
    def rank(self) -> int:
        """How far along a ticket is: events may arrive out of order, and a consumer's view of
        a ticket only ever moves to an equal or higher rank."""
        return _RANK[self]


_RANK = {
    TicketStatus.WAITING: 0,
    TicketStatus.CALLED: 1,
    TicketStatus.SERVING: 2,
    TicketStatus.COMPLETED: 3,
    TicketStatus.NO_SHOW: 3,
    TicketStatus.TRANSFERRED: 3,
    TicketStatus.CANCELLED: 3,
}


class CitizenRef(BaseModel):
    """The least a consumer needs about a citizen: never a full NIK; a phone only to notify."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nik_masked: str | None = Field(default=None, pattern=r"^\*{12}[0-9]{4}$")
    nik_hash: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    # Whether the citizen consented to be notified (UU 27/2022); the contact itself then follows
    # in `citizen.contact` on the personal stream (docs/decisions/0115).
    consent: bool = False
    language: Language = Language.ID
    # Written by producers before ADR 0115 and still read from old events; never published now:
    # GILIRAN keeps events for ever and these reach a person.
    phone: E164 | None = None
    email: Email | None = None
    status_token: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{16,64}$")


# --- request ---------------------------------------------------------------------------------


class RequestSubmitted(EventData):
    entity = "request"
    event = "submitted"
    publisher = "intake"

    request_id: str
    session_id: str
    services: list[ServiceCode] = Field(min_length=1, max_length=10)
    channel: Channel
    citizen: CitizenRef
    submitted_at: AwareDatetime
    priority: PriorityReason | None = None
    # A booked slot (start); None for walk-ins.
    appointment_at: AwareDatetime | None = None
    # The session's window, so the queue knows which session is running now (counters never call
    # a ticket left waiting from last Sunday). Optional for older producers.
    session_opens_at: AwareDatetime | None = None
    session_closes_at: AwareDatetime | None = None
    # False for a booking made ahead: its tickets keep a number but join the line only when
    # `request.checked_in` arrives (QR or code at the kiosk).
    arrived: bool = True


class CitizenContact(EventData):
    """How the citizen of a request agreed to be reached, published only with consent and only
    on the personal stream (GILIRAN_PERSONAL), which forgets it at `keep_until`: the contact
    retention after the request (docs/decisions/0115). `request.submitted` carries none of it."""

    entity = "citizen"
    event = "contact"
    publisher = "intake"

    request_id: str
    session_id: str
    phone: E164 | None = None
    email: Email | None = None
    language: Language = Language.ID
    status_token: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{16,64}$")
    submitted_at: AwareDatetime
    # Submission + contact retention: nobody may hold these fields after it.
    keep_until: AwareDatetime


class RequestCheckedIn(EventData):
    """A booking's holder has arrived: their tickets join the line from `checked_in_at`."""

    entity = "request"
    event = "checked_in"
    publisher = "intake"

    request_id: str
    session_id: str
    checked_in_at: AwareDatetime


class RequestLinkRequested(EventData):
    """A citizen asked for their status link again (NIK and registered contact matched): notify
    sends it to the contact it already holds for the request. Carries no contact itself."""

    entity = "request"
    event = "link_requested"
    publisher = "intake"

    request_id: str
    session_id: str
    requested_at: AwareDatetime


class RequestCancelled(EventData):
    entity = "request"
    event = "cancelled"
    publisher = "intake"

    request_id: str
    reason: str = Field(max_length=200)
    cancelled_at: AwareDatetime


# --- ticket ----------------------------------------------------------------------------------


class TicketFacts(EventData):
    """Fields every ticket event repeats, so a consumer can act on any of them in any order."""

    entity = "ticket"
    event = "facts"
    publisher = "queue"

    ticket_id: str
    request_id: str
    session_id: str
    service: ServiceCode
    number: str = Field(pattern=r"^[A-Z]{1,3}-[0-9]{3,}$")
    issued_at: AwareDatetime

    status_after: ClassVar[TicketStatus]  # the ticket's status once this event has happened

    def facts(self) -> dict[str, Any]:
        """Only the repeated fields, to build the ticket's next event from this one."""
        return {name: getattr(self, name) for name in TicketFacts.model_fields}


class TicketIssued(TicketFacts):
    event = "issued"
    status_after: ClassVar[TicketStatus] = TicketStatus.WAITING
    waiting_ahead: int = Field(ge=0, description="tickets ahead in the same line when issued")
    priority: PriorityReason | None = None
    appointment_at: AwareDatetime | None = None
    arrived: bool = True
    # The call time quoted to the citizen at issue (None when no counter serves the line yet);
    # reporting measures how wrong it was.
    eta: AwareDatetime | None = None
    # A ticket re-made from another: a transfer to another line, or a no-show re-checked-in.
    transferred_from: str | None = None
    rechecked_from: str | None = None


class TicketCalled(TicketFacts):
    event = "called"
    status_after: ClassVar[TicketStatus] = TicketStatus.CALLED
    counter: CounterId
    called_at: AwareDatetime
    # When the ticket joined the line (check-in, or issue for walk-ins): wait = called - queued.
    queued_at: AwareDatetime | None = None
    priority: PriorityReason | None = None


class TicketRecalled(TicketFacts):
    event = "recalled"
    status_after: ClassVar[TicketStatus] = TicketStatus.CALLED
    counter: CounterId
    recalled_at: AwareDatetime


class TicketStarted(TicketFacts):
    """The citizen came to the counter after the call and service began."""

    event = "started"
    status_after: ClassVar[TicketStatus] = TicketStatus.SERVING
    counter: CounterId
    called_at: AwareDatetime
    started_at: AwareDatetime


class TicketCompleted(TicketFacts):
    event = "completed"
    status_after: ClassVar[TicketStatus] = TicketStatus.COMPLETED
    counter: CounterId
    called_at: AwareDatetime
    completed_at: AwareDatetime
    outcome: Outcome = Outcome.SERVED


class TicketNoShow(TicketFacts):
    event = "no_show"
    status_after: ClassVar[TicketStatus] = TicketStatus.NO_SHOW
    counter: CounterId
    marked_at: AwareDatetime
    recalls: int = Field(default=0, ge=0)


class TicketTransferred(TicketFacts):
    event = "transferred"
    status_after: ClassVar[TicketStatus] = TicketStatus.TRANSFERRED
    counter: CounterId
    to_service: ServiceCode
    new_ticket_id: str
    transferred_at: AwareDatetime


class TicketCancelled(TicketFacts):
    event = "cancelled"
    status_after: ClassVar[TicketStatus] = TicketStatus.CANCELLED
    reason: str = Field(max_length=200)
    cancelled_at: AwareDatetime


# --- counter ---------------------------------------------------------------------------------


class CounterOpened(EventData):
    entity = "counter"
    event = "opened"
    publisher = "queue"

    counter: CounterId
    session_id: str
    services: list[ServiceCode]
    at: AwareDatetime


class CounterClosed(EventData):
    entity = "counter"
    event = "closed"
    publisher = "queue"

    counter: CounterId
    session_id: str
    at: AwareDatetime
    # A pause (break, prayer) rather than the end of the counter's session.
    paused: bool = False


# --- notification ----------------------------------------------------------------------------


class NotificationFacts(EventData):
    """Fields both notification events carry."""

    entity = "notification"
    event = "facts"
    publisher = "notify"

    delivery_id: str
    cause_event_id: str
    cause_type: str
    request_id: str | None = None
    ticket_id: str | None = None
    channel: str
    template: str


class NotificationSent(NotificationFacts):
    event = "sent"

    cost_units: int = Field(ge=0)
    sent_at: AwareDatetime


class NotificationFailed(NotificationFacts):
    event = "failed"

    reason: str = Field(max_length=500)
    failed_at: AwareDatetime
    # The gateway answered and said no (its reason, phone numbers masked), as opposed to a
    # gateway that could not be reached.
    refused: bool = False


class DeliveryOutcome(StrEnum):
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"


class NotificationReceipt(NotificationFacts):
    """A gateway's delivery report on a message it had accepted: delivered to the phone, or not."""

    event = "receipt"

    outcome: DeliveryOutcome
    reason: str | None = Field(default=None, max_length=500)
    reported_at: AwareDatetime


# --- feedback --------------------------------------------------------------------------------


SkmScore = Annotated[int, Field(ge=1, le=4)]


class FeedbackSubmitted(EventData):
    """An SKM answer (PermenPANRB 14/2017): elements U1..U9, each on a 1-4 scale."""

    entity = "feedback"
    event = "submitted"
    publisher = "intake"

    feedback_id: str
    request_id: str
    session_id: str
    service: ServiceCode
    scores: dict[Annotated[str, StringConstraints(pattern=r"^U[1-9]$")], SkmScore] = Field(
        min_length=9, max_length=9
    )
    submitted_at: AwareDatetime


EVENT_MODELS: tuple[type[EventData], ...] = (
    RequestSubmitted,
    CitizenContact,
    RequestCancelled,
    RequestCheckedIn,
    RequestLinkRequested,
    TicketIssued,
    TicketCalled,
    TicketRecalled,
    TicketStarted,
    TicketCompleted,
    TicketNoShow,
    TicketTransferred,
    TicketCancelled,
    CounterOpened,
    CounterClosed,
    NotificationSent,
    NotificationFailed,
    NotificationReceipt,
    FeedbackSubmitted,
)
EVENTS_BY_TYPE: dict[str, type[EventData]] = {m.type_name(): m for m in EVENT_MODELS}
TICKET_EVENTS: tuple[type[TicketFacts], ...] = tuple(
    m for m in EVENT_MODELS if issubclass(m, TicketFacts)
)


class UnknownEventType(ValueError):
    """A type this build does not know: newer producers may publish it; consumers skip it."""


def parse_event(raw: bytes | str | dict[str, Any]) -> Event[EventData]:
    """Validate an envelope and its payload against the model its `type` names.

    Raises UnknownEventType for an unknown type and pydantic.ValidationError for a malformed one.
    """
    envelope = (
        Event[dict[str, Any]].model_validate(raw)  # type: ignore[type-var]
        if isinstance(raw, dict)
        else Event[dict[str, Any]].model_validate_json(raw)  # type: ignore[type-var]
    )
    model = EVENTS_BY_TYPE.get(envelope.type)
    if model is None:
        raise UnknownEventType(envelope.type)
    parsed: Event[EventData] = Event[model].model_validate(  # type: ignore[valid-type]
        envelope.model_dump(mode="json")
    )
    return parsed


__all__ = ["EVENTS_BY_TYPE", "EVENT_MODELS", "UnknownEventType", "ValidationError", "parse_event"]
