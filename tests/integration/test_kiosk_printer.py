"""Kiosks printing straight to their ESC/POS printers, over real NATS and the embedded store: a
network printer played by a TCP listener on loopback that the test runs, a USB printer's device
file played by a FIFO. What arrives is read by a parser of the commands (tests/escpos_reader.py)
and its QR code decoded by zxing-cpp from the printed raster image. A stuck printer leaves the
service answering; a printer of another site, a stranger, a dead printer and a flood from one
kiosk are handled. The kiosk is a signed-in kiosk (a kiosk token named like its printer)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import zxingcpp

from giliran.auth import Role
from giliran.settings import KioskPrinter, Settings
from giliran_ops.embedded import free_port
from services.intake.app import warn_if_phones_cannot_follow
from tests.conftest import RunningService, eventually, running
from tests.escpos_reader import Printout, read

pytestmark = pytest.mark.integration
SITE = "cikarang-utara"
PUBLIC = "https://antrean.cikarang-utara.test"
LAN_ADDRESS = ("192.0.2.77", 50000)  # a documentation address: only a label, never dialled


class PrinterPort:
    """A network receipt printer's raw port (JetDirect 9100): keeps every job it receives."""

    def __init__(self) -> None:
        self.jobs: list[bytes] = []
        self.port = free_port()
        self.server: asyncio.Server | None = None

    async def _job(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.jobs.append(await reader.read())  # until the kiosk closes the connection
        writer.close()

    async def received(self, n: int) -> list[bytes]:
        """The jobs, once `n` have arrived whole (the kiosk's close ends a job)."""

        async def arrived() -> bool:
            return len(self.jobs) >= n

        await eventually(arrived, within=10)
        return self.jobs

    async def __aenter__(self) -> PrinterPort:
        self.server = await asyncio.start_server(self._job, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


class Kiosks:
    """Intake with kiosk printers configured; `at(name)` is a kiosk of that name signed in."""

    def __init__(self, intake: RunningService) -> None:
        self.intake = intake

    @asynccontextmanager
    async def at(
        self, name: str, site: str = SITE, address: tuple[str, int] = ("127.0.0.1", 50000)
    ) -> AsyncIterator[httpx.AsyncClient]:
        _, token = await self.intake.runtime.accounts.issue_token(name, Role.KIOSK, site)
        transport = httpx.ASGITransport(app=self.intake.app, client=address)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://intake",
            headers={"Authorization": f"Bearer {token}"},
        ) as kiosk:
            yield kiosk


@asynccontextmanager
async def intake_with_printers(
    settings: Settings, printers: dict[str, KioskPrinter], **more: Any
) -> AsyncIterator[Kiosks]:
    configured = settings.model_copy(
        update={"public_url": PUBLIC, "kiosk_printers": printers, **more}
    )
    async with running("queue", configured), running("intake", configured) as intake:
        yield Kiosks(intake)


async def take(http: httpx.AsyncClient, **form: str) -> dict[str, str]:
    r = await http.post(f"/kiosk/{SITE}", data={"service": "KTP-CETAK", **form})
    assert r.status_code == 303, r.text
    where = urlsplit(r.headers["location"])
    return {
        "token": where.path.rsplit("/", 1)[1],
        **{k: v[0] for k, v in parse_qs(where.query).items()},
    }


def qr_of(out: Printout, dots: int) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(out.paper(dots))]


async def test_a_network_printer_gets_the_ticket(settings: Settings) -> None:
    async with PrinterPort() as printer:
        lobby = KioskPrinter(site=SITE, paper=80, host="127.0.0.1", port=printer.port)
        async with (
            intake_with_printers(settings, {"lobby": lobby}) as kiosks,
            kiosks.at("lobby") as http,
        ):
            went = await take(http, priority="pregnancy", nik="3216094512900003")
            assert went["printed"] == "1" and "autoprint" not in went
            jobs = await printer.received(1)
            assert len(jobs) == 1
            out = read(jobs[0])
            text = out.text
            number = next(line for line in out.lines if line.style.width == 2)
            assert number.text == "B-001" and number.style.height == 2
            assert "Pencetakan KTP-el" in text and "Loket 1" in text
            assert "Layanan ini GRATIS." in text
            assert "PRIORITAS" in text and "hamil" not in text.lower()
            assert "NIK: ************0003" in text
            assert out.cut
            link = qr_of(out, 576)
            print(f"\nESC/POS (80 mm) QR code decoded: {link}")
            assert link == [f"{PUBLIC}/s/{went['token']}"]
            # The page shows the ticket and says it was printed; it does not print it again.
            page = await http.get(f"/kiosk/ticket/{went['token']}", params=went)
            assert page.status_code == 200 and 'id="printed"' in page.text
            assert 'data-autoprint="0"' in page.text


