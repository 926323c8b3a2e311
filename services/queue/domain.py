"""Queue rules with no I/O: ticket numbers, which counter may call what, and ticket transitions."""

from __future__ import annotations

from collections.abc import Iterable

from giliran.catalogue import CounterDef, SiteDef
from giliran.contracts import TicketStatus
from giliran.errors import Conflict, NotFound


def format_number(prefix: str, seq: int) -> str:
    """The one place a ticket number is formatted: prefix, dash, at least three digits (A-001)."""
    if seq < 1:
        raise ValueError("ticket sequence starts at 1")
    return f"{prefix}-{seq:03d}"


def ticket_id_for(request_id: str, service: str) -> str:
    """Deterministic, so issuing twice for the same request and service cannot make two tickets."""
    return f"{request_id}-{service}"


def line_key(session_id: str, prefix: str) -> str:
    """Numbers run per session and per line: A-001 starts again in every session."""
    return f"{session_id}:{prefix}"


class UnknownSite(NotFound):
    code = "unknown_site"

    def __init__(self, site: str) -> None:
        super().__init__(f"Lokasi '{site}' tidak dikenal.", f"Unknown site '{site}'.")


class UnknownCounter(NotFound):
    code = "unknown_counter"

    def __init__(self, site: str, counter: str) -> None:
        super().__init__(
            f"Loket '{counter}' tidak ada di lokasi '{site}'.",
            f"Counter '{counter}' does not exist at site '{site}'.",
        )


class TicketNotFound(NotFound):
    code = "ticket_not_found"

    def __init__(self, ticket_id: str) -> None:
        super().__init__(
            f"Tiket '{ticket_id}' tidak ditemukan.", f"Ticket '{ticket_id}' not found."
        )


class TicketNotCompletable(Conflict):
    code = "ticket_not_completable"

    def __init__(self, number: str, status: str) -> None:
        super().__init__(
            f"Tiket {number} tidak sedang dilayani (status: {status}); hanya tiket yang sudah "
            "dipanggil dapat diselesaikan.",
            f"Ticket {number} is not being served (status: {status}); only a called ticket "
            "can be completed.",
        )


def counter_of(site: SiteDef, counter_id: str) -> CounterDef:
    counter = site.counter(counter_id)
    if counter is None:
        raise UnknownCounter(site.site, counter_id)
    return counter


def callable_services(counter: CounterDef) -> list[str]:
    return list(counter.services)


COMPLETABLE: frozenset[TicketStatus] = frozenset({TicketStatus.CALLED})


def check_completable(number: str, status: TicketStatus) -> None:
    if status not in COMPLETABLE:
        raise TicketNotCompletable(number, status.value)


def unknown_services(site: SiteDef, services: Iterable[str]) -> list[str]:
    """Services of a request that this site does not offer (empty when all are known)."""
    return [code for code in services if site.service(code) is None]
