"""The printed ticket's content and its ESC/POS form, read back by a parser of the commands
(tests/escpos_reader.py) and the QR code decoded by zxing-cpp from the printed raster image:
both paper widths, both languages, every priority reason, free and paid services."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import zxingcpp
from hypothesis import given, settings
from hypothesis import strategies as st

from giliran.catalogue import load_catalogue
from giliran.contracts import PriorityReason, TicketStatus, TicketView
from giliran.settings import REPO_ROOT, is_loopback_url
from services.intake.printing import escpos_bytes, plain
from services.intake.slip import Paper, slip_for
from services.intake.views import StatusView, TicketLine, cost_text, issued_unrecorded
from tests.escpos_reader import Printout, read

CATALOGUE = load_catalogue(REPO_ROOT / "deploy" / "sites")
URL = "https://antrean.kecamatan.test/s/Zm9vYmFyYmF6cXV4cXV1eA"
REASON_WORDS = (
    "hamil",
    "pregnan",
    "disabilitas",
    "disabilit",
    "lansia",
    "elderly",
    "bayi",
    "infant",
)


def view(site: str, services: list[tuple[str, str]], priority: str | None) -> StatusView:
    spec = CATALOGUE.site(site)
    assert spec is not None
    lines = []
    for n, (code, number) in enumerate(services):
        service = spec.service(code)
        assert service is not None
        lines.append(
            TicketLine(
                ticket_id=f"r1-{code}",
                number=number,
                service=code,
                service_name=service.name.model_dump(),
                status=TicketStatus.WAITING,
                position=3 + n,
                eta_local="09.40",
            )
        )
    return StatusView(
        request_id="r1",
        site=site,
        site_name=spec.name.model_dump(),
        session_id="s1",
        arrived=True,
        checkin_code=None,
        cancelled=False,
        nik_masked="************0003",
        priority=priority,
        live=True,
        tickets=lines,
        pending_services=[],
        free=all(spec.service(c).free for c, _ in services),  # type: ignore[union-attr]
        cost={lang: cost_text(spec, [c for c, _ in services], lang) for lang in ("id", "en")},
    )


def printed(site: str, services: list[tuple[str, str]], priority: str | None, lang: str,
            paper: Paper) -> tuple[Printout, str]:  # fmt: skip
    spec = CATALOGUE.site(site)
    assert spec is not None
    slip = slip_for(
        view(site, services, priority), spec, lang, URL, datetime(2026, 12, 6, 2, 5, tzinfo=UTC)
    )
    out = read(escpos_bytes(slip, paper))
    return out, out.text


def decoded(out: Printout, paper: Paper) -> list[str]:
    dots = 384 if paper is Paper.MM58 else 576
    return [r.text for r in zxingcpp.read_barcodes(out.paper(dots))]


@pytest.mark.parametrize("paper", list(Paper))
@pytest.mark.parametrize("lang", ["id", "en"])
@pytest.mark.parametrize("reason", [*PriorityReason, None])
def test_a_free_ticket_prints_everything_but_the_priority_reason(
    paper: Paper, lang: str, reason: PriorityReason | None
) -> None:
    out, text = printed("cikarang-utara", [("KTP-CETAK", "B-005")], reason, lang, paper)
    assert out.initialised
    number = next(line for line in out.lines if line.text == "B-005")
    assert number.style.width == 2 and number.style.height == 2 and number.style.bold
    assert ("Pencetakan KTP-el" if lang == "id" else "e-KTP printing") in text
    assert ("Layanan ini GRATIS." if lang == "id" else "This service is FREE.") in text
    assert (
        "09.40 WIB" in text and ("Di depan Anda: 3" if lang == "id" else "Ahead of you: 3") in text
    )
    assert "06-12-2026 09.05 WIB" in text  # printed in the site's time zone
    mark = [line for line in out.lines if line.text.strip() in ("PRIORITAS", "PRIORITY")]
    if reason is None:
        assert not mark
    else:
        assert len(mark) == 1 and mark[0].style.invert and mark[0].style.bold
    lowered = text.lower()
    assert not [w for w in REASON_WORDS if w in lowered], text
    # Every line fits the roll; the QR image fits the printable width and decodes to the link.
    assert all(len(line.text) * line.style.width <= paper.columns for line in out.lines), text
    dots = 384 if paper is Paper.MM58 else 576
    assert all(p.image.width <= dots for p in out.pictures)
    assert decoded(out, paper) == [URL]
    assert out.cut == (paper is Paper.MM80)  # the common 58 mm printers have no cutter: fed only
    assert out.fed_lines >= 3


@pytest.mark.parametrize("paper", list(Paper))
def test_a_paid_service_prints_its_fee_and_never_gratis(paper: Paper) -> None:
    out, text = printed(
        "botram-tarumajaya", [("SKCK", "K-012"), ("KTP-CETAK", "A-040")], "elderly", "id", paper
    )
    spec = CATALOGUE.site("botram-tarumajaya")
    assert spec is not None
    fee = spec.service("SKCK").cost("id")  # type: ignore[union-attr]
    assert fee.startswith("Biaya: Rp 30.000")
    assert plain(fee) in text.replace("\n", " ")
    # GRATIS only once: for the free service, not for the paid one.
    assert text.count("GRATIS") == 1
    assert "K-012" in text and "A-040" in text
    assert decoded(out, paper) == [URL]


@settings(max_examples=40, deadline=None)
@given(
    st.text(
        st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=120
    ),
    st.sampled_from(list(Paper)),
)
def test_any_site_name_prints_within_the_roll(name: str, paper: Paper) -> None:
    spec = CATALOGUE.site("cikarang-utara")
    assert spec is not None
    slip = slip_for(view("cikarang-utara", [("KTP-CETAK", "B-005")], None), spec, "id", URL,
                    datetime(2026, 12, 6, 2, 5, tzinfo=UTC))  # fmt: skip
    slip = slip.model_copy(update={"site_name": name})
    out = read(escpos_bytes(slip, paper))  # ASCII only: every code page has it
    assert all(len(line.text) <= paper.columns for line in out.lines)
    assert decoded(out, paper) == [URL]


@pytest.mark.parametrize(
    ("url", "only_here"),
    [
        ("http://127.0.0.1:8101", True),
        ("http://127.8.0.1:8101/", True),
        ("http://localhost:8101", True),
        ("http://[::1]:8101", True),
        ("http://0.0.0.0:8101", True),
        ("https://antrean.kecamatan.test", False),
        ("http://giliran.lan:8101", False),
        ("http://[fd00::5]:8101", False),
    ],
)
def test_links_only_the_box_can_open(url: str, only_here: bool) -> None:
    assert is_loopback_url(url) is only_here


def test_a_slip_shows_a_ticket_the_queue_answered_before_intake_recorded_it() -> None:
    """ADR 0228: a kiosk's slip may be built before intake's ticket consumer wrote the ticket;
    the queue's answer for the request carries it. Another request's or another service's
    ticket in that answer, or a second one for a service already recorded, is not shown."""
    doc = {"_id": "r1", "services": ["KIA", "KTP-CETAK"], "tickets": {}}

    def view(ticket_id: str, request_id: str, service: str, number: str) -> TicketView:
        return TicketView(
            ticket_id=ticket_id,
            request_id=request_id,
            number=number,
            service=service,
            status=TicketStatus.WAITING,
        )

    answered = {
        "t1": view("t1", "r1", "KIA", "C-001"),
        "t2": view("t2", "r2", "KTP-CETAK", "B-009"),  # another request's
        "t3": view("t3", "r1", "AKTA", "A-001"),  # a service it did not ask for
    }
    assert [t.number for t in issued_unrecorded(doc, answered)] == ["C-001"]
    recorded = {**doc, "tickets": {"t0": {"ticket_id": "t0", "service": "KIA"}}}
    assert issued_unrecorded(recorded, answered) == []
    assert issued_unrecorded(doc, None) == []
