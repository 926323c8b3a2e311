"""Intake's own collections: requests (with their outbox), sessions' calendar, quotas, NIK claims,
check-in codes, rate-limit windows and survey answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from cachetools import LRUCache, TTLCache
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from giliran.contracts import Event, TicketStatus
from giliran.store import (
    OUTBOX,
    OUTBOX_COUNT,
    Database,
    Document,
    from_instant,
    indexed,
    instant,
    outbox_fields,
    with_outbox,
)
from services.intake.models import Request
from services.intake.tickets import TicketEntry, outranking

V = TypeVar("V")
TicketsChange = Callable[[dict[str, Document]], dict[str, Document] | None]

# How long a session fact (a site's calendar overrides, its ad-hoc sessions) read from the store
# is reused (ADR 0176). This instance's own changes replace it at once; a change made through
# ANOTHER instance is seen here within this many seconds.
SESSION_FACTS_SECONDS = 2.0
# Ad-hoc sessions are fetched from a day before the moment asked about, so one answer serves
# `window_of`, which looks two days back, only through a fresh read (see open_adhoc_sessions).
_ADHOC_MARGIN = timedelta(days=1)
# Set on a request stored before survey answers were kept in it, once it gets one (ADR 0177).
LEGACY_FEEDBACK = "feedback_also_in_collection"
CalendarChange = Callable[[Document], Document]


def _key(*parts: str) -> str:
    return "|".join(parts)


# The store's duplicate-key error: how an upsert whose filter refuses an existing document says
# "over the limit" for its own statement of a multi-statement write (ADR 0211).
_DUPLICATE_KEY = 11000
# Windows counted in the quotas collection with a submit's places start with this (ADR 0211).
WINDOW_PREFIX = "phone:"
# Every `_id` that starts with WINDOW_PREFIX (":" + 1 is ";"), as a range the `_id` index serves:
# only the phone windows, wherever they are kept.
_WINDOW_IDS: Document = {"$gte": WINDOW_PREFIX, "$lt": WINDOW_PREFIX[:-1] + ";"}


@dataclass(frozen=True)
class WindowHit:
    """One hit to count in a fixed window kept in the quotas collection (ADR 0211): at most
    `limit` hits per window; `key` starts with WINDOW_PREFIX."""

    key: str
    window_start: str
    limit: int
    expires_at: datetime


@dataclass(frozen=True)
class Place:
    """Places to take in one of a session's quota documents (`registering.Claim` without its
    refusal)."""

    what: str
    limit: int | None
    amount: int


@dataclass(frozen=True)
class Claimed:
    """What `claim_together` took: whether the window's hit was counted (False: over its limit,
    nothing taken), and how many of the places, in the order given, are taken (the first one
    not taken is refused: none left). Their releases are already on the caller's stack."""

    counted: bool
    taken: int


def _instant_or_none(moment: datetime | None) -> str | None:
    return instant(moment) if moment is not None else None


def _ticket_writes(request_id: str, entry: TicketEntry) -> list[tuple[Document, Document]] | None:
    """The two conditional writes that apply `entry` (ADR 0175), the likely one first; None
    when the ticket id is no path the store can address."""
    if "." in entry.ticket_id or entry.ticket_id.startswith("$"):
        return None
    key = f"tickets.{entry.ticket_id}"
    stored = entry.model_dump(mode="json")
    create = (
        {"_id": request_id, key: {"$exists": False}},
        {"$set": {key: stored}, "$inc": {"version": 1}},
    )
    # A later event without a counter keeps the counter the entry has (`applied` too).
    moved = {f"{key}.{k}": v for k, v in stored.items() if not (k == "counter" and v is None)}
    move = (
        {
            "_id": request_id,
            f"{key}.status": {"$nin": outranking(entry.status)},
            f"{key}.event_time": {"$lte": entry.event_time},
        },
        {"$set": moved, "$inc": {"version": 1}},
    )
    # An issued ticket is new to its request, the others are not.
    return [create, move] if entry.status is TicketStatus.WAITING else [move, create]


