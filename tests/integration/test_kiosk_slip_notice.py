"""A kiosk's printed slip while its wait hears `ticket.issued` on plain NATS (ADR 0228), over a
real nats-server, the embedded store, the real queue and intake, and an ESC/POS printer played
by a TCP listener or the page the kiosk's browser prints: the slip carries the number the queue
issued, also when a forged or another site's notice for the same request comes first, when the
queue does not answer intake's question in time, when the notice is missed, and with two intake
instances. The number on paper comes from intake's record or the queue's answer, never from the
notice (ADR 0212's first landing printed from the record alone, before the record had it)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from giliran.contracts import TicketIssued, new_event, utcnow
from giliran.contracts.subjects import STREAM
from giliran.settings import KioskPrinter, Settings
from tests.conftest import RunningService, eventually, nats_client, running
from tests.escpos_reader import Printout, read
from tests.integration.test_kiosk_printer import PUBLIC, SITE, Kiosks, PrinterPort, take

pytestmark = pytest.mark.integration


def number_on(out: Printout) -> str:
    """The big number line of a slip, or the words a slip prints when it has none."""
    big = [line.text for line in out.lines if line.style.width == 2]
    return big[0] if big else "(no number)"


def numbers_on_page(html: str) -> list[str]:
    """The ticket numbers the kiosk's ticket page shows (and its browser prints)."""
    return re.findall(r'data-testid="number">([^<]*)<', html)


async def browser_slip(http: httpx.AsyncClient) -> list[str]:
    """A kiosk without an ESC/POS printer registers: its browser follows the redirect at once
    to the page it prints. The numbers on that page."""
    r = await http.post(f"/kiosk/{SITE}", data={"service": "KTP-CETAK"})
    assert r.status_code == 303, r.text
    where = urlsplit(r.headers["location"])
    assert "autoprint=1" in where.query  # the browser prints this page
    page = await http.get(f"{where.path}?{where.query}")
    assert page.status_code == 200, page.text
    return numbers_on_page(page.text)


async def waiting_request(intake: RunningService) -> str:
    """The request id a kiosk's answer is waiting for in this intake instance."""

    async def one() -> str | None:
        waits = list(intake.app.state.intake._waiters)
        return waits[0] if waits else None

    found: str = await eventually(one, interval=0.01)
    return found


async def notice_only(settings: Settings, subject: str, event: Any) -> None:
    """Put `event` on plain NATS only: the stream refuses it (a last sequence it does not have)
    while every plain subscriber hears it, as a forger with publish rights on the subject could
    do. Checked: the stream holds no more `ticket.issued` after it than before (other events,
    such as the registration's own, may be stored meanwhile)."""
    async with nats_client(settings) as nc:
        js = nc.jetstream()

        async def issued_stored() -> tuple[int, dict[str, int]]:
            info = await js.stream_info(STREAM, subjects_filter="giliran.*.ticket.issued")
            return info.state.last_seq, dict(info.state.subjects or {})

        last_seq, before = await issued_stored()
        await nc.publish(
            subject,
            json.dumps(event.to_json_dict()).encode(),
            headers={"Nats-Expected-Last-Sequence": str(last_seq + 1000)},
        )
        await nc.flush()
        await asyncio.sleep(0.2)
        assert (await issued_stored())[1] == before


async def test_a_forged_or_other_sites_notice_never_prints_and_the_slip_gets_its_number(
    settings: Settings,
) -> None:
    """The queue is not running yet when the kiosk registers, so no number is issued; two
    notices for that request are heard meanwhile: one of another site (subject and body agree)
    and one of this site the queue never issued (number Z-999). Then the queue starts and
    issues B-001: the slip carries B-001. With ADR 0212's first landing the forged notice ended
    the wait and the slip, read from intake's record, said the number was being issued."""
    configured = settings.model_copy(update={"public_url": PUBLIC, "ticket_wait_seconds": 20.0})
    async with PrinterPort() as printer:
        lobby = KioskPrinter(site=SITE, paper=80, host="127.0.0.1", port=printer.port)
        configured = configured.model_copy(update={"kiosk_printers": {"lobby": lobby}})
        async with running("intake", configured) as intake, Kiosks(intake).at("lobby") as http:
            taking = asyncio.create_task(take(http))
            request_id = await waiting_request(intake)
            facts = {
                "ticket_id": f"{request_id}-KTP-CETAK-forged",
                "request_id": request_id,
                "session_id": "forged",
                "service": "KTP-CETAK",
                "issued_at": utcnow(),
                "waiting_ahead": 0,
            }
            elsewhere = new_event(
                TicketIssued(**facts, number="Z-998"), site="botram-babelan", source="queue"
            )
            forged = new_event(TicketIssued(**facts, number="Z-999"), site=SITE, source="queue")
            for event in (elsewhere, forged):
                await notice_only(configured, event.nats_subject, event)
            assert not taking.done()  # a notice's number never goes straight to paper
            async with running("queue", configured):
                went = await taking
                jobs = await printer.received(1)
                store = intake.app.state.intake.store

                async def recorded() -> list[str]:
                    doc = await store.get(request_id)
                    return [t["number"] for t in (doc or {}).get("tickets", {}).values()]

                # The record follows the stream only: the notices never reached it.
                assert await eventually(recorded) == ["B-001"]
        out = read(jobs[0])
        assert went["printed"] == "1"
        assert number_on(out) == "B-001"
        assert "Z-99" not in out.text


