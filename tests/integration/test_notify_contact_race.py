"""A citizen's contact and its request filed at the same moment by notify's two consumers (ADR
0185), against the real embedded store: on a real MongoDB both upserts can find no record, one
inserts and the other's insert fails with a duplicate key, which MongoDB does not retry (the
filter is not the key alone). The loser must still file itself; it used to call itself a repeat
and the phone number was never kept (review of 7 Dec). The embedded store runs one command at a
time, so the race is staged: the other consumer's insert lands between the loser's look and its
insert, exactly as the server would report it."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.errors import DuplicateKeyError

from giliran.settings import Settings
from giliran.store import Document, connect
from services.notify.store import DeliveryStore, Filing

pytestmark = pytest.mark.integration


class Raced:
    """The contacts collection as the loser of the race sees it: its first upsert finds no
    record, the winner's insert lands, and the upsert's own insert fails on the key."""

    def __init__(self, real: Any, winner: Document) -> None:
        self._real = real
        self._winner: Document | None = winner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def update_one(self, query: Document, update: Document, upsert: bool = False) -> Any:
        if upsert and self._winner is not None:
            await self._real.insert_one(self._winner)
            self._winner = None
            raise DuplicateKeyError("E11000 duplicate key error index: _id_")
        return await self._real.update_one(query, update, upsert=upsert)


async def test_a_contact_filed_at_the_same_moment_as_its_request_is_kept(
    settings: Settings,
) -> None:
    client = connect(settings.mongo_url)
    db_name = f"{settings.db_prefix}_contactrace"
    store = DeliveryStore(client[db_name])
    real = store.contacts
    try:
        # The request's consumer wins; the contact's loses the race and must still fill in.
        request_won = {"_id": "r1", "request_event": "e-req", "site": "cikarang-utara",
                       "consent": True, "contact_seen": False, "purged": False}  # fmt: skip
        store.contacts = Raced(real, request_won)  # type: ignore[assignment]
        filed = await store.learn_contact(
            "r1", {"phone": "+6281234567890", "contact_seen": True}, {"site": "x"}, "e-contact"
        )
        assert filed is Filing.NEW
        kept = await real.find_one({"_id": "r1"})
        assert kept is not None
        assert kept["phone"] == "+6281234567890" and kept["contact_seen"]
        assert kept["request_event"] == "e-req" and kept["contact_event"] == "e-contact"
        # The same contact event again is a repeat, and a purged record stays purged.
        assert await store.learn_contact("r1", {"phone": "+62"}, {}, "e-contact") is Filing.REPEAT

        # The contact's consumer wins; the request's loses and must still file itself.
        contact_won = {"_id": "r2", "contact_event": "e-contact2", "phone": "+6289876543210",
                       "contact_seen": True, "purged": False}  # fmt: skip
        store.contacts = Raced(real, contact_won)  # type: ignore[assignment]
        repeat = await store.save_contact("r2", {"site": "cikarang-utara"}, "e-req2")
        assert repeat is False
        kept = await real.find_one({"_id": "r2"})
        assert kept is not None
        assert kept["request_event"] == "e-req2" and kept["phone"] == "+6289876543210"
        store.contacts = real
        assert await store.save_contact("r2", {"site": "cikarang-utara"}, "e-req2") is True
    finally:
        await client.drop_database(db_name)
        await client.close()
