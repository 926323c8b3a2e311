"""`giliran keys rotate-nik`: stored NIKs re-encrypted with the newest key, resumable."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pymongo.asynchronous.collection import AsyncCollection

from giliran.settings import Settings
from giliran.store import Document, connect, indexed
from services.intake.privacy import NikCipher
from services.intake.store import RequestStore

log = logging.getLogger(__name__)


@dataclass
class Rotation:
    """What one pass found: re-encrypted now, already on the newest key, unreadable with every
    configured key (left untouched), and records without a NIK (none given, or purged)."""

    rotated: int = 0
    current: int = 0
    unreadable: int = 0
    without_nik: int = 0


async def rotate_niks(
    requests: AsyncCollection[Document],
    cipher: NikCipher,
    *,
    batch: int = 200,
    max_batches: int | None = None,
) -> Rotation:
    """Walk the requests in `_id` order and re-encrypt every NIK not on the newest key.

    Idempotent and resumable without bookkeeping: a record on the newest key is skipped, so a
    pass stopped anywhere is finished by the next. Each write is conditional on the token it
    read, so a record changed meanwhile (the purge blanking it) is never written back."""
    found = Rotation()
    last = ""
    batches = 0
    while max_batches is None or batches < max_batches:
        docs = await requests.find(
            {"_id": {"$gt": last}}, {"nik_encrypted": 1}, sort=[("_id", 1)], limit=batch
        ).to_list()
        if not docs:
            break
        batches += 1
        for doc in docs:
            last = doc["_id"]
            token = doc.get("nik_encrypted")
            if not isinstance(token, str) or not token:
                found.without_nik += 1
            elif cipher.is_current(token):
                found.current += 1
            elif (fresh := cipher.rotate(token)) is None:
                found.unreadable += 1
            else:
                written = await requests.update_one(
                    indexed({"_id": doc["_id"], "nik_encrypted": token}),
                    {"$set": {"nik_encrypted": fresh}},
                )
                found.rotated += written.modified_count
    return found


async def main(settings: Settings, batch: int) -> int:
    hash_key = settings.nik_hash_key.get_secret_value() if settings.nik_hash_key else ""
    if not hash_key:
        print("GILIRAN_NIK_HASH_KEY belum diisi / is not set")
        return 2
    keys = settings.nik_encryption_key.get_secret_value() if settings.nik_encryption_key else ""
    cipher = NikCipher.from_keys(keys or None, hash_key.encode())
    client = connect(settings.mongo_url)
    try:
        store = RequestStore(client[settings.database_name("intake")])
        found = await rotate_niks(store.requests, cipher, batch=batch)
    finally:
        await client.close()
    print(
        f"NIK: {found.rotated} dienkripsi ulang / re-encrypted, {found.current} sudah dengan "
        f"kunci terbaru / already on the newest key, {found.without_nik} tanpa NIK / without "
        f"a NIK, {found.unreadable} tidak terbaca / unreadable"
    )
    if found.unreadable:
        print(
            "Ada NIK yang tidak terbaca dengan kunci mana pun: tambahkan kunci lamanya ke "
            "GILIRAN_NIK_ENCRYPTION_KEY lalu ulangi. / Some NIKs decrypt with no configured "
            "key: add their old key to GILIRAN_NIK_ENCRYPTION_KEY and run again."
        )
        return 1
    return 0
