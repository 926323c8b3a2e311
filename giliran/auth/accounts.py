"""Accounts, roles, API tokens and login sessions, kept in the shared `<prefix>_auth` database."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from giliran.contracts import utcnow
from giliran.store import Document, from_instant, indexed, instant

ALL_SITES = "*"
SESSION_LIFETIME = timedelta(hours=12)
# Password guessing: after this many failed sign-ins for one user name within the window,
# that name is refused (429) until the window ends, right password or not.
LOGIN_FAILURES_ALLOWED = 5
LOGIN_FAILURE_WINDOW = timedelta(minutes=15)
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

    def at(self, site: str) -> bool:
        """The one rule of where anybody may act, every role alike (an admin of one site
        administers that site; only accounts of `*` act everywhere): the path's site, and
        the site of every object a request names, must pass it."""
        return self.site in (ALL_SITES, site)


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

    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self.users = database["users"]
        self.tokens = database["tokens"]
        self.sessions = database["sessions"]
        self.login_failures = database["login_failures"]

    async def ensure_indexes(self) -> None:
        await self.tokens.create_index("digest", unique=True)
        await self.sessions.create_index("digest", unique=True)
        await self.login_failures.create_index("name")

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
        await self.sessions.delete_many(indexed({"user": name}))
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

    async def failed_sign_ins(self, name: str, address: str, now: datetime) -> int:
        """Failed sign-ins for this user name from this address in the current window. Per
        address: someone who knows an officer's name cannot lock the officer out from afar."""
        doc = await self.login_failures.find_one({"_id": self._attempts_key(name, address)})
        if doc is None or from_instant(doc["since"]) + LOGIN_FAILURE_WINDOW <= now:
            return 0
        return int(doc["failures"])

    async def note_failed_sign_in(self, name: str, address: str, now: datetime) -> None:
        key = self._attempts_key(name, address)
        if await self.failed_sign_ins(name, address, now) == 0:
            # A new window (two racing failures may count once: a throttle, not a ledger).
            fresh = {"failures": 1, "since": instant(now), "name": self._digest(name.lower())}
            await self.login_failures.replace_one({"_id": key}, {"_id": key, **fresh}, upsert=True)
        else:
            await self.login_failures.update_one({"_id": key}, {"$inc": {"failures": 1}})

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
        return found.matched_count == 1

    async def list_tokens(self) -> list[Document]:
        return [
            {k: v for k, v in doc.items() if k != "digest"} async for doc in self.tokens.find({})
        ]

    async def by_token(self, token: str) -> Principal | None:
        doc = await self.tokens.find_one(indexed({"digest": token_digest(token)}))
        if doc is None or doc.get("revoked"):
            return None
        return Principal(str(doc["label"]), Role(doc["role"]), str(doc["site"]), "token")

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
        await self.sessions.delete_one(indexed({"digest": token_digest(session_id)}))

    async def by_session(self, session_id: str) -> Principal | None:
        session = await self.sessions.find_one(indexed({"digest": token_digest(session_id)}))
        if session is None or from_instant(session["expires_at"]) < utcnow():
            return None
        user = await self.users.find_one({"_id": session["user"]})
        if user is None or user.get("disabled"):
            return None
        return Principal(
            str(user["_id"]), Role(user["role"]), str(user["site"]), "session", session_id
        )

    async def forget_expired(self, now: datetime | None = None) -> int:
        gone = await self.sessions.delete_many({"expires_at": {"$lt": instant(now or utcnow())}})
        return gone.deleted_count


def public_user(doc: Document) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "password"}
