"""Accounts, roles, API tokens and login sessions, kept in the shared `<prefix>_auth` database."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from giliran.auth.credentials import Remembered
from giliran.contracts import utcnow
from giliran.store import Document, from_instant, indexed, instant

ALL_SITES = "*"
SESSION_LIFETIME = timedelta(hours=12)
# Password guessing: after this many failed sign-ins for one user name within the window,
# that name is refused (429) until the window ends, right password or not.
LOGIN_FAILURES_ALLOWED = 5
LOGIN_FAILURE_WINDOW = timedelta(minutes=15)
# ...and after this many failed sign-ins from one address (any names), that address is refused
# except for a name that signed in from this browser before (its known-device cookie). Thirty
# is far above what an office sharing one address mistypes in a quarter hour, and keeps a
# guesser at two a minute (docs/security.md, "Password guessing").
LOGIN_FAILURES_PER_ADDRESS = 30
# A login form is good for this long, and only once (its nonce is remembered that long).
LOGIN_FORM_LIFETIME = timedelta(hours=1)
# One hasher for the process: argon2id with the library's RFC 9106 "low memory" defaults.
_HASHER = PasswordHasher()
# Verifying against this when the user is unknown keeps the answer's timing the same, so a
# login form does not tell which user names exist.
_DUMMY_HASH = _HASHER.hash("giliran-no-such-user")


class Role(StrEnum):
    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    OFFICER = "officer"
    DISPLAY = "display"
    AUDITOR = "auditor"
    # A kiosk device: the only caller that may submit requests as channel "kiosk".
    KIOSK = "kiosk"


class DeviceKind(StrEnum):
    """A device paired from the devices page (docs/devices.md): what it is decides its role."""

    COUNTER = "counter"  # a counter tablet, bound to one counter of one site
    BOARD = "board"  # the waiting-room TV
    KIOSK = "kiosk"  # the touch screen that prints tickets

    @property
    def role(self) -> Role:
        return {
            DeviceKind.COUNTER: Role.OFFICER,
            DeviceKind.BOARD: Role.DISPLAY,
            DeviceKind.KIOSK: Role.KIOSK,
        }[self]


# A pairing QR code is scanned within minutes of being shown; after this it is worthless.
PAIRING_LIFETIME = timedelta(minutes=15)
# Roles whose token may live in a device's cookie (GET /device?token=...): devices only, never
# a person's powers (an admin's token in a year-long cookie would be an admin's browser).
DEVICE_ROLES = frozenset({Role.DISPLAY, Role.KIOSK})


class AccountExists(Exception):
    """`add_user` with a name already taken."""


@dataclass(frozen=True)
class Principal:
    """Who is asking: a logged-in person or a device/integration token."""

    name: str
    role: Role
    site: str  # a site slug, or ALL_SITES
    kind: str  # "session" or "token"
    session_id: str | None = None
    token_id: str | None = None
    # A paired device: what it is, and for a counter tablet the one counter it serves.
    device: DeviceKind | None = None
    counter: str | None = None

    def at(self, site: str) -> bool:
        """The one rule of where anybody may act, every role alike (an admin of one site
        administers that site; only accounts of `*` act everywhere): the path's site, and
        the site of every object a request names, must pass it."""
        return self.site in (ALL_SITES, site)

    @property
    def is_device(self) -> bool:
        """A credential a device may keep in its cookie: a paired device, or a display or
        kiosk token issued from the command line."""
        return self.kind == "token" and (self.device is not None or self.role in DEVICE_ROLES)


def token_digest(token: str) -> str:
    """Tokens are long random strings: a plain SHA-256 is enough to keep them unusable if the
    database leaks (no dictionary to try), and lets a lookup go through an index."""
    return hashlib.sha256(token.encode()).hexdigest()


async def hash_password(password: str) -> str:
    # argon2 costs tens of milliseconds of CPU on purpose: never on the event loop.
    return await asyncio.to_thread(_HASHER.hash, password)


async def verify_password(stored: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


class AuthStore:
    """Users, tokens and sessions. Every service reads it; only the CLI and logins write."""

    def __init__(
        self, database: AsyncDatabase[Document], remember: Remembered | None = None
    ) -> None:
        # Only a process told of every credential change (a service: it watches
        # CREDENTIALS_CHANGED) may remember credentials; a CLI or a script always asks the store.
        self._remembered = remember if remember is not None else Remembered(seconds=0, size=1)
        self.users = database["users"]
        self.tokens = database["tokens"]
        self.sessions = database["sessions"]
        self.login_failures = database["login_failures"]
        self.login_forms = database["login_forms"]
        # Told after every change that can end a credential; the runtime announces it to the
        # other processes (giliran.auth.credentials).
        self.on_change: Callable[[], Awaitable[None]] | None = None

    async def _changed(self) -> None:
        self._remembered.forget_all()
        if self.on_change is not None:
            await self.on_change()

    async def ensure_indexes(self) -> None:
        await self.tokens.create_index("digest", unique=True)
        await self.sessions.create_index("digest", unique=True)
        await self.login_failures.create_index("name")
        await self.login_forms.create_index("used_at")

    # --- people --------------------------------------------------------------------------

    async def add_user(self, name: str, password: str, role: Role, site: str) -> None:
        doc = {
            "_id": name,
            "role": role.value,
            "site": site,
            "password": await hash_password(password),
            "disabled": False,
            "created_at": instant(utcnow()),
        }
        try:
            await self.users.insert_one(doc)
        except DuplicateKeyError as exc:
            raise AccountExists(name) from exc

    async def set_password(self, name: str, password: str) -> bool:
        found = await self.users.update_one(
            {"_id": name}, {"$set": {"password": await hash_password(password)}}
        )
        # A new password ends every open session of that person.
        ended = await self.sessions.delete_many(indexed({"user": name}))
        if ended.deleted_count:
            await self._changed()
        return found.matched_count == 1

    async def authenticate(self, name: str, password: str) -> Document | None:
        user = await self.users.find_one({"_id": name})
        ok = await verify_password(user["password"] if user else None, password)
        if not ok or user is None or user.get("disabled"):
            return None
        return user

    # --- password guessing ----------------------------------------------------------------

    @staticmethod
    def _digest(*parts: str) -> str:
        # User names can be people's names: kept only as digests.
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()

    def _attempts_key(self, name: str, address: str) -> str:
        return self._digest(name.strip().lower(), address)

    def _address_key(self, address: str) -> str:
        # "\x01" cannot start a user name from the form, so never equals a name's key.
        return self._digest("\x01address", address)

    async def _failures(self, key: str, now: datetime) -> int:
        doc = await self.login_failures.find_one({"_id": key})
        if doc is None or from_instant(doc["since"]) + LOGIN_FAILURE_WINDOW <= now:
            return 0
        return int(doc["failures"])

    async def _note_failure(self, key: str, name_digest: str | None, now: datetime) -> None:
        if await self._failures(key, now) == 0:
            # A new window (two racing failures may count once: a throttle, not a ledger).
            fresh = {"failures": 1, "since": instant(now), "name": name_digest}
            await self.login_failures.replace_one({"_id": key}, {"_id": key, **fresh}, upsert=True)
        else:
            await self.login_failures.update_one({"_id": key}, {"$inc": {"failures": 1}})

    async def failed_sign_ins(self, name: str, address: str, now: datetime) -> int:
        """Failed sign-ins for this user name from this address in the current window. Per
        address: someone who knows an officer's name cannot lock the officer out from afar."""
        return await self._failures(self._attempts_key(name, address), now)

    async def failed_sign_ins_from(self, address: str, now: datetime) -> int:
        """Failed sign-ins from this address, whatever the names, in the current window: a
        guesser trying a fresh name each time is counted here."""
        return await self._failures(self._address_key(address), now)

    async def note_failed_sign_in(self, name: str, address: str, now: datetime) -> None:
        name_digest = self._digest(name.strip().lower())
        await self._note_failure(self._attempts_key(name, address), name_digest, now)
        await self._note_failure(self._address_key(address), None, now)

    async def use_login_form(self, nonce: str, now: datetime) -> bool:
        """Spend a login form's nonce: True the first time only (the login CSRF token is
        single-use, so one fetched form cannot drive a stream of guesses)."""
        try:
            await self.login_forms.insert_one(
                {"_id": hashlib.sha256(nonce.encode()).hexdigest(), "used_at": instant(now)}
            )
        except DuplicateKeyError:
            return False
        return True

    async def login_form_used(self, nonce: str) -> bool:
        found = await self.login_forms.find_one({"_id": hashlib.sha256(nonce.encode()).hexdigest()})
        return found is not None

    async def clear_failed_sign_ins(self, name: str, address: str | None = None) -> None:
        """After a successful sign-in (that address), or by an admin (every address)."""
        if address is not None:
            await self.login_failures.delete_one({"_id": self._attempts_key(name, address)})
        else:
            await self.login_failures.delete_many(
                indexed({"name": self._digest(name.strip().lower())})
            )

    # --- tokens --------------------------------------------------------------------------

    async def issue_token(self, label: str, role: Role, site: str) -> tuple[str, str]:
        """A new token (shown once, stored only as its digest) and its id for revoking."""
        token = "gl_" + secrets.token_urlsafe(32)
        token_id = secrets.token_hex(6)
        await self.tokens.insert_one(
            {
                "_id": token_id,
                "digest": token_digest(token),
                "label": label,
                "role": role.value,
                "site": site,
                "revoked": False,
                "created_at": instant(utcnow()),
            }
        )
        return token_id, token

    async def revoke_token(self, token_id: str) -> bool:
        found = await self.tokens.update_one(
            {"_id": token_id}, {"$set": {"revoked": True, "revoked_at": instant(utcnow())}}
        )
        if found.matched_count:
            await self._changed()
        return found.matched_count == 1

    async def revoke_labelled(self, labels: Sequence[str]) -> int:
        """Revoke every live token with one of these labels (`giliran up --demo` ends the
        tokens it printed at earlier starts); the count revoked."""
        found = await self.tokens.update_many(
            {"label": {"$in": list(labels)}, "revoked": False},
            {"$set": {"revoked": True, "revoked_at": instant(utcnow())}},
        )
        if found.modified_count:
            await self._changed()
        return found.modified_count

    async def list_tokens(self) -> list[Document]:
        return [
            {k: v for k, v in doc.items() if k != "digest"} async for doc in self.tokens.find({})
        ]

    async def by_token(self, token: str, *, fresh: bool = False) -> Principal | None:
        """Who a token is; `fresh` asks the store even if this process remembers it (actions)."""
        digest = token_digest(token)
        remembered = None if fresh else self._remembered.get("token:" + digest)
        if isinstance(remembered, Principal):
            return remembered
        # A change announced while we read must not be undone by putting what we read back.
        generation = self._remembered.forgotten
        doc = await self.tokens.find_one(indexed({"digest": digest}))
        if doc is None or doc.get("revoked"):
            return None
        found = _token_principal(doc)
        if self._remembered.forgotten == generation:
            self._remembered.put("token:" + digest, found)
            self._remembered.put("token-id:" + str(doc["_id"]), found)
        return found

    async def still_valid(self, who: Principal) -> bool:
        """Whether the credential `who` came with still holds (a stream open for hours asks
        again before each update: a revoked device or ended session gets nothing more)."""
        if who.session_id is not None:
            return await self.by_session(who.session_id) is not None
        if who.token_id is None:
            return True  # the legacy admin token: valid while configured
        if self._remembered.get("token-id:" + who.token_id) is not None:
            return True
        generation = self._remembered.forgotten
        doc = await self.tokens.find_one({"_id": who.token_id})
        valid = doc is not None and not doc.get("revoked")
        if valid and self._remembered.forgotten == generation:
            self._remembered.put("token-id:" + who.token_id, who)
        return valid

    # --- paired devices (docs/devices.md) --------------------------------------------------

    async def start_pairing(
        self,
        kind: DeviceKind,
        site: str,
        label: str,
        *,
        counter: str | None = None,
        by: str = "",
        lifetime: timedelta = PAIRING_LIFETIME,
    ) -> tuple[str, str]:
        """A device waiting to be paired and its one-time pairing code (shown once, as a QR
        code; stored only as its digest). The device's own token does not exist yet: it is
        made when the code is used, so nobody but the device ever holds it."""
        if (kind is DeviceKind.COUNTER) != (counter is not None):
            raise ValueError("a counter tablet names its counter; other devices name none")
        code = secrets.token_urlsafe(12)
        token_id = secrets.token_hex(6)
        now = utcnow()
        await self.tokens.insert_one(
            {
                "_id": token_id,
                # Unique index: a placeholder nobody can present until the device pairs.
                "digest": token_digest(secrets.token_urlsafe(32)),
                "label": label,
                "role": kind.role.value,
                "site": site,
                "device": kind.value,
                "counter": counter,
                "revoked": False,
                "created_at": instant(now),
                "created_by": by,
                "pairing": token_digest(code),
                "pairing_expires": instant(now + lifetime),
                "paired_at": None,
            }
        )
        return token_id, code

    async def pair(self, code: str) -> tuple[str, Principal] | None:
        """Use a pairing code, once: the device's new long-lived token and who it is; None
        for a code unknown, used, expired or revoked."""
        token = "gl_" + secrets.token_urlsafe(32)
        now = utcnow()
        doc = await self.tokens.find_one_and_update(
            {
                "pairing": {"$eq": token_digest(code)},
                "paired_at": None,
                "revoked": False,
                "pairing_expires": {"$gt": instant(now)},
            },
            {
                "$set": {"digest": token_digest(token), "paired_at": instant(now)},
                "$unset": {"pairing": ""},
            },
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            return None
        return token, _token_principal(doc)

    async def devices(self, site: str) -> list[Document]:
        """The site's devices, paired or waiting, newest first (never a digest or code)."""
        found = self.tokens.find({"site": {"$eq": site}, "device": {"$ne": None}})
        now = instant(utcnow())
        docs = [
            {
                **{k: v for k, v in doc.items() if k not in ("digest", "pairing")},
                # A code nobody scanned in time: shown as such, it can no longer pair.
                "expired": not doc.get("paired_at") and str(doc.get("pairing_expires")) <= now,
            }
            async for doc in found
        ]
        return sorted(docs, key=lambda d: str(d.get("created_at")), reverse=True)

    async def device(self, token_id: str) -> Document | None:
        return await self.tokens.find_one({"_id": token_id, "device": {"$ne": None}})

    async def forget_unpaired(self, created_by: str) -> int:
        """Drop the pairings `created_by` left unused (`giliran up --lan` makes fresh ones at
        every start)."""
        gone = await self.tokens.delete_many(
            {"created_by": {"$eq": created_by}, "paired_at": None, "device": {"$ne": None}}
        )
        return gone.deleted_count

    # --- login sessions ------------------------------------------------------------------

    async def open_session(self, user: Document) -> str:
        """A fresh session id at every login (never one the browser brought: no fixation)."""
        session_id = secrets.token_urlsafe(32)
        await self.sessions.insert_one(
            {
                "_id": secrets.token_hex(8),
                "digest": token_digest(session_id),
                "user": user["_id"],
                "expires_at": instant(utcnow() + SESSION_LIFETIME),
            }
        )
        return session_id

    async def close_session(self, session_id: str) -> None:
        ended = await self.sessions.delete_one(indexed({"digest": token_digest(session_id)}))
        if ended.deleted_count:
            await self._changed()

    async def by_session(self, session_id: str, *, fresh: bool = False) -> Principal | None:
        """Who a session is; `fresh` asks the store even if this process remembers it."""
        digest = token_digest(session_id)
        remembered = None if fresh else self._remembered.get("session:" + digest)
        if isinstance(remembered, Principal):
            return remembered
        generation = self._remembered.forgotten
        session = await self.sessions.find_one(indexed({"digest": digest}))
        if session is None:
            return None
        ends = from_instant(session["expires_at"])
        if ends < utcnow():
            return None
        user = await self.users.find_one({"_id": session["user"]})
        if user is None or user.get("disabled"):
            return None
        found = Principal(
            str(user["_id"]), Role(user["role"]), str(user["site"]), "session", session_id
        )
        if self._remembered.forgotten == generation:
            self._remembered.put("session:" + digest, found, ends)
        return found

    async def forget_expired(self, now: datetime | None = None) -> int:
        now = now or utcnow()
        gone = await self.sessions.delete_many({"expires_at": {"$lt": instant(now)}})
        # A spent form nonce only needs remembering while its form could still be accepted.
        await self.login_forms.delete_many({"used_at": {"$lt": instant(now - LOGIN_FORM_LIFETIME)}})
        return gone.deleted_count


def _token_principal(doc: Document) -> Principal:
    device = doc.get("device")
    return Principal(
        str(doc["label"]),
        Role(doc["role"]),
        str(doc["site"]),
        "token",
        token_id=str(doc["_id"]),
        device=DeviceKind(device) if device else None,
        counter=doc.get("counter"),
    )


def public_user(doc: Document) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "password"}
