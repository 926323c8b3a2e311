"""Changes.rendered: one rendering per change of a key, shared by every screen watching it; a
failed rendering is not kept, and a caller behind a newer rendering is not shown the newer one
under its own version."""

from __future__ import annotations

import asyncio

import pytest

from giliran.push import Changes


class Renderer:
    """Counts its renderings; each shows the version current when it started."""

    def __init__(self, changes: Changes, key: str, *, fail: bool = False) -> None:
        self.changes = changes
        self.key = key
        self.fail = fail
        self.made = 0

    async def __call__(self) -> str:
        self.made += 1
        version = self.changes.version(self.key)
        await asyncio.sleep(0.01)  # a rendering takes a moment: others ask meanwhile
        if self.fail:
            raise RuntimeError("store away")
        return f"{self.key}@{version}"


async def test_every_screen_of_a_key_gets_one_rendering_per_change() -> None:
    changes = Changes()
    board = Renderer(changes, "cikarang-utara")
    other = Renderer(changes, "tambun-selatan")
    for change in range(1, 4):
        changes.bump("cikarang-utara")
        changes.bump("tambun-selatan")
        seen = changes.version("cikarang-utara")
        shown = await asyncio.gather(
            *(changes.rendered("cikarang-utara", "board", seen, board) for _ in range(8)),
            changes.rendered("tambun-selatan", "board", seen, other),
        )
        assert shown[:8] == [f"cikarang-utara@{seen}"] * 8
        assert shown[8] == f"tambun-selatan@{seen}"  # another key is its own rendering
        assert board.made == change  # eight screens, one rendering per change
    # Another view of the same key (another kind of screen) is rendered apart.
    assert await changes.rendered("cikarang-utara", "live", 3, other) == "tambun-selatan@3"


async def test_a_failed_rendering_reaches_its_waiters_and_is_not_kept() -> None:
    changes = Changes()
    changes.bump("s")
    broken = Renderer(changes, "s", fail=True)
    results = await asyncio.gather(
        *(changes.rendered("s", "board", 1, broken) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert broken.made == 1
    healed = Renderer(changes, "s")
    assert await changes.rendered("s", "board", 1, healed) == "s@1"  # tried again, not cached
    assert healed.made == 1


async def test_a_screen_behind_a_newer_rendering_renders_its_own() -> None:
    changes = Changes()
    board = Renderer(changes, "s")
    changes.bump("s")
    changes.bump("s")
    assert await changes.rendered("s", "board", 2, board) == "s@2"
    # A stream that read version 1 before the second change: never handed version 2's
    # rendering as if it were 1 (its next wait sees 2 and asks again).
    assert await changes.rendered("s", "board", 1, board) == "s@2"
    assert board.made == 2
    assert await changes.rendered("s", "board", 2, board) == "s@2"
    assert board.made == 2


async def test_a_screen_that_leaves_does_not_cancel_the_others_rendering() -> None:
    changes = Changes()
    changes.bump("s")
    board = Renderer(changes, "s")
    leaving = asyncio.create_task(changes.rendered("s", "board", 1, board))
    staying = asyncio.create_task(changes.rendered("s", "board", 1, board))
    await asyncio.sleep(0)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert await staying == "s@1"
    assert board.made == 1


async def test_a_screen_that_connects_long_after_the_last_change_gets_a_fresh_rendering() -> None:
    """The board shows the clock and the session of the hour too, which move without a change:
    one change's rendering is for the screens it woke, not for one that connects much later."""
    changes = Changes(reuse_seconds=0.05)
    board = Renderer(changes, "s")
    changes.bump("s")
    assert await changes.rendered("s", "board", 1, board) == "s@1"
    assert await changes.rendered("s", "board", 1, board) == "s@1"
    assert board.made == 1  # at once: shared
    await asyncio.sleep(0.1)
    assert await changes.rendered("s", "board", 1, board) == "s@1"
    assert board.made == 2  # later: rendered afresh
