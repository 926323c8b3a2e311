"""Bus entrypoints of notify: one durable consumer per channel, so channels never wait on each
other."""

from __future__ import annotations

from typing import Any

from giliran.bus import EventHandler
from giliran.contracts import (
    EVENT_MODELS,
    TICKET_EVENTS,
    CitizenContact,
    EventData,
    RequestCancelled,
    RequestLinkRequested,
    RequestSubmitted,
)
from giliran.contracts.subjects import PERSONAL_STREAM, all_events, personal_events
from giliran.runtime import ServiceRuntime
from services.notify.channels.webhook import WebhookChannel
from services.notify.handlers import ChannelWorker

# A message NAKed while a gateway is down or its circuit is open is redelivered many times before
# the worker's own attempt count gives up on it; this is only the server-side backstop.
MAX_DELIVER = 200


def register(runtime: ServiceRuntime, workers: list[ChannelWorker]) -> None:
    for worker in workers:
        handlers: dict[type[EventData], EventHandler]
        if isinstance(worker.channel, WebhookChannel):
            handlers = dict.fromkeys(EVENT_MODELS, worker.on_event)
        else:
            on_ticket: Any = worker.on_ticket
            handlers = {
                RequestSubmitted: worker.on_request,
                RequestCancelled: worker.on_cancelled,
                RequestLinkRequested: worker.on_link_requested,
                **dict.fromkeys(TICKET_EVENTS, on_ticket),
            }
        runtime.consume(worker.channel.name, all_events(), handlers, max_deliver=MAX_DELIVER)
    # Contacts arrive on their own short-lived stream (ADR 0115), into the one contact book all
    # channels read: one consumer for them, whichever channel's worker files them.
    citizens = [w for w in workers if not isinstance(w.channel, WebhookChannel)]
    if citizens:
        runtime.consume(
            "contact_book",  # "_": a channel's name cannot have one, so never the same durable
            personal_events(),
            {CitizenContact: citizens[0].on_contact},
            stream=PERSONAL_STREAM,
        )
