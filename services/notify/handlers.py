"""Notify use cases: remember how to reach a requester, and tell them about their ticket."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from giliran.contracts import (
    Event,
    NotificationSent,
    RequestSubmitted,
    TicketFacts,
    new_event,
    utcnow,
)
from giliran.store import instant
from services.notify.channels import Channel
from services.notify.domain import Renderer, delivery_id
from services.notify.store import DeliveryStore

SOURCE = "notify"


class ContactUnknown(Exception):
    """A ticket event arrived before its request: retried until the request is seen."""


@dataclass
class Notifier:
    store: DeliveryStore
    channels: Sequence[Channel]
    renderer: Renderer
    wake: Callable[[], None]
    public_url: str = ""
    clock: Callable[[], datetime] = utcnow

    async def remember_contact(self, event: Event[RequestSubmitted]) -> None:
        citizen = event.data.citizen
        await self.store.save_contact(
            event.data.request_id,
            {
                "site": event.site,
                "phone": citizen.phone,
                "language": citizen.language.value,
                "submitted_at": instant(event.data.submitted_at),
            },
        )

    async def notify_ticket(self, event: Event[TicketFacts]) -> None:
        ticket = event.data
        contact = await self.store.contact(ticket.request_id)
        if contact is None:
            raise ContactUnknown(f"request {ticket.request_id} not seen yet")
        status_url = (
            f"{self.public_url.rstrip('/')}/api/v1/requests/{ticket.request_id}"
            if self.public_url
            else None
        )
        message = self.renderer.render(event, contact.get("language", "id"), status_url)
        for channel in self.channels:
            recipient = channel.recipient_for(contact.get("phone"))
            if recipient is None:
                continue
            key = delivery_id(event.id, channel.name, recipient)
            begun = await self.store.begin(
                {
                    "_id": key,
                    "cause_event_id": event.id,
                    "cause_type": event.type,
                    "site": event.site,
                    "request_id": ticket.request_id,
                    "ticket_id": ticket.ticket_id,
                    "channel": channel.name,
                    "recipient": recipient,
                    "template": message.template,
                    "language": message.language,
                    "text": message.text,
                    "segments": message.segments,
                    "status": "sending",
                    "attempts": 1,
                    "created_at": instant(self.clock()),
                }
            )
            if begun is None:
                existing = await self.store.get(key)
                if existing is not None and existing["status"] != "sending":
                    continue  # already sent (or finally failed): a redelivery sends nothing
                # Crashed between sending and recording: send again (docs/decisions/0005).
            cost = await channel.send(recipient, message)
            now = self.clock()
            sent = new_event(
                NotificationSent(
                    delivery_id=key,
                    cause_event_id=event.id,
                    cause_type=event.type,
                    request_id=ticket.request_id,
                    ticket_id=ticket.ticket_id,
                    channel=channel.name,
                    template=message.template,
                    cost_units=cost,
                    sent_at=now,
                ),
                site=event.site,
                source=SOURCE,
                at=now,
            )
            await self.store.finish(
                key, {"status": "sent", "sent_at": instant(now), "cost_units": cost}, [sent]
            )
        self.wake()
