"""Who a token or session belongs to, remembered by the process for a short while (ADR 0180).

Every request with a token and every update of a live stream asked the store who the credential
was: on the hot path that was a store command per counter action and per board update (issue
#17). Safe because every change that can end a credential (revoke, password change, logout) goes
through `AuthStore`, which forgets everything here at once and tells the other processes over
NATS (`CREDENTIALS_CHANGED`, every service watches it); a change that reaches no process (a CLI
run while NATS is down, a lost message) holds at the latest after `REMEMBER_SECONDS`. Only found
credentials are kept, so a flood of made-up tokens cannot fill it with anything but misses, and
a token issued a moment ago is never refused from memory."""

from __future__ import annotations

from datetime import datetime

from cachetools import TTLCache

from giliran.contracts import utcnow

# Plain NATS subject (no stream): a credential changed somewhere, forget what you remember.
CREDENTIALS_CHANGED = "giliran.auth.changed"
# The longest a process may act on a credential that another process ended without telling it.
REMEMBER_SECONDS = 30.0
# Far above the devices, officers and tokens of a kabupaten; bounded whatever callers send.
REMEMBER_AT_MOST = 4096


class Remembered:
    """Found credentials by key, each with the moment it ends (a session) or None (a token)."""

    def __init__(self, seconds: float = REMEMBER_SECONDS, size: int = REMEMBER_AT_MOST) -> None:
        self._found: TTLCache[str, tuple[object, datetime | None]] = TTLCache(size, seconds)
        self.seconds = seconds
        self.forgotten = 0

    def __len__(self) -> int:
        return len(self._found)

    def get(self, key: str) -> object | None:
        if self.seconds <= 0:
            return None
        hit = self._found.get(key)
        if hit is None:
            return None
        value, ends = hit
        if ends is not None and ends < utcnow():
            self._found.pop(key, None)
            return None
        return value

    def put(self, key: str, value: object, ends: datetime | None = None) -> None:
        if self.seconds > 0:
            self._found[key] = (value, ends)

    def forget_all(self) -> None:
        self._found.clear()
        self.forgotten += 1


# One per process: every AuthStore of the process (tests run several services in one) reads and
# forgets the same memory, as the store they stand for is one.
REMEMBERED = Remembered()


def forget_credentials(_: str = "") -> None:
    """What a process does when told that a credential changed (the subject is not needed)."""
    REMEMBERED.forget_all()
