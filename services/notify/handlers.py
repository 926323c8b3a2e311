"""Notify use cases, one worker per channel: learn contacts, follow tickets, send each message
once (recorded before and after), retry with backoff, drop stale ones, purge contacts."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cachetools import TTLCache

from giliran.contracts import (
    CitizenContact,
    DeliveryOutcome,
    Event,
    EventData,
    NotificationFailed,
    NotificationReceipt,
    NotificationSent,
    RequestCancelled,
    RequestLinkRequested,
    RequestSubmitted,
    TicketCalled,
    TicketFacts,
    TicketIssued,
    TicketStatus,
    new_event,
    utcnow,
)
from giliran.errors import Conflict, NotFound, RetryLater, Unprocessable
from giliran.privacy import scrub
from giliran.store import Document, instant
from services.notify import batching
from services.notify.channels import (
    Channel,
    Contact,
    Outgoing,
    PermanentFailure,
    Recipient,
    Refused,
    TransientFailure,
)
from services.notify.channels.console import ConsoleChannel
from services.notify.channels.webhook import WebhookChannel
from services.notify.channels.whatsapp_cloud import WhatsAppCloudChannel
from services.notify.config import NotifyConfig, Retry
from services.notify.contacts import ContactBook, ContactUnknown
from services.notify.domain import (
    APPROACHING,
    CANCELLED_TEMPLATE,
    STATUS_LINK,
    TEMPLATE_OF,
    Claim,
    DeliveryStatus,
    Go,
    Renderer,
    Step,
    approaching_due,
    delivery_id,
    first_status,
    is_requests_ticket,
    is_stale,
    next_step,
    plan_message,
)
from services.notify.gateways import Receipt, receipt_key
from services.notify.metrics import NotifyMetrics
from services.notify.store import (
    RELEASED_AT,
    Advance,
    Delivery,
    DeliveryStore,
    ForeignTicket,
    NotRequestsTicket,
    Record,
    WaitingTicket,
)

log = logging.getLogger("giliran.notify")
SOURCE = "notify"
# At most this many events reach a consumer at once (giliran/bus.py fetches 64), all of them
# waiting for the channel's rate limiter in the worst case.
FETCH_BATCH = 64
# What the console channel's consumer fetches at once. A consumer has one batch in hand at a
# time, and a batch lasts as long as its slowest request's chain of store round trips (each write
# a group-commit flush, ADR 0219), not as long as its CPU work: beside a busy store each round
# trip waits in the store's queue, and notify fell behind at 40 lifecycles/s using 12% of a core.
# More requests per batch ride the same chain (ADR 0225). Console sends over no wire, so no
# gateway sees a bigger burst; paced channels keep 64: their pace bounds them first, and their
# hold covers a whole batch's wait in the rate limiter (`_hold_seconds`).
UNPACED_FETCH_BATCH = 256
HOLD_MARGIN_SECONDS = 10.0
# A claim saved on a loaded ticket loses to a write made in between at most this often before the
# event is retried later (each loss means another event of the ticket was handled meanwhile).
TAKE_TRIES = 5
# A ticket waits at most a day in its line: "told" is remembered that long.
TOLD_SECONDS = 24 * 3600.0


@dataclass
class ReceiptTally:
    """What one delivery report did: recorded outcomes, reports already recorded (replays),
    intermediate states, and ids this site has no accepted message for."""

    recorded: int = 0
    repeated: int = 0
    pending: int = 0
    unknown: int = 0


@dataclass(frozen=True)
class Made:
    """One message made for one recipient on this channel: its delivery id (from its cause, so
    sending it is idempotent), what the log records about it, and what goes on the wire."""

    key: str
    cause: str
    site: str
    template: str
    recipient: Recipient
    facts: Document
    outgoing: Callable[[str], Outgoing]

    def deliver(self) -> dict[str, Any]:
        """`ChannelWorker._deliver`'s arguments (the log's own holds, ADR 0165)."""
        return {
            "cause": self.cause,
            "site": self.site,
            "template": self.template,
            "recipient": self.recipient,
            "facts": self.facts,
            "outgoing": self.outgoing,
        }


class ClaimKind(StrEnum):
    """Where a claimed message's claim is, which says what a failure for now does with it."""

    OWN = "own"  # the ticket event's own message: the claim lets go, the event comes back
    NEAR = "near"  # "your turn is near": handed to the log, which the event's retry resumes


@dataclass(frozen=True)
class Claimed:
    """A message claimed in its ticket's document (ADR 0198), not yet sent."""

    ticket_id: str
    made: Made
    claim: Claim
    kind: ClaimKind


@dataclass(frozen=True)
class Settled:
    """What one attempt leaves for the log: the record, its fields and the event announcing it;
    `error` when the event is to be dead-lettered once the record is written."""

    delivery: Delivery
    fields: Document
    event: Event[Any]
    metric: str
    cost: int = 0
    error: Exception | None = None


__all__ = ["ChannelWorker", "ContactUnknown", "ReceiptTally"]


def what_to_raise(failures: Sequence[Exception]) -> Exception | None:
    """What one event raises for the failures of its messages: the first that brings it back
    (failed for now: RetryLater, a contact not seen yet, the store) when there is one, else the
    first that dead-letters it. A `ticket.called` whose own message was refused for good must
    still come back while one of its "near" messages failed for now: only its redelivery
    resumes that message (ADR 0198)."""
    again = [f for f in failures if not isinstance(f, Unprocessable)]
    first = again or list(failures)
    return first[0] if first else None


