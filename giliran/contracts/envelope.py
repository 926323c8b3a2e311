"""The CloudEvents 1.0 envelope every Giliran event travels in."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from ulid import ULID

from giliran import telemetry
from giliran.contracts.subjects import SiteSlug, event_subject, event_type

# CloudEvents extension attributes (optional, additive: events without them parse as before).
EXTENSIONS = ("correlationid", "traceparent")


def new_id() -> str:
    """A ULID: sortable by creation time, unique without coordination; also the Nats-Msg-Id."""
    return str(ULID())


def utcnow() -> datetime:
    return datetime.now(UTC)


class EventData(BaseModel):
    """Base of every event payload; subclasses name their entity, event and version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entity: ClassVar[str]
    event: ClassVar[str]
    version: ClassVar[int] = 1
    # The one service allowed to publish this event (its NATS user is the only one granted the
    # subject): a consumer dead-letters an event whose `source` names another.
    publisher: ClassVar[str]

    @classmethod
    def type_name(cls) -> str:
        return event_type(cls.entity, cls.event, cls.version)

    def ordering_key(self) -> str | None:
        """Each consumer handles events with the same key in stream order (all events of one
        citizen's request); None: no order needed beyond the event itself."""
        request_id = getattr(self, "request_id", None)
        return str(request_id) if request_id else None

    @classmethod
    def subject_for(cls, site: str) -> str:
        return event_subject(site, cls.entity, cls.event)


DataT = TypeVar("DataT", bound=EventData)


class Event(BaseModel, Generic[DataT]):
    """CloudEvents attributes; `subject` carries the site slug, `data` the typed payload."""

    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=64)
    source: str = Field(min_length=1, max_length=128, description="publishing service")
    type: str = Field(pattern=r"^giliran\.[a-z_]+\.[a-z_]+\.v[0-9]+$")
    time: AwareDatetime
    subject: SiteSlug
    datacontenttype: Literal["application/json"] = "application/json"
    data: DataT
    # The citizen's request this event follows from (giliran.telemetry), and the W3C trace
    # context it was created in (the CloudEvents distributed-tracing extension).
    correlationid: str | None = Field(default=None, max_length=64)
    traceparent: str | None = Field(default=None, max_length=128)

    @property
    def site(self) -> str:
        return self.subject

    @property
    def nats_subject(self) -> str:
        entity, event = self.type.split(".")[1:3]
        return event_subject(self.subject, entity, event)

    def to_json_dict(self) -> dict[str, Any]:
        found = self.model_dump(mode="json")
        for name in EXTENSIONS:  # CloudEvents has no null attributes: absent when unknown
            if found.get(name) is None:
                found.pop(name, None)
        return found


def source_of(publisher: str) -> str:
    """The CloudEvents `source` of events a service publishes."""
    return f"giliran/{publisher}"


def new_event(
    data: DataT, *, site: str, source: str | None = None, at: datetime | None = None
) -> Event[DataT]:
    """`source`: the publishing service, by default the event's declared publisher (any other
    is dead-lettered by consumers; tests of that pass it on purpose)."""
    event_class: Any = Event[type(data)]  # type: ignore[misc]
    event: Event[DataT] = event_class(
        id=new_id(),
        source=source_of(source or type(data).publisher),
        type=data.type_name(),
        time=at or utcnow(),
        subject=site,
        data=data,
        # Created inside a request (HTTP, a consumed event, a resumed ticket): belongs to it.
        correlationid=telemetry.correlation_id(),
        traceparent=telemetry.current_traceparent(),
    )
    return event
