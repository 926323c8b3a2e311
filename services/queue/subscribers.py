"""Bus entrypoints of the queue: request events in, counter commands (request-reply) in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from faststream.nats import NatsBroker
from pydantic import ValidationError

from giliran.contracts import (
    CallNext,
    CommandReply,
    CompleteTicket,
    Problem,
    RequestSubmitted,
    TicketView,
    utcnow,
)
from giliran.contracts.subjects import command_pattern, entity_events
from giliran.errors import DomainError
from giliran.runtime import ServiceRuntime
from services.queue.handlers import Queue

INVALID = Problem(
    code="invalid_command",
    message_id="Perintah tidak valid.",
    message_en="Invalid command.",
)


def register(runtime: ServiceRuntime, queue: Queue) -> None:
    runtime.consume(
        "requests",
        entity_events("request"),
        {RequestSubmitted: queue.issue_tickets},
    )
    _register_commands(runtime.broker, queue)


def _register_commands(broker: NatsBroker, queue: Queue) -> None:
    # Core NATS request-reply in a queue group: every queue instance answers, each command once.

    @broker.subscriber(
        command_pattern("queue", "call_next"),
        queue="queue",
        title="queue:cmd.call_next",
        description="A counter asks for its next ticket; replies CommandReply.",
    )
    async def on_call_next(body: dict[str, object]) -> CommandReply:
        async def run() -> TicketView | None:
            command = CallNext.model_validate(body)
            return await queue.call_next(command.site, command.counter)

        return await _reply(run)

    @broker.subscriber(
        command_pattern("queue", "complete"),
        queue="queue",
        title="queue:cmd.complete",
        description="A counter completes the ticket it is serving; replies CommandReply.",
    )
    async def on_complete(body: dict[str, object]) -> CommandReply:
        async def run() -> TicketView | None:
            command = CompleteTicket.model_validate(body)
            return await queue.complete(command.site, command.ticket_id)

        return await _reply(run)


async def _reply(run: Callable[[], Awaitable[TicketView | None]]) -> CommandReply:
    """The same answer shape for every command: the ticket, or a bilingual problem."""
    try:
        ticket = await run()
    except ValidationError:
        return CommandReply(ok=False, error=INVALID, at=utcnow())
    except DomainError as exc:
        return CommandReply(ok=False, error=exc.problem(), at=utcnow())
    return CommandReply(ok=True, ticket=ticket, at=utcnow())
