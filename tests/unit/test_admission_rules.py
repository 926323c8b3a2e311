"""Admission rules with no I/O: the registration window, the lapse time, quota sizing from
counter-minutes, fee sentences, and the anti-bot address key and proof of work."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from giliran.catalogue import AdmissionRule, load_catalogue
from services.intake import antibot
from services.intake.sessions import SessionWindow, lapse_at, of_site, registration_window

CATALOGUE = load_catalogue(Path(__file__).resolve().parents[2] / "deploy" / "sites")
MSC = CATALOGUE.site("cikarang-utara")
FAIR = CATALOGUE.site("botram-setu")
SUNDAY = SessionWindow(
    "cikarang-utara-20261129",
    "cikarang-utara",
    date(2026, 11, 29),
    datetime(2026, 11, 29, 2, 0, tzinfo=UTC),
    datetime(2026, 11, 29, 4, 0, tzinfo=UTC),
)
KEY = b"test-key"


def test_msc_registration_opens_saturday_1800_and_closes_1030_wib() -> None:
    assert MSC is not None
    opens, closes = registration_window(SUNDAY, MSC.admission, MSC.timezone)
    assert opens == datetime(2026, 11, 28, 11, 0, tzinfo=UTC)  # Saturday 18:00 WIB
    assert closes == datetime(2026, 11, 29, 3, 30, tzinfo=UTC)  # Sunday 10:30 WIB


def test_a_demo_session_has_no_window() -> None:
    demo = SessionWindow(
        "x-demo", "cikarang-utara", SUNDAY.local_date, SUNDAY.opens_at, SUNDAY.closes_at, "adhoc"
    )
    rule = AdmissionRule(opens_days_before=3, closes_minutes_before_end=60)
    assert registration_window(demo, rule, "Asia/Jakarta") == (demo.opens_at, demo.closes_at)


def test_a_registration_lapses_grace_after_the_latest_of_opening_registering_and_slot() -> None:
    before = SUNDAY.opens_at - timedelta(hours=15)
    during = SUNDAY.opens_at + timedelta(minutes=40)
    slot = SUNDAY.opens_at + timedelta(minutes=60)
    assert lapse_at(SUNDAY, 30, before) == SUNDAY.opens_at + timedelta(minutes=30)
    assert lapse_at(SUNDAY, 30, during) == during + timedelta(minutes=30)
    assert lapse_at(SUNDAY, 30, before, slot) == slot + timedelta(minutes=30)


def test_msc_quotas_are_counter_minutes_over_service_minutes() -> None:
    assert MSC is not None and MSC.capacity_minutes == 4 * 120
    sized = {s.code: MSC.quota_of(s) for s in MSC.services}
    assert sized["KTP-CETAK"] == 480 // 5 == 96
    assert sized["AKTA-LAHIR"] == 480 // 20 == 24
    assert all(s.minutes for s in MSC.services)
    # Every adminduk document needs a NIK; a consultation does not.
    assert [s.code for s in MSC.services if not s.requires_nik] == ["KONSULTASI"]


def test_every_msc_service_says_gratis_and_paid_fair_services_state_their_fee() -> None:
    assert MSC is not None and FAIR is not None
    assert {s.cost() for s in MSC.services} == {"Layanan ini GRATIS."}
    fees = {s.code: s.cost() for s in FAIR.services if not s.free}
    assert fees["SKCK"] == "Biaya: Rp 30.000, dibayar di loket pembayaran Polres di lokasi."
    assert fees["SIM-A-PERPANJANG"].startswith("Biaya: Rp 80.000, dibayar di loket bank")
    assert fees["SIM-C-PERPANJANG"].startswith("Biaya: Rp 75.000, dibayar di loket bank")
    assert all("GRATIS" not in text for text in fees.values())
    skck = FAIR.service("SKCK")
    assert skck is not None and skck.cost("en").startswith("Fee: Rp 30.000, paid at")


def test_an_ipv6_line_is_one_address_and_ipv4_stays_itself() -> None:
    assert antibot.address_key("2001:db8:1:2::7") == antibot.address_key("2001:db8:1:2:ffff::1")
    assert antibot.address_key("2001:db8:1:2::7") != antibot.address_key("2001:db8:1:3::7")
    assert antibot.address_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert antibot.address_key("203.0.113.7") == "203.0.113.7"


@given(st.binary(min_size=32, max_size=32))
def test_leading_zero_bits_counts_what_the_digest_starts_with(digest: bytes) -> None:
    bits = antibot.leading_zero_bits(digest)
    as_int = int.from_bytes(digest, "big")
    assert bits == (256 - as_int.bit_length())


def test_a_proof_is_checked_for_site_difficulty_expiry_and_answer() -> None:
    now = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
    challenge = antibot.new_challenge(KEY, "cikarang-utara", 12, now)
    answer = antibot.solve(challenge)
    digest = hashlib.sha256(f"{challenge}:{answer}".encode()).digest()
    assert antibot.leading_zero_bits(digest) >= 12
    assert antibot.check_proof(KEY, "cikarang-utara", 12, challenge, answer, now).ok
    # Another site, a harder rule, another key, later than its expiry, a wrong answer.
    assert not antibot.check_proof(KEY, "botram-setu", 12, challenge, answer, now).ok
    assert not antibot.check_proof(KEY, "cikarang-utara", 16, challenge, answer, now).ok
    assert not antibot.check_proof(b"other", "cikarang-utara", 12, challenge, answer, now).ok
    later = now + antibot.CHALLENGE_TTL + timedelta(seconds=1)
    assert not antibot.check_proof(KEY, "cikarang-utara", 12, challenge, answer, later).ok
    wrong = next(
        str(n)
        for n in range(1000)
        if antibot.leading_zero_bits(hashlib.sha256(f"{challenge}:{n}".encode()).digest()) < 12
    )
    assert not antibot.check_proof(KEY, "cikarang-utara", 12, challenge, wrong, now).ok
    # An easier difficulty written into a signed challenge breaks its signature.
    easier = challenge.replace(".12.", ".8.", 1)
    assert not antibot.check_proof(KEY, "cikarang-utara", 8, easier, answer, now).ok


def test_admission_defaults_are_the_recommended_ones() -> None:
    rule = AdmissionRule()
    assert (rule.opens_days_before, rule.opens_at, rule.closes_minutes_before_end) == (
        1,
        time(18, 0),
        30,
    )
    assert rule.checkin_required and rule.checkin_grace_minutes == 30


def test_a_sites_demo_session_is_its_own_and_another_sites_is_not() -> None:
    assert of_site("cikarang-utara", "cikarang-utara-demo-20261207")  # the admin page's quotas
    assert of_site("cikarang-utara", "cikarang-utara-20261129")
    assert not of_site("botram", "botram-setu-20261205")
    assert not of_site("botram", "botram-setu-demo-20261205")
