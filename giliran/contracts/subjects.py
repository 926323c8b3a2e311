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
# The one service whose NATS user may reshape both streams (ADR 0111): the others may only create
# a missing one, so none of them can cut the history short.
STREAM_OWNER = "queue"

_TOKEN = re.compile(r"^[a-z0-9_-]+$")


def _check(token: str, what: str) -> str:
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"invalid {what} token for a NATS subject: {token!r}")
    return token


def event_subject(site: str, entity: str, event: str) -> str:
    """`giliran.cikarang-utara.ticket.called`."""
    return ".".join(
        (PREFIX, _check(site, "site"), _check(entity, "entity"), _check(event, "event"))
    )


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