async def test_a_missed_notice_still_prints_the_number_from_the_record(
    settings: Settings,
) -> None:
    """Intake's plain subscription to `ticket.issued` is gone (as if the notice were lost in a
    reconnect): the wait looks in the store at its end, which the ticket consumer wrote."""
    configured = settings.model_copy(update={"public_url": PUBLIC, "ticket_wait_seconds": 1.5})
    async with PrinterPort() as printer:
        lobby = KioskPrinter(site=SITE, paper=80, host="127.0.0.1", port=printer.port)
        configured = configured.model_copy(update={"kiosk_printers": {"lobby": lobby}})
        async with (
            running("queue", configured),
            running("intake", configured) as intake,
            Kiosks(intake).at("lobby") as http,
        ):
            await asyncio.wait_for(intake.runtime.bus_started.wait(), 10)
            connection = intake.runtime.broker.connection
            heard = [s for s in connection._subs.values() if s.subject.endswith("ticket.issued")]
            assert len(heard) == 1  # the notice's subscription (ADR 0228), now dropped
            await heard[0].unsubscribe()
            went = await take(http)
            out = read((await printer.received(1))[0])
        assert went["printed"] == "1" and number_on(out) == "B-001"


async def test_two_intake_instances_each_print_their_own_number(settings: Settings) -> None:
    """Both instances share the durable ticket consumer: a slip's ticket may be written by the
    other instance's consumer; each kiosk's slip carries its own number all the same."""
    async with PrinterPort() as one_printer, PrinterPort() as other_printer:
        printers = {
            "lobby": KioskPrinter(site=SITE, host="127.0.0.1", port=one_printer.port),
            "tenda": KioskPrinter(site=SITE, host="127.0.0.1", port=other_printer.port),
        }
        configured = settings.model_copy(update={"public_url": PUBLIC, "kiosk_printers": printers})
        async with (
            running("queue", configured),
            running("intake", configured) as one,
            running("intake", configured) as other,
            Kiosks(one).at("lobby") as lobby,
            Kiosks(other).at("tenda") as tenda,
        ):
            for _ in range(3):
                await take(lobby)
                await take(tenda)
            slips = [read(j) for j in await one_printer.received(3)]
            slips += [read(j) for j in await other_printer.received(3)]
    numbers = sorted(number_on(s) for s in slips)
    assert numbers == [f"B-{n:03d}" for n in range(1, 7)]


async def test_a_forged_notice_leaves_the_browser_printed_slip_its_number(
    settings: Settings,
) -> None:
    """As above, for a kiosk whose browser prints the slip (no ESC/POS printer): the forged
    notice (Z-999) ends the kiosk's wait before the queue runs; the kiosk waits once more, as the
    ESC/POS path does, before its browser is sent to the page, which then carries B-001. Before
    this fix the browser got the page at once and it said the number was being issued."""
    configured = settings.model_copy(update={"public_url": PUBLIC, "ticket_wait_seconds": 20.0})
    async with running("intake", configured) as intake, Kiosks(intake).at("lobby") as http:
        taking = asyncio.create_task(browser_slip(http))
        request_id = await waiting_request(intake)
        forged = new_event(
            TicketIssued(
                ticket_id=f"{request_id}-KTP-CETAK-forged",
                request_id=request_id,
                session_id="forged",
                service="KTP-CETAK",
                issued_at=utcnow(),
                waiting_ahead=0,
                number="Z-999",
            ),
            site=SITE,
            source="queue",
        )
        await notice_only(configured, forged.nats_subject, forged)
        async with running("queue", configured):
            assert await taking == ["B-001"]


@pytest.mark.parametrize("printing", ["browser", "escpos"])
async def test_a_queue_too_busy_to_answer_still_leaves_the_printed_slip_its_number(
    settings: Settings, printing: str
) -> None:
    """No forgery: the queue issues B-001 as usual, but it never answers intake's
    `request_status` in time (intake's timeout for it is a microsecond here, as for a queue too
    busy to answer within 0.5 s: the page then shows what intake knows). The kiosk's wait ends
    on the notice, before intake's ticket consumer (resting 250 ms between fetches) writes the
    ticket into the record, so the number can only come from the record: the kiosk waits once
    more for it, on either path, before it prints or its browser is sent to the page. Before
    this fix the browser's page, read at once, said the number was being issued (the ESC/POS
    slip already waited)."""
    configured = settings.model_copy(
        update={"public_url": PUBLIC, "status_query_timeout_seconds": 0.000001}
    )
    async with PrinterPort() as printer:
        if printing == "escpos":
            lobby = KioskPrinter(site=SITE, paper=80, host="127.0.0.1", port=printer.port)
            configured = configured.model_copy(update={"kiosk_printers": {"lobby": lobby}})
        async with (
            running("queue", configured),
            running("intake", configured) as intake,
            Kiosks(intake).at("lobby") as http,
        ):
            for n in range(1, 4):
                if printing == "browser":
                    numbers = await browser_slip(http)
                else:
                    went = await take(http)
                    assert went["printed"] == "1"
                    numbers = [number_on(read((await printer.received(n))[n - 1]))]
                assert numbers == [f"B-{n:03d}"]