class Recent(Generic[V]):
    """What the store said lately about a key, kept `ttl` seconds (ADR 0176).

    Safe for facts this service alone writes, always through this repository: each write here
    drops the key at once, and a read that was in flight across a write is not kept (the
    write's generation moved), so this instance never answers from before its own change.
    Another instance's change is seen once the entry expires: at most `ttl` seconds late.

    Readers that miss while a read of the same key and generation is in flight wait for that
    read instead of each sending their own (ADR 0207): when the entry expires under load, every
    registration in flight missed it at once. What they get is what the store said after they
    asked, as their own read would have been; a reader arriving after a write (a new
    generation) never shares a read started before it. A shared read that fails fails its
    waiting readers with the same error: their own read would have met the same store, and a
    store outage must be answered within one server-selection timeout, not one per reader
    in turn (tests/integration/test_dependency_failures.py). One cancelled (its reader gave
    up) is not shared: each waiting reader then reads for itself."""

    def __init__(self, ttl: float, maxsize: int = 1024) -> None:
        self._kept: TTLCache[str, V] = TTLCache(maxsize=maxsize, ttl=ttl)
        self._writes: dict[str, int] = {}
        self._reading: dict[str, tuple[int, asyncio.Future[V]]] = {}

    async def get(self, key: str, load: Callable[[], Awaitable[V]]) -> V:
        if (kept := self._kept.get(key)) is not None:
            return kept
        generation = self._writes.get(key, 0)
        reading = self._reading.get(key)
        if reading is not None and reading[0] == generation:
            shared = reading[1]
            await asyncio.wait([shared])
            if not shared.cancelled():
                return shared.result()  # or its failure, raised
        read: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._reading[key] = (generation, read)
        try:
            value = await load()
        except Exception as exc:
            read.set_exception(exc)
            read.exception()  # retrieved: nobody waiting is no error of its own
            raise
        except BaseException:
            read.cancel()
            raise
        finally:
            if self._reading.get(key, (0, None))[1] is read:
                del self._reading[key]
        read.set_result(value)
        if self._writes.get(key, 0) == generation:
            self._kept[key] = value
        return value

    def wrote(self, key: str) -> None:
        self._writes[key] = self._writes.get(key, 0) + 1
        self._kept.pop(key, None)