async def test_a_usb_printer_that_stalls_does_not_stall_the_service(
    settings: Settings, tmp_path: Path
) -> None:
    device = tmp_path / "lp0"
    os.mkfifo(device)  # like /dev/usb/lp0 of a printer that is busy: open() waits for it
    counter = KioskPrinter(site=SITE, paper=58, device=device, timeout_seconds=30)
    async with (
        intake_with_printers(settings, {"loket-depan": counter}) as kiosks,
        kiosks.at("loket-depan") as http,
    ):
        taking = asyncio.create_task(take(http))

        async def printing() -> bool:
            return any(t.name.startswith("giliran-printer") for t in threading.enumerate())

        for _ in range(200):
            if await printing():
                break
            await asyncio.sleep(0.05)
        assert await printing(), "the print job never started"
        # The printer holds the job: the service still answers, the kiosk's request still waits.
        for _ in range(5):
            assert (await http.get("/healthz")).status_code == 200
        assert not taking.done()
        job = await asyncio.to_thread(device.read_bytes)  # the printer takes the paper job
        went = await taking
        assert went["printed"] == "1"
        out = read(job)
        assert "B-001" in out.text and "GRATIS" in out.text
        assert all(len(line.text) * line.style.width <= 32 for line in out.lines)
        assert not out.cut  # the common 58 mm printers have no cutter
        assert qr_of(out, 384) == [f"{PUBLIC}/s/{went['token']}"]


async def test_a_printer_serves_only_its_own_sites_kiosk(settings: Settings) -> None:
    async with PrinterPort() as elsewhere, PrinterPort() as dead:
        await dead.__aexit__()  # nothing listens there any more: a printer switched off
        printers = {
            # Configured for a BOTRAM fair's kiosk; a kiosk of the same name here is another one.
            "tenda-a": KioskPrinter(site="botram-babelan", host="127.0.0.1", port=elsewhere.port),
            "off": KioskPrinter(site=SITE, host="127.0.0.1", port=dead.port, timeout_seconds=2),
        }
        async with intake_with_printers(settings, printers) as kiosks:
            async with kiosks.at("tenda-a") as namesake:
                went = await take(namesake)
            assert went.get("autoprint") == "1" and "printed" not in went
            # A stranger cannot print either: sent to sign in, no ticket, no paper.
            stranger = kiosks.intake.anonymous
            r = await stranger.post(f"/kiosk/{SITE}", data={"service": "KTP-CETAK"})
            assert r.status_code == 303 and r.headers["location"].startswith("/login")
            await asyncio.sleep(0.5)
            assert elsewhere.jobs == []
            # A printer that is off: the ticket is still issued, the browser prints it, and the
            # screen says why in both languages.
            async with kiosks.at("off") as kiosk:
                went = await take(kiosk)
                assert went["printed"] == "0" and went["autoprint"] == "1"
                page = await kiosk.get(f"/kiosk/ticket/{went['token']}", params=went)
                assert 'id="printer-failed"' in page.text
                assert "Printer kios tidak menjawab" in page.text
                english = {**went, "lang": "en"}
                page = await kiosk.get(f"/kiosk/ticket/{went['token']}", params=english)
                assert "did not answer" in page.text


async def test_a_flood_from_one_kiosk_stops_at_the_rate_limit(settings: Settings) -> None:
    async with PrinterPort() as printer:
        lobby = KioskPrinter(site=SITE, host="127.0.0.1", port=printer.port)
        async with (
            intake_with_printers(settings, {"lobby": lobby}, rate_ip_per_minute=3) as kiosks,
            kiosks.at("lobby", address=LAN_ADDRESS) as kiosk,
        ):
            answers = [
                await kiosk.post(f"/kiosk/{SITE}", data={"service": "KTP-CETAK"}) for _ in range(5)
            ]
        assert [a.status_code for a in answers] == [303, 303, 303, 429, 429]
        await printer.received(3)
        await asyncio.sleep(0.5)  # anything more would have arrived by now
        assert len(printer.jobs) == 3  # paper for the three tickets issued, none for the refused


def test_start_up_warns_when_phones_cannot_open_the_links(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="giliran.intake"):
        warn_if_phones_cannot_follow(
            settings.model_copy(update={"public_url": "http://127.0.0.1:8101"})
        )
        warn_if_phones_cannot_follow(settings.model_copy(update={"public_url": ""}))
        warn_if_phones_cannot_follow(settings.model_copy(update={"public_url": PUBLIC}))
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2
    assert "GILIRAN_PUBLIC_URL=http://127.0.0.1:8101 opens only on this box" in said[0]
    assert "GILIRAN_PUBLIC_URL is not set" in said[1]
