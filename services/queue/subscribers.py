"""Bus entrypoints of the queue: intake's request events in, counter commands (request-reply) in,
and the other queue instances' ticket events watched so every board refreshes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from pydantic import BaseModel, ValidationError

from giliran.auth import AuditLog, Principal, Role
from giliran.bus import EventHandler
from giliran.contracts import (
    CallNext,
    CommandReply,
    CompleteTicket,
    CounterAction,
    CounterView,
    Event,
    EventData,
    Problem,
    RequestCancelled,
    RequestCheckedIn,
    RequestStatusQuery,
    RequestStatusReply,
    RequestSubmitted,
    TicketAction,
    TicketView,
    utcnow,
)
from giliran.contracts.subjects import command_pattern, device_user, entity_events, site_of
from giliran.errors import DomainError
from giliran.runtime import ServiceRuntime
from services.queue.desk import Desk
from services.queue.handlers import Queue
from services.queue.store import audit_facts

INVALID = Problem(
    code="invalid_command",
    message_id="Perintah tidak valid.",
    message_en="Invalid command.",
)
WRONG_SITE = Problem(
    code="wrong_site",
    message_id="Perintah ini untuk lokasi lain daripada subjeknya.",
    message_en="The command names another site than its subject.",
)

Result = TicketView | CounterView | None


@dataclass(frozen=True)
class EachRequestInOrder:
    """The requests consumer's batch handler, with no inbox (ADR 0192): each event of a fetched
    batch through its handler, one request's events one after another in stream order and
    different requests at once (as the inbox consumer ran them). The tickets are the dedupe:
    their ids come from the request, a check-in and a cancel are conditional writes, and each
    handler says whether its event had been handled before. Should one fail, the kernel
    handles the batch again event by event (with its retries); those that succeeded find
    their work done."""

    # Each says True when its event had been handled before.
    handlers: Mapping[type[EventData], EventHandler]

    async def __call__(self, events: Sequence[Event[Any]]) -> set[str]:
        groups: dict[str, list[Event[Any]]] = {}
        for event in events:
            groups.setdefault(event.data.ordering_key() or event.id, []).append(event)
        before: set[str] = set()

        async def in_order(group: list[Event[Any]]) -> None:
            for event in group:
                if await self.handlers[type(event.data)](event) is True:
                    before.add(event.id)

        # Every group finishes before a failure is raised: the kernel's event-by-event pass
        # must not meet a group of this pass still running.
        outcomes = await asyncio.gather(
            *(in_order(group) for group in groups.values()), return_exceptions=True
        )
        failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failed is not None:
            raise failed
        return before


def register(runtime: ServiceRuntime, queue: Queue, desk: Desk) -> None:
    """Intake's events, and the counter commands (each audited as its site's device)."""
    handlers: dict[type[EventData], Callable[[Event[Any]], Awaitable[bool]]] = {
        RequestSubmitted: queue.on_submitted,
        RequestCheckedIn: queue.check_in,
        RequestCancelled: queue.cancel_request,
    }
    # Over the consumer's observed handlers: each event runs inside the citizen's correlation
    # id and "process" span, so the tickets it issues carry the citizen's trace.
    runtime.consume("requests", entity_events("request"), handlers, each_of=EachRequestInOrder)
    _register_commands(runtime.broker, queue, desk, runtime.audit)


async def run_ticket_action(desk: Desk, command: TicketAction) -> TicketView:
    """The one dispatcher of ticket actions, for HTTP and NATS alike."""
    site, counter, ticket = command.site, command.counter, command.ticket_id
    match command.action:
        case "call":
            if counter is None:
                raise _counter_required()
            return await desk.call(site, counter, ticket)
        case "recall":
            return await desk.recall(site, counter, ticket)
        case "start":
            return await desk.start(site, counter, ticket)
        case "no_show":
            return await desk.no_show(site, counter, ticket)
        case "recheck_in":
            return await desk.recheck_in(site, ticket)
        case "transfer":
            if command.to_service is None:
                raise _field_required("to_service", "layanan tujuan", "the target service")
            return await desk.transfer(site, counter, ticket, command.to_service)
        case "cancel":
            return await desk.cancel(site, counter, ticket, command.reason or "dibatalkan petugas")


async def run_counter_action(desk: Desk, command: CounterAction) -> CounterView:
    match command.action:
        case "open":
            return await desk.open(
                command.site, command.counter, command.services, command.session_id
            )
        case "pause":
            return await desk.pause(command.site, command.counter)
        case "close":
            return await desk.close(command.site, command.counter)


class MissingField(DomainError):
    code = "missing_field"


def _field_required(name: str, what_id: str, what_en: str) -> MissingField:
    return MissingField(
        f"Kolom '{name}' wajib diisi: {what_id}.", f"Field '{name}' is required: {what_en}."
    )


def _counter_required() -> MissingField:
    return _field_required("counter", "loket yang memanggil", "the calling counter")


def _register_commands(broker: NatsBroker, queue: Queue, desk: Desk, audit: AuditLog) -> None:
    # Core NATS request-reply in a queue group: every queue instance answers, each command once.
    # The site in the body must be the subject's: permissions are granted per subject (site).

    def command(
        action: str, model: type[BaseModel], run: Callable[[Any], Awaitable[Result]], doc: str
    ) -> None:
        @broker.subscriber(
            command_pattern("queue", action),
            queue="queue",
            title=f"queue:cmd.{action}",
            description=doc,
        )
        async def handle(body: dict[str, object], message: NatsMessage) -> CommandReply:
            try:
                parsed = model.model_validate({**body, "action": action})
            except ValidationError:
                return CommandReply(ok=False, error=INVALID, at=utcnow())
            site: str = parsed.site  # type: ignore[attr-defined]  # every command names one
            if site != site_of(message.raw_message.subject):
                return CommandReply(ok=False, error=WRONG_SITE, at=utcnow())
            # Only the site's counter devices may publish here (NATS permissions): the record
            # names that device user, and travels with the action's writes like an HTTP one's.
            who = Principal(device_user(site), Role.OFFICER, site, "nats")
            ticket_id = getattr(parsed, "ticket_id", None)
            before: dict[str, Any] | None
            if ticket_id is not None:
                target = f"ticket:{ticket_id}"
                before = audit_facts(await queue.store.get(ticket_id))
            else:
                counter = str(getattr(parsed, "counter", ""))
                target = f"counter:{counter}"
                before = (
                    (await desk.counter(site, counter)).model_dump(mode="json")
                    if action in ("open", "pause", "close")
                    else None
                )
            with audit.acting(who, action, site, target, before):
                return await _reply(lambda: run(parsed))

    async def call_next(c: CallNext) -> Result:
        return await desk.call_next(c.site, c.counter)

    async def complete(c: CompleteTicket) -> Result:
        return await desk.complete(c.site, c.ticket_id, c.counter, c.outcome)

    async def ticket_action(c: TicketAction) -> Result:
        return await run_ticket_action(desk, c)

    async def counter_action(c: CounterAction) -> Result:
        return await run_counter_action(desk, c)

    command("call_next", CallNext, call_next, "A counter asks for its next ticket.")
    command("complete", CompleteTicket, complete, "A counter completes its ticket.")
    for action in ("call", "recall", "start", "no_show", "recheck_in", "transfer", "cancel"):
        command(action, TicketAction, ticket_action, f"A counter's '{action}' on one ticket.")
    for action in ("open", "pause", "close"):
        command(action, CounterAction, counter_action, f"A counter's '{action}'.")

    @broker.subscriber(
        command_pattern("queue", "request_status"),
        queue="queue",
        title="queue:cmd.request_status",
        description="Where a request's tickets stand (position, ETA); replies RequestStatusReply.",
    )
    async def on_request_status(
        body: dict[str, object], message: NatsMessage
    ) -> RequestStatusReply:
        try:
            query = RequestStatusQuery.model_validate(body)
        except ValidationError:
            return RequestStatusReply(ok=False, error=INVALID)
        if query.site != site_of(message.raw_message.subject):
            return RequestStatusReply(ok=False, error=WRONG_SITE)
        try:
            tickets = await queue.request_status(query.site, query.request_id)
        except DomainError as exc:
            return RequestStatusReply(ok=False, error=exc.problem())
        return RequestStatusReply(ok=True, tickets=tickets)


async def _reply(run: Callable[[], Awaitable[Result]]) -> CommandReply:
    """The same answer shape for every command: the ticket or counter, or a bilingual problem."""
    try:
        result = await run()
    except DomainError as exc:
        return CommandReply(ok=False, error=exc.problem(), at=utcnow())
    if isinstance(result, CounterView):
        return CommandReply(ok=True, counter=result, at=utcnow())
    return CommandReply(ok=True, ticket=result, at=utcnow())
