"""Subject names and versioned event type names: the addresses of Giliran's published language."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

PREFIX = "giliran"
SITE_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
SiteSlug = Annotated[str, StringConstraints(pattern=SITE_PATTERN, min_length=2, max_length=63)]

# One stream holds every event: giliran.<site>.<entity>.<event> (exactly four tokens).
STREAM = "GILIRAN"
STREAM_SUBJECTS = [f"{PREFIX}.*.*.*"]
# Dead letters: giliran.<site>.dlq.<service>.<entity>.<event> (six tokens, so no overlap).
DLQ_STREAM = "GILIRAN_DLQ"
DLQ_SUBJECTS = [f"{PREFIX}.*.dlq.*.*.*"]
DUPLICATE_WINDOW_SECONDS = 120.0
# What reaches a citizen (phone, e-mail, status-link token) travels apart, on a stream that keeps
# it no longer than its retention (docs/decisions/0115): giliran.<site>.personal.<entity>.<event>
# (five tokens, so inside neither stream above). The (entity, event) pairs published there:
PERSONAL_STREAM = "GILIRAN_PERSONAL"
PERSONAL_SUBJECTS = [f"{PREFIX}.*.personal.*.*"]
PERSONAL_EVENTS = frozenset({("citizen", "contact")})
# The one service whose NATS user may reshape both streams (ADR 0111): the others may only create
# a missing one, so none of them can cut the history short.
STREAM_OWNER = "queue"
# Calendar changes made at a kabupaten hub, for the site boxes (giliran_ops.edge, ADR 0061).
CATALOGUE_STREAM = "GILIRAN_CATALOGUE"
CATALOGUE_PREFIX = f"{PREFIX}.catalogue"

_TOKEN = re.compile(r"^[a-z0-9_-]+$")


def _check(token: str, what: str) -> str:
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"invalid {what} token for a NATS subject: {token!r}")
    return token


def event_subject(site: str, entity: str, event: str) -> str:
    """`giliran.cikarang-utara.ticket.called`; a personal event's subject is on the personal
    stream: `giliran.cikarang-utara.personal.citizen.contact`."""
    personal = ("personal",) if (entity, event) in PERSONAL_EVENTS else ()
    return ".".join(
        (PREFIX, _check(site, "site"), *personal, _check(entity, "entity"), _check(event, "event"))
    )


def event_pattern(entity: str, event: str) -> str:
    """The subjects of one event type at every site."""
    return event_subject("x", entity, event).replace(f"{PREFIX}.x.", f"{PREFIX}.*.", 1)


def stream_of(subject: str) -> str:
    """The stream an event subject belongs to."""
    parts = subject.split(".")
    return PERSONAL_STREAM if len(parts) == 5 and parts[2] == "personal" else STREAM


def personal_events(site: str = "*") -> str:
    return f"{PREFIX}.{site}.personal.*.*"


def all_events(site: str = "*") -> str:
    return f"{PREFIX}.{site}.*.*"


def entity_events(entity: str, site: str = "*") -> str:
    return f"{PREFIX}.{site}.{_check(entity, 'entity')}.*"


def command_subject(site: str, service: str, action: str) -> str:
    """`giliran.cikarang-utara.cmd.queue.call_next` (request-reply, never stored)."""
    return ".".join(
        (PREFIX, _check(site, "site"), "cmd", _check(service, "service"), _check(action, "action"))
    )


def command_pattern(service: str, action: str) -> str:
    return f"{PREFIX}.*.cmd.{_check(service, 'service')}.{_check(action, 'action')}"


def dead_letter_subject(original_subject: str, service: str) -> str:
    """Where a message `service` could not handle goes, keeping the original site/entity/event."""
    parts = original_subject.split(".")
    if len(parts) == 5 and parts[0] == PREFIX and parts[2] == "personal":
        parts = [parts[0], parts[1], parts[3], parts[4]]
    if len(parts) == 4 and parts[0] == PREFIX:
        site, entity, event = parts[1], parts[2], parts[3]
    else:
        site, entity, event = "unknown", "unknown", "unknown"
    return ".".join((PREFIX, site, "dlq", _check(service, "service"), entity, event))


def event_type(entity: str, event: str, version: int) -> str:
    """`giliran.ticket.called.v1`: never change what a published version means."""
    return f"{PREFIX}.{entity}.{event}.v{version}"


def site_of(subject: str) -> str | None:
    parts = subject.split(".")
    return parts[1] if len(parts) >= 2 and parts[0] == PREFIX else None


def session_of_site(site: str, session_id: str) -> bool:
    """Whether `session_id` is shaped as one of `site`'s sessions, as intake names them:
    `<site>-YYYYMMDD`, or `<site>-demo-YYYYMMDD` for `giliran up --demo`. Exactly a date after
    the slug and its hyphen: a bare prefix test would let `botram-setu-...` pass for `botram`."""
    rest = session_id.removeprefix(f"{site}-")
    day = rest.removeprefix("demo-")
    return rest != session_id and len(day) == 8 and day.isdigit()


def inbox_prefix(user: str) -> str:
    """Each user's replies arrive under its own prefix, so no user can read another's replies
    (JetStream API answers, fetched messages, command replies)."""
    return f"_INBOX.{user}"


def device_user(site: str) -> str:
    return f"device-{site}"


def catalogue_subject(site: str) -> str:
    return f"{CATALOGUE_PREFIX}.{site}"
