"""Pure rules of notify (message text, SMS segments) and reporting (local day, percentiles)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from giliran.catalogue import load_catalogue
from giliran.contracts import TicketCalled, TicketIssued
from giliran.settings import Settings
from services.notify.domain import (
    APPROACHING,
    CANCELLED_TEMPLATE,
    STATUS_LINK,
    TEMPLATE_OF,
    TEMPLATES,
    Renderer,
    delivery_id,
    sms_segments,
)
from services.reporting.domain import distribution, local_day, percentile

NOW = datetime(2026, 11, 29, 2, 5, tzinfo=UTC)


def _issued_data() -> dict[str, object]:
    return {**TicketIssued(
        ticket_id="r1-KIA", request_id="r1", session_id="s", service="KIA",
        number="K-007", issued_at=NOW, waiting_ahead=3,
    ).model_dump(), "ahead": 3}  # fmt: skip


CATALOGUE = load_catalogue(Settings().catalogue_dir)
FREE_SITE = "cikarang-utara"  # MSC: adminduk, free by law (UU 24/2013 Pasal 79A)
PAID_SITE = next(slug for slug, site in CATALOGUE.sites.items() if site.service("SKCK"))


def test_issued_message_in_both_languages_says_free_for_a_free_service() -> None:
    renderer = Renderer(catalogue=CATALOGUE)
    indonesian = renderer.render(
        "ticket_issued", "id", _issued_data(), site=FREE_SITE,
        status_url="http://x/api/v1/requests/r1", at=NOW,
    )  # fmt: skip
    english = renderer.render(
        "ticket_issued", "en", _issued_data(), site=FREE_SITE, status_url=None, at=NOW
    )
    assert "K-007" in indonesian.text and "Layanan ini GRATIS." in indonesian.text
    assert "3 orang di depan Anda" in indonesian.text
    assert "This service is FREE." in english.text and "Status" not in english.text
    assert indonesian.segments == 1
    assert (indonesian.subject, english.subject) == ("Nomor antrean Anda", "Your queue number")


def test_a_service_the_catalogue_does_not_know_is_never_called_free() -> None:
    for renderer, site in ((Renderer(), FREE_SITE), (Renderer(catalogue=CATALOGUE), "nowhere")):
        text = renderer.render(
            "ticket_issued", "id", _issued_data(), site=site, status_url=None, at=NOW
        ).text
        assert "GRATIS" not in text and "Biaya" not in text


def test_called_message_gives_counter_and_wib_time() -> None:
    called = TicketCalled(
        ticket_id="r1-KIA", request_id="r1", session_id="s", service="KIA",
        number="K-007", issued_at=NOW, counter="3", called_at=NOW,
    )  # fmt: skip
    # an unknown language falls back to Bahasa Indonesia
    text = Renderer().render("ticket_called", "fr", called.model_dump(), at=NOW).text
    assert text == "Giliran: nomor antrean K-007, silakan menuju loket 3 sekarang (09.05 WIB)."


# Every template on disk, so a template added later is checked too.
TEMPLATES_ON_DISK = sorted({p.name.split(".")[0] for p in TEMPLATES.glob("*.txt.j2")})


def test_every_template_on_disk_is_one_notify_sends() -> None:
    sent = {*TEMPLATE_OF.values(), *CANCELLED_TEMPLATE.values(), APPROACHING, STATUS_LINK}
    assert set(TEMPLATES_ON_DISK) == sent


@pytest.mark.parametrize("paid", [False, True], ids=["free", "paid"])
@pytest.mark.parametrize("language", ["id", "en"])
@pytest.mark.parametrize("template", TEMPLATES_ON_DISK)
def test_every_message_states_the_cost_truthfully_and_fits_two_sms_segments(
    template: str, language: str, paid: bool
) -> None:
    """Every notify template, both languages, for a free and a paid service: GRATIS/FREE only
    for the free one; the fee and where it is paid for the paid one where cost is told."""
    site, service = (PAID_SITE, "SKCK") if paid else (FREE_SITE, "KIA")
    definition = CATALOGUE.sites[site].service(service)
    assert definition is not None and (definition.fee is not None) == paid
    data = {
        **_issued_data(),
        "service": service,
        "counter": "12",
        "reason": "session_cancelled",
        "cancelled_at": NOW,
    }
    long_url = "https://giliran.bekasikab.go.id/s/Qm9vdHN0cmFwLXRva2VuLXRoYXQtaXMtbG9uZw"
    message = Renderer(catalogue=CATALOGUE).render(
        template, language, data, site=site, status_url=long_url, at=NOW
    )
    assert message.segments <= 2, message.text
    assert "{" not in message.text
    says_free = "GRATIS" in message.text or "FREE" in message.text
    if paid:
        assert not says_free, message.text
        assert definition.fee is not None
        if template in ("ticket_issued", "ticket_approaching"):
            paid_at = definition.fee.paid_at.id if language == "id" else definition.fee.paid_at.en
            assert "Rp 30.000" in message.text and paid_at in message.text, message.text
            assert message.variables["cost"] == definition.cost(language)
    else:
        assert says_free == (template == "ticket_issued"), message.text


def test_delivery_ids_are_one_per_event_channel_recipient() -> None:
    assert delivery_id("e1", "sms", "+62812") == delivery_id("e1", "sms", "+62812")
    assert len({delivery_id("e1", "sms", "a"), delivery_id("e1", "wa", "a")}) == 2


@pytest.mark.parametrize(
    ("text", "parts"),
    [("a" * 160, 1), ("a" * 161, 2), ("a" * 306, 2), ("a" * 307, 3), ("€" * 80, 1),
     ("€" * 81, 2), ("é" * 160, 1), ("ł" * 70, 1), ("ł" * 71, 2), ("ł" * 134, 2)],
)  # fmt: skip
def test_sms_segments(text: str, parts: int) -> None:
    assert sms_segments(text) == parts


def test_the_report_day_is_the_site_local_day() -> None:
    assert local_day(datetime(2026, 11, 28, 17, 30, tzinfo=UTC), "Asia/Jakarta") == date(
        2026, 11, 29
    )


def test_distribution_of_waits() -> None:
    d = distribution([30.0, 10.0, 20.0, 40.0])
    assert (d.count, d.mean, d.p50, d.p90, d.max) == (4, 25.0, 20.0, 40.0, 40.0)
    assert distribution([]).p50 is None


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=200), st.floats(0, 100))
def test_percentiles_are_observed_values_in_order(values: list[float], q: float) -> None:
    ordered = sorted(values)
    p = percentile(ordered, q)
    assert p in values
    assert ordered[0] <= p <= ordered[-1]
    assert percentile(ordered, 50) <= percentile(ordered, 95)
