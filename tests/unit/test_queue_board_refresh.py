"""A board refreshes once per change: this process's writes refresh it as they are made, so
their events coming back on the bus refresh nothing; another instance's events (and events
this process cannot tell as its own) refresh it as before."""

from __future__ import annotations

from typing import cast

from giliran.catalogue import load_catalogue
from giliran.settings import Settings
from services.queue.handlers import Queue
from services.queue.store import TicketStore

SITE = "cikarang-utara"


class Written:
    """The store's memory of the events this process wrote."""

    def __init__(self, *own: str) -> None:
        self.own = set(own)

    def own_event(self, event_id: str) -> bool:
        return event_id in self.own


def test_own_events_back_from_the_bus_do_not_refresh_the_board_again() -> None:
    store = Written("mine")
    queue = Queue(
        store=cast(TicketStore, store), catalogue=load_catalogue(Settings().catalogue_dir)
    )
    seen = queue.changes.version(SITE)
    queue.on_event(f"giliran.{SITE}.ticket.called", "mine")
    assert queue.changes.version(SITE) == seen
    queue.on_event(f"giliran.{SITE}.ticket.called", "the-other-instances")
    queue.on_event(f"giliran.{SITE}.request.checked_in", None)
    assert queue.changes.version(SITE) == seen + 2
    # The writes themselves refresh it: the store tells the queue each site it wrote events at.
    changed = cast(TicketStore, store).changed
    assert changed is not None
    changed(SITE)
    assert queue.changes.version(SITE) == seen + 3
