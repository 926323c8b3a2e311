"""Server-push streams are capped per credential (token, status link) and per client address in
each process: one stolen token or one address cannot hold thousands of connections open. Real
queue and intake processes over real HTTP, the real accounts store."""

from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from giliran.settings import Settings
from giliran_ops.embedded import service_process
from tests.conftest import eventually, issue_token

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
LIMITS = {"GILIRAN_SSE_PER_CREDENTIAL": "2", "GILIRAN_SSE_PER_ADDRESS": "3"}


async def _open(
    stack: contextlib.AsyncExitStack, http: httpx.AsyncClient, url: str, **kw: object
) -> httpx.Response:
    return await stack.enter_async_context(http.stream("GET", url, **kw))  # type: ignore[arg-type]


async def _refused(response: httpx.Response) -> None:
    # The status first: an admitted stream never ends, so its body is not read.
    assert response.status_code == 429, f"stream admitted ({response.status_code})"
    assert response.headers.get("retry-after")
    body = await response.aread()
    assert b"Terlalu banyak tayangan langsung" in body and b"Too many live streams" in body


async def test_board_streams_are_capped_per_token_and_per_address(
    settings: Settings, tmp_path: Path
) -> None:
    tokens = [await issue_token(settings, "display", SITE, label=f"tv-{n}") for n in range(3)]
    process = service_process("queue", settings, tmp_path, env=LIMITS).start()
    try:
        await process.wait_listening(within=60)
        url = f"http://127.0.0.1:{process.port}/api/v1/sites/{SITE}/board/stream"

        def bearer(n: int) -> dict[str, str]:
            return {"Authorization": f"Bearer {tokens[n]}"}

        async with httpx.AsyncClient(timeout=30) as http, contextlib.AsyncExitStack() as stack:
            first = await _open(stack, http, url, headers=bearer(0))
            assert first.status_code == 200
            assert (await _open(stack, http, url, headers=bearer(0))).status_code == 200
            # The same token a third time: refused at once, in both languages.
            async with http.stream("GET", url, headers=bearer(0)) as third:
                await _refused(third)
            # Another token from the same address: its third stream is the address's last.
            assert (await _open(stack, http, url, headers=bearer(1))).status_code == 200
            async with http.stream("GET", url, headers=bearer(2)) as fourth:
                await _refused(fourth)
            # A closed stream frees its place: as soon as the server has seen the client go
            # (its disconnect arrives a moment after our close; asking at once raced it).
            await first.aclose()

            async def admitted() -> bool:
                async with http.stream("GET", url, headers=bearer(2)) as again:
                    return again.status_code == 200

            await eventually(admitted, within=10, interval=0.1)
    finally:
        process.stop()


async def test_a_status_link_cannot_hold_more_than_its_share_of_streams(
    settings: Settings, tmp_path: Path
) -> None:
    env = {**LIMITS, "GILIRAN_DEMO": "true", "GILIRAN_TICKET_WAIT_SECONDS": "0"}
    process = service_process("intake", settings, tmp_path, env=env).start()
    try:
        await process.wait_listening(within=60)
        base = f"http://127.0.0.1:{process.port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            made = await http.post(
                "/api/v1/requests",
                json={"site": SITE, "services": ["KTP-CETAK"], "name": "Warga",
                      "nik": "3216094512900077", "consent": False},
            )  # fmt: skip
            assert made.status_code in (201, 202), made.text
            token = urlsplit(made.json()["status_page_url"]).path.rsplit("/", 1)[-1]
            stream = f"/api/v1/status/{token}/stream"
            async with contextlib.AsyncExitStack() as stack:
                for _ in range(2):
                    assert (await _open(stack, http, stream)).status_code == 200
                async with http.stream("GET", stream) as third:
                    await _refused(third)
    finally:
        process.stop()
