"""Which events a consumer may trust: the body's type, site and source against the subject."""

from __future__ import annotations

from giliran.bus import disagreement, subject_event_type
from giliran.contracts import EVENT_MODELS, CounterClosed, Event, EventData, new_event, utcnow
from giliran.settings import SERVICES


def closed(site: str = "cikarang-utara", source: str | None = None) -> Event[EventData]:
    data = CounterClosed(counter="1", session_id=f"{site}-today", at=utcnow())
    event: Event[EventData] = new_event(data, site=site, source=source)
    return event


def test_every_event_names_one_service_as_its_publisher() -> None:
    assert {model.publisher for model in EVENT_MODELS} <= set(SERVICES)


def test_an_event_on_its_own_subject_from_its_publisher_is_trusted() -> None:
    event = closed()
    assert event.source == "giliran/queue"
    assert disagreement("giliran.cikarang-utara.counter.closed", event) is None


def test_type_site_and_source_must_agree_with_the_subject() -> None:
    event = closed()
    wrong_type = disagreement("giliran.cikarang-utara.notification.sent", event)
    assert wrong_type is not None and "giliran.counter.closed.v1" in wrong_type
    wrong_site = disagreement("giliran.botram-babelan.counter.closed", event)
    assert wrong_site is not None and "at cikarang-utara" in wrong_site
    spoofed = disagreement("giliran.cikarang-utara.counter.closed", closed(source="intake"))
    assert spoofed == "source is not giliran/queue, the only publisher of giliran.counter.closed.v1"


def test_the_subject_names_the_event_it_carries() -> None:
    assert subject_event_type("giliran.cikarang-utara.counter.closed") is CounterClosed
    assert subject_event_type("giliran.cikarang-utara.dlq.queue.counter.closed") is None
    assert subject_event_type("giliran.cikarang-utara.nothing.here") is None
