"""Bus entrypoints of notify: requests (to learn contacts) and ticket events (to send messages)."""

from __future__ import annotations

from typing import Any

from giliran.bus import EventHandler
from giliran.contracts import EventData, RequestSubmitted
from giliran.contracts.subjects import all_events
from giliran.runtime import ServiceRuntime
from services.notify.domain import TEMPLATE_OF
from services.notify.handlers import Notifier


def register(runtime: ServiceRuntime, notifier: Notifier) -> None:
    # One consumer in stream order, so a request's contact is known before its tickets arrive.
    handlers: dict[type[EventData], EventHandler] = {RequestSubmitted: notifier.remember_contact}
    ticket_handler: Any = notifier.notify_ticket
    handlers.update(dict.fromkeys(TEMPLATE_OF, ticket_handler))
    runtime.consume("messages", all_events(), handlers)
