"""The citizen's live status: the queue's position and ETA by NATS request-reply, and a version
per request that the status page's server push waits on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pydantic import ValidationError

from giliran.contracts import RequestStatusQuery, RequestStatusReply, TicketView

log = logging.getLogger("giliran.intake.status")

Ask = Callable[[str, bytes, float], Awaitable[bytes]]


class QueueStatus:
    """Asks the queue where a request's tickets stand. The queue may be down or slow: after a
    short timeout the page shows what intake knows, without position and ETA."""

    def __init__(self, ask: Ask, timeout_seconds: float) -> None:
        self._ask = ask
        self._timeout = timeout_seconds

    async def tickets(self, site: str, request_id: str) -> dict[str, TicketView] | None:
        query = RequestStatusQuery(site=site, request_id=request_id)
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._ask(
                    RequestStatusQuery.subject(site),
                    query.model_dump_json().encode(),
                    self._timeout,
                )
            reply = RequestStatusReply.model_validate_json(raw)
        except (TimeoutError, ValidationError, Exception) as exc:  # degrade, never fail the page
            log.debug("queue status for %s unavailable: %s", request_id, type(exc).__name__)
            return None
        if not reply.ok:
            return None
        return {t.ticket_id: t for t in reply.tickets}
