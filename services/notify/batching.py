"""Group commit for one fetched batch: writes that a batch's concurrent flows make at the same
step go to the store together, as one command (ADR 0219)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

# Writes one command for many items: one outcome per item, in order; an Exception as an outcome
# is raised to that item's submitter only.
Flusher = Callable[[Sequence[Item]], Awaitable[Sequence[Outcome | Exception]]]

# A submitted write waits at most this long for the batch's other flows: the flush that takes a
# record starts at most this long after its message was answered, whatever the others are still
# doing (it may then wait behind that flush's other kinds' commands and the log insert's
# duplicate fallbacks), so a kill -9 re-sends at most the messages on the wire and those answered
# in that last stretch (ADR 0219).
WINDOW_SECONDS = 0.02

_current: contextvars.ContextVar[GroupCommit | None] = contextvars.ContextVar(
    "notify_group_commit", default=None
)


def current() -> GroupCommit | None:
    """The group commit of the batch this flow belongs to; None outside a consumer's batch (an
    operator's retry, a unit test calling a handler): each write then goes alone."""
    return _current.get()


@dataclass
class _Pending:
    flusher: Flusher[Any, Any]
    items: list[Any] = field(default_factory=list)
    futures: list[asyncio.Future[Any]] = field(default_factory=list)


@dataclass
class GroupCommit:
    """The flows of one fetched batch (one per request, run at once) hand their writes here;
    the writes of one kind are flushed as one command as soon as every flow is waiting for a
    flush or done — no flow can add to them without it —, or `window` after the first of them,
    whichever comes first. Each submitter gets its own outcome: a write never waits for more
    than one flush, and one item's failure is its own."""

    flows: int
    window: float = WINDOW_SECONDS
    _active: int = field(init=False)
    # By flusher (bound methods of one store compare equal, each access makes a new one).
    _pending: dict[Flusher[Any, Any], _Pending] = field(init=False, default_factory=dict)
    _timer: asyncio.TimerHandle | None = field(init=False, default=None)
    _flushes: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self._active = self.flows

    @contextlib.contextmanager
    def flow(self) -> Iterator[None]:
        """One flow of the batch: its writes go through this group commit until it is done."""
        token = _current.set(self)
        try:
            yield
        finally:
            _current.reset(token)
            self._active -= 1
            if self._active == 0 and self._pending:
                self._flush_soon()

    async def submit(self, flusher: Flusher[Item, Outcome], item: Item) -> Outcome:
        """`item` written by `flusher` together with the other flows' items of that kind."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        pending = self._pending.setdefault(flusher, _Pending(flusher))
        pending.items.append(item)
        pending.futures.append(future)
        self._active -= 1
        try:
            if self._active <= 0:
                self._flush_soon()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.window, self._flush_soon)
            return await future
        except BaseException:
            if future.cancelled():  # not settled by a flush, which would have counted it back
                self._active += 1
            raise

    def _flush_soon(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        taken, self._pending = self._pending, {}
        if not taken:
            return
        kinds = list(taken.values())
        task = asyncio.get_running_loop().create_task(self._flush(kinds))
        self._flushes.add(task)
        # However the flush ends — cancelled mid-command or before its first step (shutdown),
        # or failed outside any one command —, nobody is left waiting in vain: a callback runs
        # for every ending, where an `except` in `_flush` misses a cancel before it starts.
        task.add_done_callback(lambda done: self._settle(done, kinds))

    def _settle(self, flush: asyncio.Task[None], kinds: list[_Pending]) -> None:
        """Every writer the ended `flush` left waiting: cancelled with it, or given its error."""
        self._flushes.discard(flush)
        error = None if flush.cancelled() else flush.exception()
        for pending in kinds:
            for future in pending.futures:
                if future.done():
                    continue
                if error is None:
                    future.cancel()  # its submitter counts itself back in (`submit`)
                else:
                    self._active += 1  # as a flush's outcome would (`_flush`)
                    future.set_exception(error)

    async def _flush(self, kinds: list[_Pending]) -> None:
        for pending in kinds:
            try:
                outcomes = list(await pending.flusher(pending.items))
            except Exception as exc:  # the one command failed: so did each of its writes
                outcomes = [exc] * len(pending.items)
            for future, outcome in zip(pending.futures, outcomes, strict=True):
                if future.done():  # its submitter was cancelled meanwhile
                    continue
                # Active again from now, not from when its flow next runs: a flow resumed first
                # must not take the others, about to resume, for waiting (and flush alone).
                self._active += 1
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)


async def submit(flusher: Flusher[Item, Outcome], item: Item) -> Outcome:
    """`item` through the current batch's group commit, or alone (one command) outside one."""
    commit = current()
    if commit is None:
        outcome = (await flusher([item]))[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    return await commit.submit(flusher, item)
