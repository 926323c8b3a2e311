"""Edge site mode in intake: the hub sends its admins' calendar changes down to the site boxes,
and a site box applies the changes for its site from its copy of the hub's stream."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.client import JetStreamContext
from pydantic import ValidationError

from giliran.bus import jetstream
from giliran.contracts.subjects import CATALOGUE_STREAM, catalogue_subject
from giliran.errors import DomainError, Unavailable
from giliran.runtime import ServiceRuntime
from services.intake.admin import AddSession, Admin, Announce, CalendarChange

log = logging.getLogger("giliran.intake.edge")
FOLLOWER = "intake-calendar"


class HubUnreachable(Unavailable):
    def __init__(self) -> None:
        super().__init__(
            "Perubahan tersimpan di hub tetapi belum terkirim ke lokasi: bus pesan tidak "
            "tersedia. Ulangi perubahan yang sama sebentar lagi.",
            "The change is saved at the hub but not yet sent to the site: the message bus is "
            "unavailable. Repeat the same change shortly.",
        )


async def apply(admin: Admin, change: CalendarChange) -> None:
    """Make a change from the hub at this site, through the same use cases its admins use."""
    site, day = change.site, change.day
    if change.action == "add_session" and day is not None:
        await admin.add_session(
            site, AddSession(date=day, opens=change.opens, closes=change.closes)
        )
    elif change.action == "cancel_session" and change.session_id:
        await admin.cancel_session(site, change.session_id, change.note)
    elif change.action in ("holiday_add", "holiday_remove") and day is not None:
        await admin.set_holiday(site, day, change.action == "holiday_add", change.note)
    elif change.action in ("close", "reopen") and day is not None:
        await admin.set_closed(site, day, change.action == "close", change.note)
    else:
        log.warning("calendar change %s (%s) is incomplete; skipped", change.id, change.action)


def hub_announcer(runtime: ServiceRuntime) -> Announce:
    """At the hub: each change goes to giliran.catalogue.<site> in the hub's catalogue stream;
    Nats-Msg-Id = change id, so repeating a publish the hub did not confirm stores it once."""

    async def announce(change: CalendarChange) -> None:
        if not runtime.bus_started.is_set() or not runtime.broker.connection.is_connected:
            raise HubUnreachable()
        try:
            await jetstream(runtime.broker).publish(
                catalogue_subject(change.site),
                change.model_dump_json().encode(),
                stream=CATALOGUE_STREAM,
                timeout=5.0,
                headers={"Nats-Msg-Id": change.id},
            )
        except Exception as exc:
            log.warning("calendar change %s not sent down: %s", change.id, exc)
            raise HubUnreachable() from exc

    return announce


@dataclass
class CalendarFollower:
    """At a site box: a durable pull consumer on the site's copy of the hub's calendar changes
    (sourced across the leaf link whenever it is up), applied in order, each acked once done."""

    runtime: ServiceRuntime
    admin: Admin
    site: str
    _subscription: JetStreamContext.PullSubscription | None = field(default=None, init=False)

    async def poll(self) -> None:
        """One round (runtime.every calls it): take what arrived and apply it."""
        if not self.runtime.bus_started.is_set():
            return
        if self._subscription is None:
            subject = catalogue_subject(self.site)
            self._subscription = await jetstream(self.runtime.broker).pull_subscribe(
                subject,
                durable=FOLLOWER,
                stream=CATALOGUE_STREAM,
                config=ConsumerConfig(
                    durable_name=FOLLOWER,
                    filter_subject=subject,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=30,
                    # One change at a time: if one fails unexpectedly (store away), nothing after
                    # it may be applied first ("close" then "reopen" must not end up closed).
                    max_ack_pending=1,
                ),
            )
        while True:
            try:
                messages = await self._subscription.fetch(batch=20, timeout=0.5)
            except TimeoutError:
                return
            for message in messages:
                try:
                    change = CalendarChange.model_validate_json(message.data)
                except ValidationError as exc:
                    log.warning("calendar change not understood; skipped: %s", exc.errors()[:1])
                    await message.ack()
                    continue
                try:
                    await apply(self.admin, change)
                except DomainError as exc:
                    # E.g. a session added for a day that has passed while the link was down:
                    # the site's own calendar stands.
                    log.warning("calendar change %s not applied: %s", change.id, exc.message_en)
                await message.ack()