def backoff_seconds(attempt: int, retry: Retry, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter (half to full step), never sooner than the gateway asks."""
    step = min(retry.max_seconds, retry.base_seconds * 2.0 ** max(attempt - 1, 0))
    delay: float = step * random.uniform(0.5, 1.0)
    return max(delay, retry_after or 0.0)


@dataclass
class ChannelWorker:
    """Everything one channel's consumer does; channels never share a worker or a consumer, so
    a failing or slow gateway only ever delays itself."""

    channel: Channel
    retry: Retry
    store: DeliveryStore
    renderer: Renderer
    config: NotifyConfig
    wake: Callable[[], None]
    # Publishes the events just written to a delivery's outbox and takes them out, without the
    # relay's query for them; the relay's poll moves them if that fails (ADR 0167).
    # The outbox is the document's whole outbox as the write returned it; None for a document
    # just inserted with these events only.
    relay: Callable[[str, Sequence[Event[Any]], Mapping[str, Document] | None], Awaitable[None]]
    # One per process, shared by its channel workers (and its contact-book consumer).
    contacts: ContactBook
    public_url: str = ""
    clock: Callable[[], datetime] = utcnow
    metrics: NotifyMetrics | None = None
    # GILIRAN_CONTACT_RETENTION_HOURS (ADR 0115); notify's YAML may only shorten it.
    retention_hours: float = 48.0
    # Tickets this process told (or found told) "your turn is near" on this channel: the line
    # passes each ticket through the window on several calls, and each call asked the store
    # once per ticket in it (ADR 0186). Safe: a delivery is never deleted, so "told" stays
    # true; a ticket it does not know (another instance told it, a restart) is tried, and the
    # insert meets the delivery. Ticket ids only, bounded, and gone after a day.
    _told: TTLCache[str, bool] = field(
        init=False, repr=False, default_factory=lambda: TTLCache(maxsize=50_000, ttl=TOLD_SECONDS)
    )

    @property
    def fetch_batch(self) -> int:
        """How many events this channel's consumer fetches at once (ADR 0225)."""
        return UNPACED_FETCH_BATCH if isinstance(self.channel, ConsoleChannel) else FETCH_BATCH

    @property
    def contact_retention_hours(self) -> float:
        configured = self.config.contact_retention_hours
        return min(self.retention_hours, configured) if configured else self.retention_hours

    # --- what events mean -------------------------------------------------------------------

    # Each handler returns whether its event had been handled before (a redelivery, the other
    # instance's copy): the consumer keeps no inbox, the documents tell (ADR 0185).

    async def on_request(self, event: Event[RequestSubmitted]) -> bool:
        citizen = event.data.citizen
        # Producers before ADR 0115 put the contact in here; now it follows on the personal
        # stream (citizen.contact), and until it is seen the request's messages wait.
        carried = any((citizen.phone, citizen.email, citizen.status_token))
        return await self.contacts.file_request(
            event.data.request_id,
            {
                "site": event.site,
                "session_id": event.data.session_id,
                "consent": citizen.consent,
                "contact_seen": carried or not citizen.consent,
                # Without consent nothing that reaches a person is kept.
                "phone": citizen.phone if citizen.consent else None,
                "email": citizen.email if citizen.consent else None,
                "status_token": citizen.status_token if citizen.consent else None,
                "language": citizen.language.value,
                "purge_after": instant(event.data.submitted_at + self.contact_retention),
            },
            event.id,
        )

    async def on_contact(self, event: Event[CitizenContact]) -> bool:
        """The contact a consenting citizen gave, from the personal stream: kept until its
        `keep_until` (or this service's retention, if shorter), never after it."""
        contact = event.data
        keep_until = min(contact.keep_until, contact.submitted_at + self.contact_retention)
        if keep_until <= self.clock():
            return False  # its time is up: nobody may hold it any more
        return await self.contacts.learn(
            contact.request_id,
            Contact(
                phone=contact.phone,
                email=contact.email,
                status_token=contact.status_token,
                language=contact.language.value,
                purge_after=instant(keep_until),
                site=event.site,
            ),
            {"site": event.site, "session_id": contact.session_id},
            event.id,
        )

    @property
    def contact_retention(self) -> timedelta:
        return timedelta(hours=self.contact_retention_hours)

    async def on_ticket(self, event: Event[TicketFacts]) -> bool:
        ticket = event.data
        if not is_requests_ticket(ticket.ticket_id, ticket.request_id):
            # Before any write: the request passes its site check (it may be the forger's
            # own), so only this keeps a forged event from naming another request's ticket.
            raise NotRequestsTicket(ticket.ticket_id, ticket.request_id)
        status = ticket.status_after
        fields: Document = {
            "site": event.site,
            "session_id": ticket.session_id,
            "service": ticket.service,
            "request_id": ticket.request_id,
            "number": ticket.number,
            "issued_at": instant(ticket.issued_at),
        }
        if isinstance(ticket, TicketIssued):
            fields["ahead_at_issue"] = ticket.waiting_ahead
        template = TEMPLATE_OF.get(type(ticket))
        made: Made | None = None
        if template is not None:
            data = ticket.model_dump()
            if isinstance(ticket, TicketIssued):
                data["ahead"] = ticket.waiting_ahead
            try:
                # Made before the ticket's write, which takes the message's claim with it.
                made = await self._make(
                    event.id, event.site, template, ticket.request_id, data, event
                )
            except ContactUnknown:
                # The ticket moves all the same (other tickets' "near" and stale rules read
                # it); its message waits for the contact with the event's retry.
                await self.store.track_ticket(ticket.ticket_id, fields, status, self.channel.name)
                raise
        failures: list[Exception] = []
        if made is None:
            tracked = await self.store.track_ticket(
                ticket.ticket_id, fields, status, self.channel.name
            )
            moved = tracked.moved
            # Without a message to tell by: a repeat when the ticket was already exactly here.
            repeat = not tracked.moved and tracked.status is status
        else:
            # Sent and logged before anything else (ADR 0198): a failure is raised only once
            # the "near" messages below had their turn.
            moved, repeat, failure = await self._ticket_message(
                ticket.ticket_id, fields, status, made
            )
            failures += [failure] if failure is not None else []
        if isinstance(ticket, TicketCalled):
            # Moved to "called" by this very write: no earlier handling of this event got as far
            # as the approaching messages (each does this write first, and status only moves
            # forward), so it has none to resume.
            await self._near_front(event, resumed=not moved, failures=failures)
        raised = what_to_raise(failures)
        if raised is not None:
            raise raised
        return repeat

    async def _ticket_message(
        self, ticket_id: str, fields: Document, status: TicketStatus, made: Made
    ) -> tuple[bool, bool, Exception | None]:
        """A ticket event's own message (ADR 0198): its claim is taken by the ticket's one write
        for the event, the message sent at once, and the log written once, right after the
        send. Whether the write moved the ticket forward, whether the message had been handled
        before, and the failure the event is to raise for it (None: sent, or nothing to do)."""
        now = self.clock()
        first = Claim(
            delivery_id=made.key, held_until=now + self._hold(), attempts=1, claimed_at=now
        )
        # With the other ticket events of the batch that reach this step together (ADR 0220).
        if await batching.submit(
            self.store.advance_many, Advance(ticket_id, fields, status, first, self.channel.name)
        ):
            # The usual case: this event moved the ticket, so nothing handled it before (every
            # handling makes this write first, and status only moves forward).
            failure = await self._send_claimed(Claimed(ticket_id, made, first, ClaimKind.OWN))
            return True, False, failure
        repeat, failure = await self._ticket_message_again(ticket_id, fields, status, made)
        return False, repeat, failure

    async def _ticket_message_again(
        self, ticket_id: str, fields: Document, status: TicketStatus, made: Made
    ) -> tuple[bool, Exception | None]:
        """The event's write took no claim: the ticket is further along, or the claim exists (a
        redelivery, the other instance's copy, a crash's leftover). Load, decide (pure:
        `plan_message`), save with the version loaded; again when someone wrote in between.
        Whether the message had been handled before, and the failure of its send, if any."""
        for _ in range(TAKE_TRIES):
            notices = await self.store.notices(ticket_id)
            if notices is not None and notices.site != fields["site"]:
                raise ForeignTicket(f"ticket {ticket_id}", str(fields["site"]))
            if notices is None or notices.rank is None or notices.rank < status.rank:
                # Written before ranks were stored (or not at all): moved the old way first.
                await self.store.track_ticket(ticket_id, fields, status, self.channel.name)
                continue
            claim = notices.claim(made.key)
            logged = await self.store.delivery(made.key)
            now = self.clock()
            # Stale as this channel has seen the ticket, not as the fastest channel moved it
            # (ADR 0226): this channel's events come in stream order.
            seen = notices.seen_by(self.channel.name)
            plan = plan_message(made.template, seen, claim, logged.status if logged else None, now)
            if plan.go is Go.DONE:
                return True, None
            if plan.go is Go.LOG:
                # Reopened by the operator's retry: the log's own holds decide (ADR 0165).
                try:
                    return await self._deliver(ticket_status=notices.status, **made.deliver()), None
                except (RetryLater, Unprocessable) as exc:
                    return True, exc
            if plan.go is Go.WAIT:
                # Another attempt has it in hand: at-least-once delivery handed this event to a
                # second consumer (the ack wait ran out while the first waited on the gateway).
                raise RetryLater(f"delivery {made.key} is being sent", plan.wait_seconds)
            if plan.go is Go.DROP:
                dropped, _ = await self.store.record(
                    self._settled(made, DeliveryStatus.DROPPED, claim, now),
                    {"last_error": "stale: the ticket has moved on"},
                )
                if dropped:
                    self._finished("dropped")
                return claim is not None, None
            taken = Claim(
                delivery_id=made.key,
                held_until=now + self._hold(),
                attempts=plan.attempt,
                claimed_at=claim.claimed_at if claim else now,
                last_error=claim.last_error if claim else None,
            )
            if await self.store.take(notices, taken, (self.channel.name, status)):
                failure = await self._send_claimed(Claimed(ticket_id, made, taken, ClaimKind.OWN))
                return claim is not None, failure
        raise RetryLater(f"ticket {ticket_id} kept changing", 1.0)

    async def _send_claimed(self, claimed: Claimed) -> Exception | None:
        """One attempt at a message claimed in its ticket's document, and the log's one write
        for it right after, settled (sent or failed) with the event that says so: its claim's
        hold, taken just before, covers one attempt and so lasts until the record is written. A
        crash before the record leaves only the held claim: its hold lapses and the redelivered
        event sends that one message again, never loses it (ADR 0005).
        What the event is to raise for it, if anything: RetryLater when it failed for now (its
        own claim let go, or a "near" message handed to the log, which the event's retry
        resumes); the dead-lettering error when it was refused or out of attempts."""
        made, claim = claimed.made, claimed.claim
        outcome = await self._attempt(made, claim)
        if isinstance(outcome, RetryLater):
            reason = str(outcome)
            if claimed.kind is ClaimKind.OWN:
                await self.store.let_go(claimed.ticket_id, made.key, reason)
            else:
                self._told.pop(claimed.ticket_id, None)
                held = self._settled(made, DeliveryStatus.SENDING, claim, self.clock())
                await self.store.hand_to_log(held, reason)
            return outcome
        # Logged with the batch's other messages answered by now, in a flush that starts at most
        # 20 ms later (ADR 0219: it may wait behind that flush's other commands): the hold covers
        # one attempt, the batch's attempts run side by side.
        done, outbox = await batching.submit(
            self.store.record_many, Record(outcome.delivery, outcome.fields, [outcome.event])
        )
        self._finished(outcome.metric, outcome.cost)
        if outcome.delivery.status is DeliveryStatus.FAILED:
            log.warning(
                "%s: delivery %s failed: %s",
                self.channel.name,
                made.key,
                outcome.fields.get("last_error"),
            )
        if done:
            await self.relay(made.key, [outcome.event], outbox)
        return outcome.error

    def _settled(
        self, made: Made, status: DeliveryStatus, claim: Claim | None, now: datetime
    ) -> Delivery:
        """The log's record of a claimed message, as it is settled."""
        return Delivery.model_validate(
            {
                "_id": made.key,
                "site": made.site,
                "channel": self.channel.name,
                "medium": self.channel.medium,
                "recipient": made.recipient.masked,
                "template": made.template,
                "status": status,
                "attempts": claim.attempts if claim else 0,
                "held_until": RELEASED_AT,
                "created_at": claim.claimed_at if claim else now,
                **made.facts,
            }
        )

    async def on_cancelled(self, event: Event[RequestCancelled]) -> bool:
        template = CANCELLED_TEMPLATE.get(event.data.reason)
        if template is None:
            return False  # the citizen cancelled: nothing to tell them
        existed = await self._message(
            event.id,
            event.site,
            template,
            event.data.request_id,
            event.data.model_dump(),
            event,
        )
        return bool(existed)

    async def on_link_requested(self, event: Event[RequestLinkRequested]) -> bool:
        """The citizen asked for their status link again (intake matched their NIK and the
        contact they registered): send it to the contact held for that request, never to one
        the event could name (it names none)."""
        contact = await self._contact(event.data.request_id)
        if contact is None or not contact.status_token or not self.public_url:
            return False  # purged, registered without consent, or no public address: no link
        existed = await self._message(
            event.id,
            event.site,
            STATUS_LINK,
            event.data.request_id,
            event.data.model_dump(),
            event,
        )
        return bool(existed)

    async def on_event(self, event: Event[EventData]) -> bool:
        """Webhooks: the event itself, signed, to an agency that subscribed to its type."""
        assert isinstance(self.channel, WebhookChannel)
        if not self.channel.wants(event.type):
            return False
        recipient = self.channel.recipient(None)
        assert recipient is not None
        return await self._deliver(
            cause=event.id,
            site=event.site,
            template="event",
            recipient=recipient,
            facts={
                "cause_event_id": event.id,
                "cause_type": event.type,
                "request_id": getattr(event.data, "request_id", None),
                "ticket_id": getattr(event.data, "ticket_id", None),
                "session_id": getattr(event.data, "session_id", None),
            },
            outgoing=lambda key: Outgoing(
                delivery_id=key,
                template="event",
                language="-",
                text=event.type,
                event=event.to_json_dict(),
            ),
        )

    # --- messages ---------------------------------------------------------------------------

    async def _contact(self, request_id: str) -> Contact | None:
        return await self.contacts.contact(request_id)

    async def _message(
        self,
        cause: str,
        site: str,
        template: str,
        request_id: str,
        data: dict[str, Any],
        event: Event[Any],
        ticket_status: TicketStatus | None = None,
    ) -> bool | None:
        """`ticket_status`: the ticket's status as this handler just recorded it, which spares
        the stale check a read; None to read it. Whether the delivery existed already (None:
        nobody to send it to)."""
        made = await self._make(cause, site, template, request_id, data, event)
        if made is None:
            return None
        return await self._deliver(ticket_status=ticket_status, **made.deliver())

    async def _make(
        self,
        cause: str,
        site: str,
        template: str,
        request_id: str,
        data: dict[str, Any],
        event: Event[Any],
    ) -> Made | None:
        """The message `template` says to the request's contact on this channel, rendered; None
        when there is nobody to send it to. Raises ContactUnknown until the contact is seen."""
        if isinstance(self.channel, WhatsAppCloudChannel) and not self.channel.handles(template):
            return None  # no approved template for it: WhatsApp would refuse free text
        contact = await self._contact(request_id)
        if contact is not None and contact.site not in (None, site):
            # Another site's request named by this site's event (forged, or misrouted): its
            # citizen is never told anything by it.
            raise ForeignTicket(f"request {request_id}", site)
        if contact is None and self.channel.medium != "console":
            return None  # purged: nobody to tell
        recipient = self.channel.recipient(contact)
        if recipient is None:
            return None  # no consent or no address for this medium
        base = self.public_url.rstrip("/")
        # The unguessable status page; without its token (older events) no link at all, never
        # one built from the request id.
        token = contact.status_token if contact else None
        status_url = f"{base}/s/{token}" if base and token else None
        message = self.renderer.render(
            template,
            contact.language if contact else "id",
            data,
            site=site,
            status_url=status_url,
            at=event.time,
        )
        # Only a template channel needs the parts again (a retry has no event to re-render).
        parts = dict(message.variables) if isinstance(self.channel, WhatsAppCloudChannel) else {}
        receipt_url = self.receipt_url(site)
        return Made(
            key=delivery_id(cause, self.channel.name, recipient.key),
            cause=cause,
            site=site,
            template=template,
            recipient=recipient,
            facts={
                "cause_event_id": event.id,
                "cause_type": event.type,
                "request_id": request_id,
                "ticket_id": data.get("ticket_id"),
                "session_id": data.get("session_id"),
                "language": message.language,
                "text": message.text,
                "segments": message.segments,
                **({"variables": parts} if parts else {}),
                # The text and parts hold the status link: they go when the contact does.
                **({"purge_after": contact.purge_after} if contact and contact.purge_after else {}),
            },
            outgoing=lambda key: Outgoing(
                delivery_id=key,
                template=template,
                language=message.language,
                text=message.text,
                subject=message.subject,
                site=site,
                variables=dict(message.variables),
                receipt_url=receipt_url,
            ),
        )

    def receipt_url(self, site: str) -> str | None:
        """Where this channel's gateway reports deliveries for `site` (its `{receipt_url}`)."""
        config = getattr(self.channel, "config", None)
        secret = getattr(config, "receipt_secret", None)
        base = self.public_url.rstrip("/")
        if not secret or not base:
            return None
        key = receipt_key(secret, self.channel.name, site)
        return f"{base}/receipts/{self.channel.name}/{site}?key={key}"

    async def _near_front(
        self, event: Event[TicketFacts], *, resumed: bool, failures: list[Exception]
    ) -> None:
        """The line moved: tell those now near the front (once), if they were not already. Each
        message is claimed in its ticket's document, sent and logged in turn, so each claim's
        hold covers one attempt (ADR 0198). One ticket's failure does not stop the others: it
        is added to `failures`, which the event raises once every ticket had its turn."""
        site, called = event.site, event.data
        threshold = self.config.approaching_for(site)
        waiting = await self.store.waiting_in_line(
            site, called.session_id, called.service, threshold + 1
        )
        order = [(t.ticket_id, t.ahead_at_issue) for t in waiting]
        # A redelivered event resumes what it began: its own unfinished "approaching" deliveries
        # the log took over (after a failure) do not count as told, and one whose ticket has
        # left the window since is dropped rather than left "sending" for ever.
        unfinished = (
            await self.store.unfinished(event.id, APPROACHING, self.channel.name) if resumed else {}
        )
        # Told already: as far as this process knows (ADR 0186), or claimed in the ticket's
        # document by another event (another call of the line, on this instance or the other,
        # or before a restart): that event's to finish. Its own claim this event resumes.
        near = {t.ticket_id: self._near_claim(t) for t in waiting}
        others = {
            ticket_id
            for ticket_id, claim in near.items()
            if claim is not None and claim.cause_event_id != event.id
        }
        # This event's own, left by a crash (or held by its copy on the other instance): not
        # told, whatever memory says (another call may have found it claimed).
        resuming = set(unfinished) | {
            ticket_id
            for ticket_id, claim in near.items()
            if claim is not None and claim.cause_event_id == event.id
        }
        told = {ticket_id for ticket_id, _ in order if ticket_id in self._told} | others
        for ticket_id in others:
            self._told[ticket_id] = True
        due = approaching_due(order, threshold, told - resuming)
        for ticket_id, key in unfinished.items():
            if ticket_id not in due and await self.store.finish(
                key,
                DeliveryStatus.DROPPED,
                {"last_error": "stale: the ticket has left the approaching window"},
            ):
                self._finished("dropped")
        for ahead, ticket in enumerate(waiting):
            if ticket.ticket_id not in due:
                continue
            if ticket.ticket_id in self._told and ticket.ticket_id not in resuming:
                continue  # a call of the same line handled at the same moment here took it
            # Claimed in this process before the first await (calls of one line run at once in
            # a batch); the claim in the ticket's document is the claim between processes.
            self._told[ticket.ticket_id] = True
            data = {**ticket.facts, "ticket_id": ticket.ticket_id, "ahead": ahead}
            try:
                if ticket.ticket_id in unfinished or ticket.notices.version == 0:
                    # The log has it (a failure handed it over), or the ticket was written
                    # before claims were kept (a "near" message then lived in the log only).
                    # Waiting, as the line just read says: the stale rule needs no read.
                    await self._message(
                        f"approaching-{ticket.ticket_id}",
                        site,
                        APPROACHING,
                        ticket.request_id,
                        data,
                        event,
                        TicketStatus.WAITING,
                    )
                    continue
                claimed = await self._claim_near(event, ticket, data, near[ticket.ticket_id])
                failure = await self._send_claimed(claimed) if claimed is not None else None
            except Exception as exc:  # raised once the other tickets had their turn
                failure = exc
            except BaseException:
                self._told.pop(ticket.ticket_id, None)  # this event's retry resumes it
                raise
            if failure is None:
                continue
            if not isinstance(failure, Unprocessable):
                # Failed for now: this event's retry resumes it. (Refused or out of attempts,
                # recorded failed; or a ticket of another site's request: nobody is told again.)
                self._told.pop(ticket.ticket_id, None)
            failures.append(failure)

    def _near_claim(self, ticket: WaitingTicket) -> Claim | None:
        """The ticket's "your turn is near" claim on this channel, whoever's it is."""
        prefix = f"approaching-{ticket.ticket_id}:{self.channel.name}:"
        return next(
            (c for c in ticket.notices.claims.values() if c.delivery_id.startswith(prefix)), None
        )

    async def _claim_near(
        self,
        event: Event[TicketFacts],
        ticket: WaitingTicket,
        data: dict[str, Any],
        mine: Claim | None,
    ) -> Claimed | None:
        """Claim a "your turn is near" in its ticket's document (None: nobody to tell, or
        another call of the line claimed it first); this event's own claim, left by a crash,
        is taken again once its hold lapsed."""
        made = await self._make(
            f"approaching-{ticket.ticket_id}",
            event.site,
            APPROACHING,
            ticket.request_id,
            data,
            event,
        )
        if made is None:
            return None
        now = self.clock()
        if mine is None:
            claim = Claim(
                delivery_id=made.key,
                held_until=now + self._hold(),
                attempts=1,
                claimed_at=now,
                cause_event_id=event.id,
            )
            taken = await self.store.claim_near(ticket.ticket_id, claim)
            if not taken:
                return None  # told (or being told) meanwhile, or no longer waiting
            return Claimed(ticket.ticket_id, made, claim, kind=ClaimKind.NEAR)
        if await self.store.delivery(made.key) is not None:
            return None  # settled in the log already (its record's write answered too late)
        if mine.held_until > now:
            # Its copy on the other instance is sending it: back when the hold ends.
            wait = max(1.0, (mine.held_until - now).total_seconds())
            raise RetryLater(f"delivery {made.key} is being sent", wait)
        claim = mine.model_copy(
            update={"held_until": now + self._hold(), "attempts": mine.attempts + 1}
        )
        if not await self.store.take(ticket.notices, claim):
            raise RetryLater(f"delivery {made.key} changed meanwhile", 1.0)
        return Claimed(ticket.ticket_id, made, claim, kind=ClaimKind.NEAR)

    async def _attempt(self, made: Made, claim: Claim) -> Settled | RetryLater:
        """One attempt at a claimed message: what the log is to record (sent, or failed for
        good, with the event that says so), or RetryLater when it failed for now."""
        try:
            handed = await self.channel.send(made.recipient, made.outgoing(made.key))
        except PermanentFailure as exc:
            # Whatever a gateway said is masked once more here, whichever channel let it through.
            reason = scrub(str(exc))
            return self._failed(
                made, claim, reason, refused=isinstance(exc, Refused), error=f"{reason}"
            )
        except TransientFailure as exc:
            reason = scrub(str(exc))
            attempt = claim.attempts
            if attempt >= self.retry.max_attempts:
                return self._failed(
                    made,
                    claim,
                    f"after {attempt} attempts: {reason}",
                    error=f"gave up after {attempt}: {reason}",
                )
            return RetryLater(reason, backoff_seconds(attempt, self.retry, exc.retry_after))
        now = self.clock()
        sent = new_event(
            NotificationSent(
                **self._outcome(made.key, made.template, made.facts),
                cost_units=handed.cost,
                sent_at=now,
            ),
            site=made.site,
            source=SOURCE,
            at=now,
        )
        return Settled(
            delivery=self._settled(made, DeliveryStatus.SENT, claim, now),
            fields={
                "sent_at": instant(now),
                "cost_units": handed.cost,
                "last_error": None,
                "gateway_id": handed.gateway_id,
            },
            event=sent,
            metric="sent",
            cost=handed.cost,
        )

    def _failed(
        self, made: Made, claim: Claim, reason: str, *, refused: bool = False, error: str
    ) -> Settled:
        now = self.clock()
        reason = scrub(reason)
        failed = self._failure(made.key, made.site, made.template, made.facts, reason, refused, now)
        return Settled(
            delivery=self._settled(made, DeliveryStatus.FAILED, claim, now),
            fields={"failed_at": instant(now), "last_error": reason, "refused": refused},
            event=failed,
            metric="failed",
            error=Unprocessable(f"{self.channel.name}: {error}"),
        )

    # --- one delivery, exactly once where the channel allows --------------------------------

    async def _deliver(
        self,
        *,
        cause: str,
        site: str,
        template: str,
        recipient: Recipient,
        facts: Document,
        outgoing: Callable[[str], Outgoing],
        ticket_status: TicketStatus | None = None,
    ) -> bool:
        """Send one message once; whether its delivery existed already (a repeat)."""
        key = delivery_id(cause, self.channel.name, recipient.key)
        ticket_id = facts.get("ticket_id")
        if ticket_id and ticket_status is None:
            ticket_status = await self.store.ticket_status(ticket_id)
        stale = bool(ticket_id) and is_stale(template, ticket_status)
        now = self.clock()
        # Recorded as decided, in one insert: held for its first attempt (the claim and the
        # record are one write), or dropped at once. A kill -9 after it leaves a held
        # "sending" delivery whose hold lapses, and the message goes again (ADR 0005, 0165).
        status = first_status(template, ticket_status) if ticket_id else DeliveryStatus.SENDING
        sending = status is DeliveryStatus.SENDING
        started = await self.store.start(
            Delivery.model_validate(
                {
                    "_id": key,
                    "site": site,
                    "channel": self.channel.name,
                    "medium": self.channel.medium,
                    "recipient": recipient.masked,
                    "template": template,
                    "status": status,
                    "attempts": 1 if sending else 0,
                    "held_until": now + self._hold() if sending else RELEASED_AT,
                    "created_at": now,
                    **({} if sending else {"last_error": "stale: the ticket has moved on"}),
                    **facts,
                }
            )
        )
        if started and not sending:
            self._finished("dropped")
            return False
        attempt = 1
        if not started:
            attempt_or_none = await self._resume(key, stale, facts.get("cause_event_id"))
            if attempt_or_none is None:
                return True
            attempt = attempt_or_none
        try:
            handed = await self.channel.send(recipient, outgoing(key))
        except PermanentFailure as exc:
            # Whatever a gateway said is masked once more here, whichever channel let it through:
            # it goes to the store, the log, the event and the dead letter's reason.
            reason = scrub(str(exc))
            refused = isinstance(exc, Refused)
            await self._fail(key, site, template, facts, reason, refused=refused)
            raise Unprocessable(f"{self.channel.name}: {reason}") from exc
        except TransientFailure as exc:
            reason = scrub(str(exc))
            if attempt >= self.retry.max_attempts:
                await self._fail(key, site, template, facts, f"after {attempt} attempts: {reason}")
                raise Unprocessable(
                    f"{self.channel.name}: gave up after {attempt}: {reason}"
                ) from exc
            await self.store.note_error(key, reason)
            raise RetryLater(reason, backoff_seconds(attempt, self.retry, exc.retry_after)) from exc
        now = self.clock()
        cost = handed.cost
        sent = new_event(
            NotificationSent(**self._outcome(key, template, facts), cost_units=cost, sent_at=now),
            site=site,
            source=SOURCE,
            at=now,
        )
        outbox = await self.store.finish_announcing(
            key,
            DeliveryStatus.SENT,
            {
                "sent_at": instant(now),
                "cost_units": cost,
                "last_error": None,
                "gateway_id": handed.gateway_id,
            },
            [sent],
        )
        self._finished("sent", cost)
        if outbox is not None:
            await self.relay(key, [sent], outbox)
        return not started

    async def _resume(self, key: str, stale: bool, cause_event_id: str | None) -> int | None:
        """The delivery exists already (a redelivered event, the other replica's copy, the
        operator's retry): the attempt number to send with, or None when nothing is to be sent.
        Crashed after a send but before recording it: the message goes again (ADR 0005).
        One that another event began (an "approaching" message another `ticket.called` decided)
        is that event's to finish: its own redelivery resumes it, as this one would its own."""
        existing = await self.store.delivery(key)
        if existing is None:
            return None
        if existing.cause_event_id not in (None, cause_event_id):
            return None
        now = self.clock()
        decided = next_step(existing.status, existing.held_until, now, stale=stale)
        if decided.step is Step.DROP:
            if await self.store.finish(
                key, DeliveryStatus.DROPPED, {"last_error": "stale: the ticket has moved on"}
            ):
                self._finished("dropped")
            return None
        if decided.step is Step.WAIT:
            # Another attempt has it in hand: at-least-once delivery handed this event to a
            # second consumer (the ack wait ran out while the first waited on the gateway).
            # Sending now would send it twice; back when the hold ends (the attempt finishes
            # sooner, or a crashed one lapses).
            raise RetryLater(f"delivery {key} is being sent", decided.wait_seconds)
        if decided.step is Step.DONE:
            return None  # sent, failed for good, or dropped: a redelivery changes nothing
        attempt = await self.store.hold(key, now, now + self._hold())
        if attempt is None:  # taken (or settled) by another attempt in between
            raise RetryLater(f"delivery {key} is being sent", 1.0)
        return attempt

    def _hold(self) -> timedelta:
        return timedelta(seconds=self._hold_seconds())

    def _hold_seconds(self) -> float:
        """How long one attempt may keep its delivery: the wait in this process's rate limiter
        for a whole fetched batch, the gateway's timeout, and a margin. A hold shorter than the
        attempt would let a redelivery send the message a second time."""
        config = getattr(self.channel, "config", None)
        rate = float(getattr(config, "rate_per_second", 10.0))
        timeout = float(getattr(config, "timeout_seconds", 10.0))
        return FETCH_BATCH / rate + timeout + HOLD_MARGIN_SECONDS

    async def _fail(
        self,
        key: str,
        site: str,
        template: str,
        facts: Document,
        reason: str,
        *,
        refused: bool = False,
    ) -> None:
        now = self.clock()
        reason = scrub(reason)
        failed = self._failure(key, site, template, facts, reason, refused, now)
        outbox = await self.store.finish_announcing(
            key,
            DeliveryStatus.FAILED,
            {"failed_at": instant(now), "last_error": reason, "refused": refused},
            [failed],
        )
        self._finished("failed")
        if outbox is not None:
            await self.relay(key, [failed], outbox)
        log.warning("%s: delivery %s failed: %s", self.channel.name, key, reason)

    def _finished(self, outcome: str, cost: int = 0) -> None:
        if self.metrics is not None:
            self.metrics.finished(self.channel.name, outcome, cost)

    def _failure(
        self,
        key: str,
        site: str,
        template: str,
        facts: Document,
        reason: str,
        refused: bool,
        at: datetime,
    ) -> Event[NotificationFailed]:
        """notification.failed of a delivery, `reason` already scrubbed."""
        return new_event(
            NotificationFailed(
                **self._outcome(key, template, facts),
                reason=reason[:500],
                failed_at=at,
                refused=refused,
            ),
            site=site,
            source=SOURCE,
            at=at,
        )

    def _outcome(self, key: str, template: str, facts: Document) -> dict[str, Any]:
        """What notification.sent and notification.failed both say about a delivery."""
        return {
            "delivery_id": key,
            "cause_event_id": facts["cause_event_id"],
            "cause_type": facts["cause_type"],
            "request_id": facts.get("request_id"),
            "ticket_id": facts.get("ticket_id"),
            "channel": self.channel.name,
            "template": template,
        }

    # --- delivery reports -------------------------------------------------------------------

    async def on_receipts(self, site: str | None, receipts: list[Receipt]) -> ReceiptTally:
        """Record what a gateway's report (already authenticated for `site`; None: signed for
        the whole channel) says: only about this channel's accepted messages (at that site),
        each final outcome once."""
        tally = ReceiptTally()
        sender = getattr(getattr(self.channel, "config", None), "phone_number_id", None)
        for receipt in receipts:
            if receipt.outcome is None:
                tally.pending += 1
                continue
            found = await self.store.by_gateway_id(self.channel.name, receipt.gateway_id)
            mine = found is not None and (site is None or found.site == site)
            if found is None or not mine or receipt.sender != sender:
                tally.unknown += 1
                continue
            now = self.clock()
            outcome = DeliveryOutcome(receipt.outcome.value)
            event = new_event(
                NotificationReceipt(
                    **self._outcome(found.id, found.template, found.facts()),
                    outcome=outcome,
                    reason=receipt.reason or None,
                    reported_at=now,
                ),
                site=found.site,
                source=SOURCE,
                at=now,
            )
            fields = {
                "receipt": outcome.value,
                "receipt_at": instant(now),
                "receipt_reason": receipt.reason or None,
            }
            if await self.store.record_receipt(found.id, fields, [event]):
                tally.recorded += 1
                self._finished(outcome.value)
            else:
                tally.repeated += 1
        if tally.recorded:
            self.wake()
        return tally

    # --- operator actions -------------------------------------------------------------------

    async def retry_failed(self, key: str) -> Document:
        """Send a failed delivery again now (the operator's retry button)."""
        failed = await self.store.delivery(key)
        if failed is None:
            raise DeliveryNotFound(key)
        if failed.status is not DeliveryStatus.FAILED:
            raise DeliveryNotRetryable(key, failed.status.value)
        contact = None
        if failed.request_id:
            contact = await self._contact(failed.request_id)
        recipient = self.channel.recipient(contact)
        if recipient is None:
            raise DeliveryNotRetryable(key, "contact purged")
        reopened = await self.store.finish(
            key, DeliveryStatus.SENDING, {"attempts": 0}, from_statuses=(DeliveryStatus.FAILED,)
        )
        if not reopened:
            raise DeliveryNotRetryable(key, "changed meanwhile")
        facts = failed.facts()
        try:
            await self._deliver(
                cause=key.split(":")[0],
                site=failed.site,
                template=failed.template,
                recipient=recipient,
                facts=facts,
                outgoing=lambda k: Outgoing(
                    delivery_id=k,
                    template=failed.template,
                    language=failed.language or "id",
                    text=failed.text or "",
                    site=failed.site,
                    variables=dict(failed.variables or {}),
                    receipt_url=self.receipt_url(failed.site),
                ),
            )
        except (RetryLater, Unprocessable) as exc:
            await self._fail(key, failed.site, failed.template, facts, f"retry failed: {exc}")
        updated = await self.store.get(key)
        assert updated is not None
        return updated


class DeliveryNotFound(NotFound):
    code = "delivery_not_found"

    def __init__(self, key: str) -> None:
        super().__init__(f"Pengiriman '{key}' tidak ditemukan.", f"Delivery '{key}' not found.")


class DeliveryNotRetryable(Conflict):
    code = "delivery_not_retryable"

    def __init__(self, key: str, why: str) -> None:
        super().__init__(
            f"Pengiriman '{key}' tidak dapat diulang ({why}).",
            f"Delivery '{key}' cannot be retried ({why}).",
        )
