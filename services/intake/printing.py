"""ESC/POS for a kiosk's own thermal printer: the slip laid out with python-escpos (its Dummy
printer collects the bytes), then sent to a network printer's raw port or a USB printer's device
file in a thread pool of its own, so a stuck printer never blocks the event loop (ADR 0145)."""

from __future__ import annotations

import asyncio
import logging
import socket
import textwrap
import unicodedata
from concurrent.futures import ThreadPoolExecutor

import segno
from escpos.constants import QR_ECLEVEL_M
from escpos.printer import Dummy

from giliran.errors import DomainError
from giliran.settings import KioskPrinter
from services.intake.slip import Paper, Slip

log = logging.getLogger("giliran.intake.printing")

# Two printers stuck at once still leave the service's default thread pool alone; a third print
# waits for one of them (each gives up after its printer's timeout).
_PRINTERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="giliran-printer")
QR_SHARE_OF_WIDTH = 0.7  # of the printable dots: big enough for an old phone's camera


class PrinterFailed(DomainError):
    code = "printer_failed"
    http_status = 503

    def __init__(self, why: str) -> None:
        super().__init__(
            "Printer kios tidak menjawab; tiket dicetak lewat browser atau foto layar ini.",
            "The kiosk's printer did not answer; print from the browser or photograph this screen.",
        )
        self.why = why


def plain(text: str) -> str:
    """Printable on any code page: cheap printers' code pages differ, ASCII is in all of them."""
    decomposed = unicodedata.normalize("NFKD", text.replace("·", "-"))
    return decomposed.encode("ascii", "ignore").decode()


def escpos_bytes(slip: Slip, paper: Paper, profile: str | None = None) -> bytes:
    """The slip as the ESC/POS commands a printer of this paper width understands."""
    printer = Dummy(profile=profile or paper.profile)
    width = paper.columns

    def line(text: str, **style: object) -> None:
        printer.set_with_default(**style)
        printer.text(textwrap.fill(plain(text), width) + "\n")

    printer.hw("INIT")
    line(slip.site_name, align="center")
    line(slip.printed_at, align="center")
    for ticket in slip.tickets:
        line(slip.say("title"), align="center", bold=True)
        line(ticket.number, align="center", bold=True, double_width=True, double_height=True)
        line(ticket.service, align="center", bold=True)
        line(ticket.counters, align="center")
        if ticket.ahead is not None:
            ahead = f"{slip.say('ahead')}: {ticket.ahead}"
            if ticket.expected:
                ahead += f" - {slip.say('expected')} {ticket.expected}"
            line(ahead, align="center")
    if not slip.tickets:
        line(slip.say("pending"), align="center")
    line(slip.cost, align="center", bold=True)
    if slip.priority:  # white on black, the mark only: never the reason (ADR 0147)
        printer.set_with_default(align="center", bold=True, invert=True)
        printer.text(f" {slip.say('priority')} \n")
    if slip.checkin_code:
        line(f"{slip.say('checkin')}: {slip.checkin_code}", align="center", bold=True)
    if slip.checkin_rule:
        line(slip.checkin_rule, align="center")
    if slip.nik_masked:
        line(f"NIK: {slip.nik_masked}", align="center")
    dots = printer.profile.profile_data["media"]["width"]["pixels"]
    modules = segno.make(slip.status_url, error="m").symbol_size(border=1)[0]
    printer.set_with_default(align="center")
    printer.qr(
        slip.status_url,
        ec=QR_ECLEVEL_M,
        size=max(3, min(12, int(dots * QR_SHARE_OF_WIDTH) // modules)),
        native=False,  # a raster image: every printer prints it, not only those with GS ( k
        center=True,
    )
    line(slip.say("scan"), align="center")
    printer.cut()
    output: bytes = printer.output
    return output


def _send(printer: KioskPrinter, data: bytes) -> None:
    if printer.host is not None:
        with socket.create_connection(
            (printer.host, printer.port), timeout=printer.timeout_seconds
        ) as conn:
            conn.sendall(data)
    elif printer.device is not None:
        with printer.device.open("wb", buffering=0) as device:
            device.write(data)
    else:
        raise PrinterFailed("no printer address: this kiosk prints from its browser")


async def send_to_printer(printer: KioskPrinter, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(printer.timeout_seconds):
            await loop.run_in_executor(_PRINTERS, _send, printer, data)
    except (OSError, TimeoutError) as exc:
        where = f"{printer.host}:{printer.port}" if printer.host else str(printer.device)
        log.warning("kiosk printer %s failed: %s", where, type(exc).__name__)
        raise PrinterFailed(type(exc).__name__) from exc
