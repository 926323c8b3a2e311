"""Bus entrypoints of notify: one durable consumer per channel, so channels never wait on each
other, each deduping in notify's own documents rather than an inbox (ADR 0185)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from giliran.bus import EventHandler
from giliran.contracts import (
    EVENT_MODELS,
    TICKET_EVENTS,
    CitizenContact,
    Event,
    EventData,
    RequestCancelled,
    RequestLinkRequested,
    RequestSubmitted,
)
from giliran.contracts.subjects import (
    PERSONAL_STREAM,
    all_events,
    entity_events,
    personal_events,
)
from giliran.runtime import ServiceRuntime
from services.notify.batching import WINDOW_SECONDS, GroupCommit
from services.notify.channels.webhook import WebhookChannel
from services.notify.handlers import ChannelWorker

# A message NAKed while a gateway is down or its circuit is open is redelivered many times before
# the worker's own attempt count gives up on it; this is only the server-side backstop.
MAX_DELIVER = 200

# A handler of one event: True when notify's documents show it was handled before (a redelivery,
# the other instance's copy).
Handler = Callable[[Event[Any]], Awaitable[bool]]


class BatchIncomplete(Exception):
    """Some events of a batch failed; the kernel then settles them one by one."""


@dataclass
class EachOnce:
    """The batch handler of a notify consumer: each event of the fetched batch through its own
    handler — one request's events one after another in stream order, different requests at
    once, as the inbox consumer ran them — and no inbox. The documents are the dedupe: a
    delivery's id comes from its event, so its insert says whether the event was handled; a
    ticket's projection only moves forward; a contact names the event that filed it.

    When an event fails, the kernel settles the batch event by event (retry with its delay, dead
    letter) by calling this again with each event alone (`EventConsumer._fold_batch`). Each
    event's outcome is kept for that pass and given back instead of handling the event again: a
    message is not re-attempted at once after a transient failure, and the events that
    succeeded cost nothing more."""

    handlers: Mapping[type[EventData], EventHandler]
    # How long a write waits for the batch's other flows at most (ADR 0219).
    window: float = WINDOW_SECONDS
    _outcomes: dict[str, bool | Exception] = field(default_factory=dict, repr=False)

    async def __call__(self, events: Sequence[Event[Any]]) -> set[str]:
        if len(events) == 1 and events[0].id in self._outcomes:
            outcome = self._outcomes.pop(events[0].id)  # the kernel's one-by-one pass
            if isinstance(outcome, Exception):
                raise outcome
            return {events[0].id} if outcome else set()
        self._outcomes.clear()
        groups: dict[str, list[Event[Any]]] = {}
        for event in events:
            groups.setdefault(event.data.ordering_key() or event.id, []).append(event)
        outcomes: dict[str, bool | Exception] = {}

        # The groups' writes of one step (a ticket's claim, a message's record) go to the store
        # together (ADR 0219, 0220).
        commit = GroupCommit(flows=len(groups), window=self.window)

        async def in_order(group: list[Event[Any]]) -> None:
            with commit.flow():
                for event in group:
                    try:
                        repeat = await self.handlers[type(event.data)](event)
                        outcomes[event.id] = repeat is True
                    except Exception as exc:  # settled by the kernel, one by one
                        outcomes[event.id] = exc

        if len(groups) == 1:
            await in_order(next(iter(groups.values())))
        else:
            await asyncio.gather(*(in_order(group) for group in groups.values()))
        failed = [o for o in outcomes.values() if isinstance(o, Exception)]
        if failed:
            self._outcomes = outcomes
            raise BatchIncomplete(f"{len(failed)} of {len(events)} failed: {failed[0]!r}")
        return {event_id for event_id, repeat in outcomes.items() if repeat is True}


def consume(
    runtime: ServiceRuntime,
    name: str,
    subject: str,
    handlers: Mapping[type[EventData], Handler],
    **options: Any,
) -> None:
    # Over the consumer's observed handlers: each event runs inside its correlation id and its
    # "process" span, timed by type, so the messages it causes carry the citizen's trace.
    runtime.consume(name, subject, handlers, each_of=EachOnce, **options)


def _entities(handlers: Mapping[type[EventData], Handler]) -> tuple[str, ...]:
    return tuple(sorted({entity_events(model.entity) for model in handlers}))


def register(runtime: ServiceRuntime, workers: list[ChannelWorker]) -> None:
    for worker in workers:
        handlers: dict[type[EventData], Handler]
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
        # Only the entities its handlers read: a citizen channel skipped every event of the
        # stream it had no handler for (notify's own notification.sent, three per lifecycle),
        # each one a fetch, a delivery and an ack (ADR 0230).
        # A webhook takes every event, also of entities added later: no filter.
        wanted = () if isinstance(worker.channel, WebhookChannel) else _entities(handlers)
        consume(
            runtime,
            worker.channel.name,
            all_events(),
            handlers,
            max_deliver=MAX_DELIVER,
            fetch_batch=worker.fetch_batch,
            filter_subjects=wanted,
        )
    # Contacts arrive on their own short-lived stream (ADR 0115), into the one contact book all
    # channels read: one consumer for them, whichever channel's worker files them.
    citizens = [w for w in workers if not isinstance(w.channel, WebhookChannel)]
    if citizens:
        consume(
            runtime,
            "contact_book",  # "_": a channel's name cannot have one, so never the same durable
            personal_events(),
            {CitizenContact: citizens[0].on_contact},
            stream=PERSONAL_STREAM,
        )