class RequestStore:
    def __init__(self, database: Database) -> None:
        self.requests = database["requests"]
        self.sessions = database["adhoc_sessions"]
        self.calendar = database["calendar"]
        self.quotas = database["quotas"]
        self.claims = database["nik_claims"]
        self.codes = database["checkin_codes"]
        self.rates = database["rate_windows"]
        self.feedback = database["feedback"]
        # Which quota documents exist, and whether each was unlimited when last seen (ADR 0211):
        # only a hint choosing the filter of a claim in `claim_together`. Quota documents are
        # not deleted by the code, so "exists" stays true; one gone anyway (an operator's
        # cleanup, a restore) is upserted by the hinted statement, seen in the command's
        # answer, deleted again and claimed by `claim_place` (_drop_stray_quota). The limit
        # can be changed by an admin through any instance, and then the hinted filter does not
        # match: that statement fails and the claim is made again by `claim_place`, which
        # tries both filters. A wrong hint costs commands, never a wrong answer.
        self._quota_kinds: LRUCache[str, bool] = LRUCache(maxsize=4096)
        # Hits counted in `rate_windows` by intake before ADR 0211, for windows still open when
        # this process started (`adopt_rate_windows`): added to the new count of the same
        # window, so an upgrade in the middle of an hour gives no phone a second allowance.
        # Window id -> (hits, when the old document expires); dropped by `forget_rates`.
        self._earlier_hits: dict[str, tuple[int, str]] = {}
        # Session facts read on every registration (ADR 0176); see `Recent` for why it is safe.
        self._calendars: Recent[Document] = Recent(SESSION_FACTS_SECONDS)
        self._adhoc: Recent[tuple[datetime, list[Document]]] = Recent(SESSION_FACTS_SECONDS)

    async def ensure_indexes(self) -> None:
        await self.requests.create_index([("site", 1), ("session_id", 1)])
        await self.requests.create_index([("submitted_at", 1)])
        await self.requests.create_index([("token", 1)])
        await self.requests.create_index([("session_date", 1)])
        await self.requests.create_index([("lapse_at", 1)])
        await self.requests.create_index([("nik_hash", 1)])
        await self.sessions.create_index([("site", 1), ("closes_at", 1)])
        await self.rates.create_index([("expires_at", 1)])
        await self.quotas.create_index([("session_id", 1)])
        await self.claims.create_index([("session_date", 1)])
        await self.codes.create_index([("session_date", 1)])

    # --- requests ---------------------------------------------------------------------------

    async def insert(self, doc: Document, events: Sequence[Event[Any]]) -> None:
        await self.requests.insert_one({**doc, "version": 0, **outbox_fields(events)})

    async def add(self, request: Request, events: Sequence[Event[Any]]) -> Document:
        """Store a new request with its events (its outbox) in one write; its document."""
        doc: Document = {
            "_id": request.request_id,
            "site": request.site,
            "session_id": request.session_id,
            "session_date": request.session_date.isoformat(),
            "services": list(request.services),
            "channel": request.channel.value,
            "language": request.language.value,
            "name": request.name,
            "nik_encrypted": request.nik_encrypted,
            "nik_masked": request.nik_masked,
            "nik_hash": request.nik_hash,
            "phone": request.phone,
            "email": request.email,
            "consent": request.consent,
            "priority": request.priority.value if request.priority else None,
            "appointment_at": _instant_or_none(request.appointment_at),
            "slot": request.slot,
            "arrived": request.arrived,
            "lapse_at": _instant_or_none(request.lapse_at),
            "checkin_code": request.checkin_code,
            "checked_in_at": None,
            "token": request.token,
            "submitted_at": instant(request.submitted_at),
            "tickets": {},
            # Survey answers, one per completed ticket (ADR 0177).
            "feedback": {},
            "cancelled_at": None,
            "purged_at": None,
        }
        await self.insert(doc, events)
        return doc

    async def get(self, request_id: str) -> Document | None:
        return await self.requests.find_one({"_id": request_id}, {"outbox": 0})

    async def by_token(self, token: str) -> Document | None:
        return await self.requests.find_one(indexed({"token": token}), {"outbox": 0})

    async def update_tickets(self, request_id: str, change: TicketsChange) -> bool:
        """Read-modify-write of a request's ticket map with optimistic concurrency (version),
        so two ticket events for one request handled at once never overwrite each other.
        Returns False when the request is unknown."""
        while True:
            doc = await self.requests.find_one({"_id": request_id}, {"tickets": 1, "version": 1})
            if doc is None:
                return False
            changed = change(dict(doc.get("tickets") or {}))
            if changed is None:
                return True
            result = await self.requests.update_one(
                {"_id": request_id, "version": doc["version"]},
                {"$set": {"tickets": changed}, "$inc": {"version": 1}},
            )
            if result.modified_count == 1:
                return True

    async def move_ticket(self, request_id: str, entry: TicketEntry) -> bool:
        """Apply a ticket event to its request in one conditional write, no read (ADR 0175).

        The filters hold the rule of `tickets.applied`: the entry is created if the request
        has none for this ticket, or moved if its status does not outrank the event's and its
        event is not newer. False when neither filter matched: the request is unknown, the
        event is stale or a duplicate the filter refused, or the entry predates `event_time`;
        the caller then decides on a read (`update_tickets`). Concurrent writers (two
        instances, a redelivery) are serialised by the store on the one document."""
        writes = _ticket_writes(request_id, entry)
        if writes is None:
            return False  # not a path the store can address: the read-modify-write handles it
        for query, update in writes:
            if (await self.requests.update_one(query, update)).matched_count == 1:
                return True
        return False

    async def move_tickets(self, moves: Sequence[tuple[str, TicketEntry]]) -> bool:
        """A fetched batch of ticket events in ONE store command: each event's likely write of
        `move_ticket` (create for an issued ticket, move for the others), in stream order.
        True when every one matched; otherwise the caller applies the batch again one event at
        a time (a write that matched here then changes nothing)."""
        ops: list[UpdateOne] = []
        for request_id, entry in moves:
            writes = _ticket_writes(request_id, entry)
            if writes is None:
                return False
            query, update = writes[0]
            ops.append(UpdateOne(query, update))
        result = await self.requests.bulk_write(ops, ordered=True)
        return result.matched_count == len(ops)

    async def tickets_of_requests(
        self, request_ids: Sequence[str]
    ) -> dict[str, tuple[int, dict[str, Document]]]:
        """The ticket maps of several requests in one read, each with its version (for
        `save_tickets`); a request that is not stored is absent."""
        found = await self.requests.find(
            {"_id": {"$in": list(request_ids)}}, {"tickets": 1, "version": 1}
        ).to_list()
        return {str(d["_id"]): (int(d["version"]), dict(d.get("tickets") or {})) for d in found}

    async def save_tickets(
        self, request_id: str, version: int, tickets: dict[str, Document]
    ) -> bool:
        """Write a request's ticket map only if nothing wrote the request since `version` was
        read (optimistic: every write of a request increments it); False otherwise."""
        result = await self.requests.update_one(
            {"_id": request_id, "version": version},
            {"$set": {"tickets": tickets}, "$inc": {"version": 1}},
        )
        return result.matched_count == 1

    async def update_if(
        self, query: Document, fields: Document, events: Sequence[Event[Any]]
    ) -> bool:
        """Set `fields` and record `events` in one write, only if `query` still matches (the
        guard that makes check-in and cancellation happen once)."""
        result = await self.requests.update_one(
            query, with_outbox({"$set": fields, "$inc": {"version": 1}}, events)
        )
        return result.modified_count == 1

    async def lapsing(self, now: datetime, limit: int = 200) -> list[Document]:
        """Registrations not checked in whose grace has passed (ADR 0120)."""
        return await self.requests.find(
            {"lapse_at": {"$lte": instant(now)}, "arrived": False, "cancelled_at": None},
            {"outbox": 0},
            limit=limit,
        ).to_list()

    async def active_for_nik(self, site: str, nik_hash: str, from_date: str) -> list[Document]:
        """A NIK's requests at a site whose session is today or later and not cancelled."""
        found = await self.requests.find(
            indexed({"nik_hash": nik_hash}),
            {"_id": 1, "site": 1, "session_id": 1, "session_date": 1, "phone": 1, "email": 1,
             "cancelled_at": 1},
        ).to_list()  # fmt: skip
        return [
            d
            for d in found
            if d["site"] == site
            and d["session_date"] >= from_date
            and d.get("cancelled_at") is None
        ]

    async def active_in_session(self, session_id: str) -> list[Document]:
        return await self.requests.find(
            {"session_id": session_id, "cancelled_at": None}, {"_id": 1, "site": 1}
        ).to_list()

    async def to_purge(self, before: str, limit: int = 500) -> list[Document]:
        return await self.requests.find(
            {"session_date": {"$lt": before}, "purged_at": None}, {"_id": 1}, limit=limit
        ).to_list()

    async def purge(self, request_id: str, fields: Sequence[str], now: datetime) -> None:
        await self.requests.update_one(
            {"_id": request_id},
            {"$set": {**dict.fromkeys(fields), "purged_at": instant(now)}},
        )

    # --- ad-hoc sessions and the calendar ----------------------------------------------------

    async def save_adhoc_session(self, doc: Document) -> None:
        try:
            await self.sessions.find_one_and_update(
                {"_id": doc["_id"]},
                {"$set": doc},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        finally:
            self._adhoc.wrote(doc["site"])

    async def open_adhoc_sessions(self, site: str, now: datetime) -> list[Document]:
        """A site's ad-hoc sessions still open at `now`. The store is asked for those open a
        day before `now` and the answer kept briefly (`Recent`): each later `now` filters the
        same answer, so a session that closes in between is never offered."""

        async def load() -> tuple[datetime, list[Document]]:
            since = now - _ADHOC_MARGIN
            found = await self.sessions.find(
                {"site": site, "closes_at": {"$gt": instant(since)}}
            ).to_list()
            return since, found

        since, found = await self._adhoc.get(site, load)
        if now < since:  # asked about an earlier moment than the answer covers: ask the store
            self._adhoc.wrote(site)
            since, found = await self._adhoc.get(site, load)
        return [d for d in found if from_instant(d["closes_at"]) > now]

    async def calendar_of(self, site: str) -> Document:
        async def load() -> Document:
            return await self.calendar.find_one({"_id": site}) or {"_id": site, "version": 0}

        return dict(await self._calendars.get(site, load))

    async def change_calendar(self, site: str, change: CalendarChange) -> Document:
        """Optimistic read-modify-write of a site's overrides (admin edits are rare; the maps
        are rewritten whole because the embedded store stores $push-ed documents as text)."""
        self._calendars.wrote(site)  # before and after: no read in between is kept
        try:
            return await self._change_calendar(site, change)
        finally:
            self._calendars.wrote(site)

    async def _change_calendar(self, site: str, change: CalendarChange) -> Document:
        while True:
            current = await self.calendar.find_one({"_id": site})
            if current is None:
                fresh = {**change({"_id": site}), "_id": site, "version": 1}
                try:
                    await self.calendar.insert_one(fresh)
                except DuplicateKeyError:
                    continue  # another admin wrote first: apply the change to theirs
                return fresh
            version = int(current.get("version", 0))
            changed = {**change(dict(current)), "_id": site, "version": version + 1}
            result = await self.calendar.replace_one({"_id": site, "version": version}, changed)
            if result.modified_count == 1:
                return changed

    # --- quotas: a counter document per session and service (or slot) -----------------------

    async def claim_place(
        self, session_id: str, what: str, limit: int | None, amount: int = 1
    ) -> bool:
        """Take `amount` places (a service's minutes, for the counter-minutes budget)
        atomically: a conditional $inc never lets `remaining` go below zero, however many
        registrations race (the quota document is created on first use).
        One round trip when the document exists: the usual case (ADR 0084)."""
        _id = _key(session_id, what)
        # No `$or` in this filter: nx-27017 0.8.1 applies an update whose filter has `_id` and
        # `$or` to another document when the named one does not match (a full service took a
        # place from another service's quota). Two plain filters instead, the likely one first.
        limited: Document = {"_id": _id, "remaining": {"$gte": amount}}
        unlimited: Document = {"_id": _id, "limit": None}
        filters = [limited, unlimited] if limit is not None else [unlimited, limited]
        for attempt in range(2):
            for query in filters:
                taken = await self.quotas.find_one_and_update(
                    query, {"$inc": {"used": amount, "remaining": -amount}}, {"_id": 1}
                )
                if taken is not None:
                    self._quota_kinds[_id] = query is unlimited
                    return True
            if attempt == 0:  # missing (first use) or exhausted: make sure it exists, try again
                await self._create_quota(_id, session_id, what, limit)
        return False

    async def _create_quota(self, _id: str, session_id: str, what: str, limit: int | None) -> None:
        try:
            await self.quotas.insert_one(
                {
                    "_id": _id,
                    "session_id": session_id,
                    "what": what,
                    "limit": limit,
                    "remaining": limit if limit is not None else 0,
                    "used": 0,
                }
            )
        except DuplicateKeyError:
            pass

    async def release_place(self, session_id: str, what: str, amount: int = 1) -> None:
        await self.quotas.update_one(
            {"_id": _key(session_id, what)}, {"$inc": {"used": -amount, "remaining": amount}}
        )

    async def set_limit(self, session_id: str, what: str, limit: int | None) -> Document:
        """Change a quota without losing a concurrent claim: `remaining` is recomputed from
        `used` only if `used` did not move in between."""
        _id = _key(session_id, what)
        while True:
            doc = await self.quotas.find_one({"_id": _id})
            if doc is None:
                try:
                    fresh = {
                        "_id": _id,
                        "session_id": session_id,
                        "what": what,
                        "limit": limit,
                        "remaining": limit if limit is not None else 0,
                        "used": 0,
                    }
                    await self.quotas.insert_one(fresh)
                    self._quota_kinds[_id] = limit is None
                    return fresh
                except DuplicateKeyError:
                    continue
            used = int(doc["used"])
            remaining = max(limit - used, 0) if limit is not None else -used
            result = await self.quotas.update_one(
                {"_id": _id, "used": used}, {"$set": {"limit": limit, "remaining": remaining}}
            )
            if result.matched_count == 1:
                self._quota_kinds[_id] = limit is None
                return {**doc, "limit": limit, "remaining": remaining}

    async def quotas_of(self, session_id: str) -> list[Document]:
        return await self.quotas.find({"session_id": session_id}).to_list()

    async def claim_together(
        self,
        hit: WindowHit | None,
        session_id: str,
        places: Sequence[Place],
        give_back: AsyncExitStack,
    ) -> Claimed:
        """Count `hit` and take `places` in order, stopping at the first refused, in ONE store
        command in the usual case (ADR 0211): an ordered multi-statement update of the quotas
        collection. Each statement is a conditional counter write that upserts on its `_id`:
        when its filter refuses the existing document ("over the limit", "none left"), the
        upsert's insert meets that `_id` and the store reports a duplicate-key error for that
        statement's index; being ordered, nothing after it is applied. Each statement is
        atomic on its own document, as each separate command was, so concurrent submits and
        a second instance are serialised per window and per quota as before.

        A place whose document this instance has not seen yet (first use: an upsert would
        create it wrong), or whose statement is refused, is claimed by `claim_place` instead,
        which creates a missing document and tries both filters (a limit changed by an admin
        meanwhile). Each place taken is put on `give_back` (its release) as soon as it is
        known to be taken, before anything else can fail: the caller's exit stack gives it
        back on any later refusal or failure, including one raised from here (a store error
        in the one command after earlier statements applied, or in a `claim_place`). A window
        hit once counted stays counted, whatever follows (ADR 0211). If the one command itself
        fails without saying which statements applied (a timeout, a lost connection), nothing
        is known to be taken and nothing is given back: the code before could not know either."""
        statements: list[UpdateOne] = []
        if hit is not None:
            _id = _key(hit.key, hit.window_start)
            allowance = hit.limit - self._earlier_hits.get(_id, (0, ""))[0]
            if allowance <= 0:
                return Claimed(counted=False, taken=0)
            statements.append(
                UpdateOne(
                    {"_id": _id, "n": {"$lt": allowance}},
                    {"$inc": {"n": 1}, "$set": {"expires_at": instant(hit.expires_at)}},
                    upsert=True,
                )
            )
        first_place = len(statements)
        for place in places:
            _id = _key(session_id, place.what)
            unlimited = self._quota_kinds.get(_id)
            if unlimited is None:
                break  # not seen yet: claim_place creates it if missing
            query: Document = (
                {"_id": _id, "limit": None}
                if unlimited
                else {"_id": _id, "remaining": {"$gte": place.amount}}
            )
            inc = {"$inc": {"used": place.amount, "remaining": -place.amount}}
            statements.append(UpdateOne(query, inc, upsert=True))
        applied = len(statements)  # statements [0, applied) were applied
        upserted: set[int] = set()
        failure: BulkWriteError | None = None
        if statements:
            try:
                result = await self.quotas.bulk_write(statements, ordered=True)
                upserted = set(result.upserted_ids or {})
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors") or []
                if not errors:
                    raise  # not told which statements applied: nothing known to be taken
                applied = int(errors[0]["index"])
                upserted = {int(u["index"]) for u in exc.details.get("upserted") or []}
                if errors[0].get("code") != _DUPLICATE_KEY:
                    failure = exc
        # places[i]'s statement is statements[first_place + i] when it was sent; those before
        # `applied` were applied (ordered). A quota statement that upserted met no document:
        # a stray (see _drop_stray_quota), not a place taken.
        sent = range(min(applied - first_place, len(places)))
        held = {i for i in sent if first_place + i not in upserted}
        for i in sorted(held):  # on the caller's stack before anything else can fail
            give_back.push_async_callback(
                self.release_place, session_id, places[i].what, places[i].amount
            )
        for i in sent:
            if i not in held:
                self._quota_kinds.pop(_key(session_id, places[i].what), None)
                await self._drop_stray_quota(session_id, places[i].what)
        if failure is not None:
            raise failure
        if hit is not None and applied == 0:
            return Claimed(counted=False, taken=0)
        if first_place <= applied < len(statements):
            # The hinted filter refused: none left, or the limit changed kind meanwhile.
            self._quota_kinds.pop(_key(session_id, places[applied - first_place].what), None)
        # In order: a place the one command did not take is claimed by claim_place. A place
        # held beyond the first refused one (only after a stray) stays on `give_back`: the
        # caller refuses the submit and so gives it back.
        taken = 0
        for i, place in enumerate(places):
            if i not in held:
                if not await self.claim_place(session_id, place.what, place.limit, place.amount):
                    break
                give_back.push_async_callback(
                    self.release_place, session_id, place.what, place.amount
                )
            taken += 1
        return Claimed(counted=True, taken=taken)

    async def _drop_stray_quota(self, session_id: str, what: str) -> None:
        """A hinted quota statement created its document (ADR 0211): the document was gone
        (an operator's cleanup, a restore). That upsert has `used`/`remaining` but no `limit`,
        `session_id` or `what`, so `{limit: null}` would match it forever (never enforced) and
        the admin page would not see it: delete it (only while it still lacks its `limit`)
        and let `claim_place` create it as it should be."""
        await self.quotas.delete_one({"_id": _key(session_id, what), "limit": {"$exists": False}})

    # --- one active request per NIK per session and service ----------------------------------

    async def claim_nik(
        self, session_id: str, service: str, nik_hash: str, request_id: str, session_date: str
    ) -> str | None:
        """None when claimed for `request_id`; else the request that already holds it."""
        _id = _key(session_id, service, nik_hash)
        try:
            await self.claims.insert_one(
                {"_id": _id, "request_id": request_id, "session_date": session_date}
            )
            return None
        except DuplicateKeyError:
            held = await self.claims.find_one({"_id": _id})
            return str(held["request_id"]) if held else None

    async def release_nik(
        self, session_id: str, service: str, nik_hash: str, request_id: str | None = None
    ) -> None:
        """Drop a claim (only `request_id`'s, when given: never a newer holder's)."""
        query: Document = {"_id": _key(session_id, service, nik_hash)}
        if request_id is not None:
            query["request_id"] = request_id
        await self.claims.delete_one(query)

    # --- check-in codes ----------------------------------------------------------------------

    async def reserve_code(
        self,
        site: str,
        session_id: str,
        code: str,
        request_id: str,
        session_date: str,
        valid_until: datetime,
    ) -> bool:
        """A code is unique per site while its session's data is kept (then purged and free
        again), so a kiosk finds a booking by code alone, whichever day it is for; it opens
        the booking only until its session closes (`valid_until`)."""
        try:
            await self.codes.insert_one(
                {
                    "_id": _key(site, code),
                    "session_id": session_id,
                    "request_id": request_id,
                    "session_date": session_date,
                    "valid_until": instant(valid_until),
                }
            )
        except DuplicateKeyError:
            return False
        return True

    async def release_code(self, site: str, code: str) -> None:
        await self.codes.delete_one({"_id": _key(site, code)})

    async def code(self, site: str, code: str) -> Document | None:
        """A check-in code's record: the request it opens and until when."""
        return await self.codes.find_one({"_id": _key(site, code)})

    # --- rate-limit windows --------------------------------------------------------------------

    async def hit(self, key: str, window_start: str, expires_at: datetime) -> int:
        """Count one hit in a fixed window atomically; returns the window's count so far."""
        _id = _key(key, window_start)
        while True:
            try:
                doc = await self.rates.find_one_and_update(
                    {"_id": _id},
                    {"$inc": {"n": 1}, "$set": {"expires_at": instant(expires_at)}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:  # two first hits raced to create the window: count again
                continue
            assert doc is not None  # an upsert returning the document after always finds one
            return int(doc["n"])

    async def unhit(self, key: str, window_start: str) -> None:
        """Take back one hit (an attempt that turned out not to count)."""
        await self.rates.update_one({"_id": _key(key, window_start)}, {"$inc": {"n": -1}})

    async def hits(self, key: str, window_start: str) -> int:
        """A window's count so far, without counting (limits that count only failures)."""
        doc = await self.rates.find_one({"_id": _key(key, window_start)})
        return int(doc["n"]) if doc else 0

    async def forget_rates(self, now: datetime) -> int:
        result = await self.rates.delete_many({"expires_at": {"$lt": instant(now)}})
        # Windows kept with the quotas (ADR 0211); quota documents have no `expires_at` and
        # their ids never start with the prefix (the range keeps them out either way).
        windows = await self.quotas.delete_many(
            {"_id": _WINDOW_IDS, "expires_at": {"$lt": instant(now)}}
        )
        self._earlier_hits = {
            k: (n, until) for k, (n, until) in self._earlier_hits.items() if until >= instant(now)
        }
        return result.deleted_count + windows.deleted_count

    async def adopt_rate_windows(self, now: datetime) -> int:
        """Read the windows of WINDOW_PREFIX that intake counted in `rate_windows` before
        ADR 0211 and that are still open (one read, at start, of the phone windows' `_id`
        range only: the address windows stay in `rate_windows`), so that their hits count
        towards the same window now kept with the quotas. Returns how many were adopted."""
        found = await self.rates.find(
            {"_id": _WINDOW_IDS, "expires_at": {"$gte": instant(now)}},
            {"_id": 1, "n": 1, "expires_at": 1},
        ).to_list()
        self._earlier_hits = {
            str(d["_id"]): (int(d.get("n", 0)), str(d["expires_at"])) for d in found
        }
        return len(self._earlier_hits)

    # --- survey: each answer kept in its request (ADR 0177) ---------------------------------

    async def record_feedback(
        self,
        request_id: str,
        ticket_id: str,
        answer: Document,
        events: Sequence[Event[Any]],
        *,
        legacy: bool = False,
    ) -> bool:
        """Keep a ticket's survey answer in its request, with its event in the request's own
        outbox, in one write that happens only if the request holds no answer for the ticket
        yet (the filter is the once-per-ticket rule, also between instances). `legacy`: the
        request was stored before answers were kept in it (`answered` then also looks in the
        old collection). False: already answered."""
        key = f"feedback.{ticket_id}"
        fields: Document = {key: answer}
        if legacy:
            fields[LEGACY_FEEDBACK] = True
        result = await self.requests.update_one(
            {"_id": request_id, key: {"$exists": False}},
            with_outbox({"$set": fields, "$inc": {"version": 1}}, events),
        )
        return result.modified_count == 1

    @staticmethod
    def answers_kept_inline(request: Document) -> bool:
        """Whether `request` keeps every survey answer of its own (stored since ADR 0177)."""
        return "feedback" in request and not request.get(LEGACY_FEEDBACK)

    async def answered(self, request: Document) -> set[str]:
        """The tickets of `request` whose survey is answered: from the request itself, and for
        a request stored before that, from the old `feedback` collection as well."""
        own = set((request.get("feedback") or {}).keys())
        if self.answers_kept_inline(request):
            return own
        ticket_ids = list((request.get("tickets") or {}).keys())
        return own | (await self.feedback_for(ticket_ids) if ticket_ids else set())

    async def feedback_for(self, ticket_ids: Sequence[str]) -> set[str]:
        """Tickets answered in the old `feedback` collection (before ADR 0177)."""
        found = await self.feedback.find({"_id": {"$in": list(ticket_ids)}}, {"_id": 1}).to_list()
        return {str(d["_id"]) for d in found}

    async def adopt_feedback_outbox(self) -> int:
        """Events still waiting in the old `feedback` collection's outbox (answers written before
        ADR 0177 and not yet published) move into their requests' outboxes, which the relay
        drains; run at start. Each event moves once (the filter), so a crash in between only
        means the move is finished at the next start. Returns how many moved."""
        moved = 0
        pending = self.feedback.find({OUTBOX_COUNT: {"$gt": 0}}, {OUTBOX: 1, "request_id": 1})
        for doc in await pending.to_list():
            for event_id, entry in (doc.get(OUTBOX) or {}).items():
                result = await self.requests.update_one(
                    {"_id": doc["request_id"], f"{OUTBOX}.{event_id}": {"$exists": False}},
                    {"$set": {f"{OUTBOX}.{event_id}": entry}, "$inc": {OUTBOX_COUNT: 1}},
                )
                moved += result.modified_count
            await self.feedback.update_one(
                {"_id": doc["_id"]}, {"$unset": {OUTBOX: ""}, "$set": {OUTBOX_COUNT: 0}}
            )
        return moved

    async def purge_session_keys(self, before: str) -> None:
        """NIK claims and check-in codes of purged sessions carry hashes and links: drop them."""
        await self.claims.delete_many({"session_date": {"$lt": before}})
        await self.codes.delete_many({"session_date": {"$lt": before}})
