"""Queue rules with no I/O: ticket numbers and ids, which status allows which action, errors."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Literal

from giliran.catalogue import CounterDef, SiteDef
from giliran.contracts import TicketStatus
from giliran.errors import Conflict, DomainError, NotFound
from giliran.settings import Settings
from services.queue.rules import CallPolicy

W, C, S = TicketStatus.WAITING, TicketStatus.CALLED, TicketStatus.SERVING
BEING_SERVED: frozenset[TicketStatus] = frozenset({C, S})
TERMINAL: frozenset[TicketStatus] = frozenset(
    {TicketStatus.COMPLETED, TicketStatus.NO_SHOW, TicketStatus.TRANSFERRED, TicketStatus.CANCELLED}
)

Action = Literal[
    "call", "recall", "start", "complete", "no_show", "recheck_in", "transfer", "cancel"
]

# The statuses each action may start from; anything else is a 409 with the reason in words.
ALLOWED: dict[Action, frozenset[TicketStatus]] = {
    "call": frozenset({W}),
    "recall": frozenset({C}),
    "start": frozenset({C}),
    "complete": frozenset({C, S}),
    "no_show": frozenset({C}),
    "recheck_in": frozenset({TicketStatus.NO_SHOW}),
    "transfer": frozenset({C, S}),
    "cancel": frozenset({W, C, S}),
}

ACTION_WORDS: dict[Action, tuple[str, str]] = {
    "call": ("dipanggil", "called"),
    "recall": ("dipanggil ulang", "recalled"),
    "start": ("mulai dilayani", "started"),
    "complete": ("diselesaikan", "completed"),
    "no_show": ("ditandai tidak hadir", "marked as a no-show"),
    "recheck_in": ("didaftarkan ulang", "re-checked-in"),
    "transfer": ("dialihkan", "transferred"),
    "cancel": ("dibatalkan", "cancelled"),
}

STATUS_WORDS: dict[TicketStatus, tuple[str, str]] = {
    W: ("menunggu", "waiting"),
    C: ("sudah dipanggil", "called"),
    S: ("sedang dilayani", "being served"),
    TicketStatus.COMPLETED: ("selesai", "completed"),
    TicketStatus.NO_SHOW: ("tidak hadir", "a no-show"),
    TicketStatus.TRANSFERRED: ("sudah dialihkan", "transferred"),
    TicketStatus.CANCELLED: ("dibatalkan", "cancelled"),
}


def format_number(prefix: str, seq: int) -> str:
    """The one place a ticket number is formatted: prefix, dash, at least three digits (A-001)."""
    if seq < 1:
        raise ValueError("ticket sequence starts at 1")
    return f"{prefix}-{seq:03d}"


def ticket_id_for(request_id: str, service: str) -> str:
    """Deterministic, so issuing twice for the same request and service cannot make two tickets."""
    return f"{request_id}-{service}"


def transferred_id(ticket_id: str, to_service: str) -> str:
    """Deterministic too: a retried transfer finds the ticket it already made."""
    return f"{ticket_id}~{to_service}"


def rechecked_id(ticket_id: str) -> str:
    return f"{ticket_id}~R"


def line_key(session_id: str, prefix: str) -> str:
    """Numbers run per session and per line: A-001 starts again in every session."""
    return f"{session_id}:{prefix}"


def policy_from(settings: Settings) -> CallPolicy:
    return CallPolicy(
        normal_per_priority=settings.queue_normal_per_priority,
        max_wait=timedelta(minutes=settings.queue_max_wait_minutes),
        appointment_grace=timedelta(minutes=settings.queue_appointment_grace_minutes),
    )


# --- errors ----------------------------------------------------------------------------------


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


class UnknownService(NotFound):
    code = "unknown_service"

    def __init__(self, site: str, codes: Iterable[str]) -> None:
        listed = ", ".join(codes)
        super().__init__(
            f"Layanan {listed} tidak tersedia di lokasi '{site}'.",
            f"Service(s) {listed} are not offered at site '{site}'.",
        )


class TicketNotFound(NotFound):
    code = "ticket_not_found"

    def __init__(self, ticket_id: str) -> None:
        super().__init__(
            f"Tiket '{ticket_id}' tidak ditemukan.", f"Ticket '{ticket_id}' not found."
        )


class IllegalTransition(Conflict):
    code = "illegal_transition"

    def __init__(self, action: Action, number: str, status: TicketStatus) -> None:
        did_id, did_en = ACTION_WORDS[action]
        is_id, is_en = STATUS_WORDS[status]
        allowed_id = ", ".join(STATUS_WORDS[s][0] for s in sorted(ALLOWED[action]))
        allowed_en = ", ".join(STATUS_WORDS[s][1] for s in sorted(ALLOWED[action]))
        super().__init__(
            f"Tiket {number} tidak dapat {did_id}: statusnya {is_id} "
            f"(hanya bisa bila {allowed_id}).",
            f"Ticket {number} cannot be {did_en}: it is {is_en} (only when {allowed_en}).",
        )


class NotThisCounter(Conflict):
    code = "not_this_counter"

    def __init__(self, number: str, counter: str) -> None:
        super().__init__(
            f"Tiket {number} bukan milik loket {counter}: loket hanya dapat menindak tiket "
            "di antreannya sendiri.",
            f"Ticket {number} does not belong to counter {counter}: a counter acts only on "
            "tickets of its own lines.",
        )


class CounterBusy(Conflict):
    code = "counter_busy"

    def __init__(self, counter: str, number: str) -> None:
        super().__init__(
            f"Loket {counter} masih melayani {number}: selesaikan, alihkan atau tandai tidak "
            "hadir dulu.",
            f"Counter {counter} is still serving {number}: complete, transfer or mark it a "
            "no-show first.",
        )


class CitizenElsewhere(Conflict):
    code = "citizen_at_another_counter"

    def __init__(self, number: str) -> None:
        super().__init__(
            f"Pemilik tiket {number} sedang dilayani di loket lain; tiket ini menunggu "
            "dengan tempatnya tetap.",
            f"The holder of ticket {number} is being served at another counter; this ticket "
            "keeps its place until then.",
        )


class NotCheckedIn(Conflict):
    code = "not_checked_in"

    def __init__(self, number: str) -> None:
        super().__init__(
            f"Tiket {number} belum check-in di kios.",
            f"Ticket {number} has not checked in at the kiosk yet.",
        )


class RecallsNeeded(Conflict):
    code = "recalls_needed"

    def __init__(self, number: str, needed: int, done: int) -> None:
        super().__init__(
            f"Panggil ulang {number} dulu: tidak hadir baru boleh setelah {needed} kali panggilan "
            f"ulang (sudah {done}).",
            f"Recall {number} first: a no-show needs {needed} recalls (done: {done}).",
        )


class RecheckTooLate(Conflict):
    code = "recheck_too_late"

    def __init__(self, number: str, minutes: float) -> None:
        super().__init__(
            f"Tiket {number} tidak hadir lebih dari {minutes:.0f} menit yang lalu; silakan "
            "ambil nomor baru.",
            f"Ticket {number} was a no-show more than {minutes:.0f} minutes ago; please take "
            "a new number.",
        )


class SameService(Conflict):
    code = "same_service"

    def __init__(self, number: str) -> None:
        super().__init__(
            f"Tiket {number} sudah di layanan itu; pilih layanan lain untuk dialihkan.",
            f"Ticket {number} is already in that service; choose another one to transfer to.",
        )


class SessionOfAnotherSite(DomainError):
    """A session named in a body or query that is not one of the site the caller acts at:
    refused before anything is read or written (an officer serves their own site only)."""

    code = "wrong_site"
    http_status = 403

    def __init__(self, site: str, session_id: str) -> None:
        super().__init__(
            f"Akses ditolak: sesi '{session_id}' bukan sesi lokasi '{site}'.",
            f"Access denied: session '{session_id}' is not a session of site '{site}'.",
        )


class NoSession(Conflict):
    code = "no_session"

    def __init__(self, site: str) -> None:
        super().__init__(
            f"Belum ada sesi layanan yang berjalan di '{site}'.",
            f"No service session is running at '{site}' yet.",
        )


def check_action(action: Action, number: str, status: TicketStatus) -> None:
    if status not in ALLOWED[action]:
        raise IllegalTransition(action, number, status)


def counter_of(site: SiteDef, counter_id: str) -> CounterDef:
    counter = site.counter(counter_id)
    if counter is None:
        raise UnknownCounter(site.site, counter_id)
    return counter


def unknown_services(site: SiteDef, services: Iterable[str]) -> list[str]:
    """Services of a request that this site does not offer (empty when all are known)."""
    return [code for code in services if site.service(code) is None]
