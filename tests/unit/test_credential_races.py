"""A read started before a revoke and answered after it must not put back into memory what the
revoke just made it forget (ADR 0180: revocation is at once). The store is an in-memory fake
that can hold an answer back, to place the revoke between a read and its answer."""

from __future__ import annotations

import asyncio
import copy
from types import SimpleNamespace

from giliran.auth.accounts import AuthStore, Role
from giliran.auth.credentials import Remembered


class Coll:
    def __init__(self):
        self.docs = {}
        self.hold = None  # an asyncio.Event: find_one waits after reading, before answering

    def _match(self, doc, q):
        for k, v in q.items():
            v = v["$eq"] if isinstance(v, dict) and "$eq" in v else v
            if doc.get(k) != v:
                return False
        return True

    async def find_one(self, q, *a, **k):
        found = next((copy.deepcopy(d) for d in self.docs.values() if self._match(d, q)), None)
        if self.hold is not None:
            await self.hold.wait()  # the answer is on its way (store busy, socket, decoding)
        return found

    async def insert_one(self, doc):
        self.docs[doc["_id"]] = copy.deepcopy(doc)

    async def delete_one(self, q):
        for k, d in list(self.docs.items()):
            if self._match(d, q):
                del self.docs[k]
                return SimpleNamespace(deleted_count=1)
        return SimpleNamespace(deleted_count=0)

    async def delete_many(self, q):
        gone = [k for k, d in self.docs.items() if self._match(d, q)]
        for k in gone:
            del self.docs[k]
        return SimpleNamespace(deleted_count=len(gone))

    async def update_one(self, q, u):
        n = 0
        for d in self.docs.values():
            if self._match(d, q):
                d.update(u["$set"])
                n += 1
        return SimpleNamespace(matched_count=n, modified_count=n)

    async def update_many(self, q, u):
        n = 0
        for d in self.docs.values():
            if d.get("label") in q["label"]["$in"] and not d.get("revoked"):
                d.update(u["$set"])
                n += 1
        return SimpleNamespace(matched_count=n, modified_count=n)


class DB(dict):
    def __missing__(self, k):
        self[k] = Coll()
        return self[k]


def test_a_revoke_during_a_read_is_not_undone_by_the_read() -> None:

    async def run():
        store = AuthStore(DB(), Remembered())
        token_id, token = await store.issue_token("tv", Role.DISPLAY, "s")
        gate = asyncio.Event()
        store.tokens.hold = gate
        reading = asyncio.create_task(store.by_token(token))
        await asyncio.sleep(0)  # the read has taken its snapshot and waits for its answer
        store.tokens.hold = None
        assert await store.revoke_token(token_id)
        gate.set()
        assert await reading is not None  # that request was in flight: fine
        # every later request: the token is revoked, the notice was handled...
        assert store.tokens.docs[token_id]["revoked"]
        assert await store.by_token(token) is None, "revoked token still accepted from memory"

    asyncio.run(run())


def test_a_logout_between_the_two_reads_of_a_session_holds() -> None:
    """by_session reads the session, then the user: a logout (or password change) that lands
    between the two reads leaves the ended session in memory for REMEMBER_SECONDS."""

    async def run():
        store = AuthStore(DB(), Remembered())
        await store.users.insert_one(
            {"_id": "ani", "role": "officer", "site": "s", "disabled": False}
        )
        session_id = await store.open_session({"_id": "ani"})
        gate = asyncio.Event()
        store.users.hold = gate  # the session read is done; the user read is on its way
        reading = asyncio.create_task(store.by_session(session_id))
        await asyncio.sleep(0)
        store.users.hold = None
        await store.close_session(session_id)  # logout (set_password takes the same path)
        gate.set()
        await reading
        assert not store.sessions.docs
        assert await store.by_session(session_id) is None, "ended session still accepted"

    asyncio.run(run())


def test_a_change_that_changes_nothing_announces_nothing() -> None:
    async def run() -> None:
        told: list[int] = []

        async def announce() -> None:
            told.append(1)

        store = AuthStore(DB(), Remembered())
        store.on_change = announce
        assert not await store.revoke_token("no-such-token")
        await store.close_session("no-such-session")
        assert await store.revoke_labelled(["nothing-labelled-so"]) == 0
        assert told == []
        token_id, _ = await store.issue_token("tv", Role.DISPLAY, "s")
        assert await store.revoke_token(token_id)
        assert told == [1]

    asyncio.run(run())
