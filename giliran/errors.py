"""Domain errors as values: a stable code and a message in Bahasa Indonesia and English."""

from __future__ import annotations

from typing import ClassVar

from giliran.contracts import Problem


class DomainError(Exception):
    """Raised by domain rules; mapped once to an HTTP status and a bilingual body at the edge."""

    code: ClassVar[str] = "domain_error"
    http_status: ClassVar[int] = 422

    def __init__(self, message_id: str, message_en: str) -> None:
        super().__init__(message_en)
        self.message_id = message_id
        self.message_en = message_en

    def problem(self) -> Problem:
        return Problem(code=self.code, message_id=self.message_id, message_en=self.message_en)


class NotFound(DomainError):
    code = "not_found"
    http_status = 404


class Conflict(DomainError):
    code = "conflict"
    http_status = 409


class Unavailable(DomainError):
    code = "unavailable"
    http_status = 503


class RetryLater(Exception):
    """A handler's own word on when to try again (e.g. a gateway's Retry-After, its own backoff);
    the consumer NAKs the message with this delay."""

    def __init__(self, reason: str, delay_seconds: float) -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds


class Unprocessable(Exception):
    """An event that can never be handled (e.g. it names an unknown site): dead-letter it at once
    instead of retrying."""
