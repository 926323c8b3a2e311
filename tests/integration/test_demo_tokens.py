"""`giliran up --demo` prints a board link and an API token at every start: the ones printed at
an earlier start stop working (issue 14, finding 9). The real accounts store, a real queue over
real HTTP."""

from __future__ import annotations

import re

import httpx
import pytest

from giliran.auth.cli import demo_accounts
from giliran.settings import Settings
from giliran_ops.cli import build_service
from giliran_ops.embedded import free_port
from tests.conftest import serving

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"


def _printed(lines: list[str]) -> tuple[str, str]:
    text = "\n".join(lines)
    api = re.search(r"api token  (gl_\S+)", text)
    board = re.search(r"token=(gl_[^&\s]+)", text)
    assert api and board, text
    return api.group(1), board.group(1)


async def test_a_demo_start_revokes_the_tokens_an_earlier_one_printed(settings: Settings) -> None:
    app, _ = build_service("queue", settings)
    async with serving(app, free_port()) as base, httpx.AsyncClient(base_url=base) as http:
        first_api, first_board = _printed(await demo_accounts(settings, SITE, base))
        second_api, second_board = _printed(await demo_accounts(settings, SITE, base))
        lines = f"/api/v1/sites/{SITE}/counters/1"

        async def status(token: str) -> int:
            r = await http.get(lines, headers={"Authorization": f"Bearer {token}"})
            return r.status_code

        assert await status(second_api) == 200
        assert await status(first_api) == 401
        board = f"/api/v1/sites/{SITE}/board"
        assert (
            await http.get(board, headers={"Authorization": f"Bearer {first_board}"})
        ).status_code == 401
        assert (
            await http.get(board, headers={"Authorization": f"Bearer {second_board}"})
        ).status_code == 200
