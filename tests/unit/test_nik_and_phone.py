"""NIK rules (reject the impossible, warn about the odd), the one NIK mask, phone numbers."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.intake.domain import InvalidNik, InvalidPhone, check_nik, mask_nik, nik_hash
from services.intake.domain import normalize_phone as phone

TODAY = date(2026, 11, 29)


def test_a_woman_born_1990_in_cikarang_utara() -> None:
    nik = check_nik("3216094512900001", TODAY)
    assert nik.birth_date == date(1990, 12, 5)
    assert nik.female
    assert nik.warnings == ()
    assert nik.age_on(TODAY) == 35


def test_a_man_and_the_century_guess() -> None:
    young = check_nik("3216090101100002", TODAY)
    assert (young.birth_date, young.female) == (date(2010, 1, 1), False)
    old = check_nik("3216090101500002", TODAY)
    assert old.birth_date == date(1950, 1, 1)  # 2050 is in the future
    assert old.age_on(TODAY) >= 60  # lansia: derivable without asking


def test_spaces_and_dots_are_ignored() -> None:
    assert check_nik("3216 0945 1290 0001", TODAY).nik == "3216094512900001"
    assert check_nik("32.16.09.451290.0001", TODAY).nik == "3216094512900001"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("321609451290001", "16 digit"),
        ("32160945129000012", "16 digit"),
        ("32160945129000a1", "angka"),
        ("".join(chr(ord(c) + 0xFEE0) for c in "3216094512900001"), "angka"),  # full-width
        ("0016094512900001", "wilayah"),
        ("3200094512900001", "wilayah"),
        ("3216001212900001", "wilayah"),
        ("3216093212900001", "tanggal"),  # day 32
        ("3216097212900001", "tanggal"),  # day 72 (woman, 32)
        ("3216090113900001", "tanggal"),  # month 13
        ("3216093002900001", "tanggal"),  # 30 February
        ("3216092902010001", "tanggal"),  # 29 Feb 2001 / 1901: never a leap year
        ("3216094512900000", "0000"),
    ],
)
def test_the_impossible_is_rejected_with_a_reason(raw: str, why: str) -> None:
    with pytest.raises(InvalidNik) as caught:
        check_nik(raw, TODAY)
    assert why in caught.value.message_id
    assert caught.value.message_en.startswith("Field 'nik': invalid NIK")


def test_the_odd_but_real_is_a_warning() -> None:
    # Bekasi has 23 kecamatan; a higher code may be an old one split since.
    assert check_nik("3216990101900001", TODAY).warnings == ("unknown_region",)
    assert check_nik("3270090101900001", TODAY).warnings == ("unknown_region",)
    assert check_nik("3275090101900001", TODAY).warnings == ()  # kota code 75


def test_leap_day_births_are_accepted() -> None:
    assert check_nik("3216092902000001", TODAY).birth_date == date(2000, 2, 29)


@given(st.from_regex(r"[0-9]{16}", fullmatch=True))
def test_the_mask_shows_four_digits_at_most(nik: str) -> None:
    masked = mask_nik(nik)
    assert len(masked) == 16
    assert sum(c.isdigit() for c in masked) == 4
    assert masked.endswith(nik[-4:])


def test_the_hash_is_keyed() -> None:
    nik = "3216094512900001"
    assert nik_hash(nik, b"k1") == nik_hash(nik, b"k1")
    assert nik_hash(nik, b"k1") != nik_hash(nik, b"k2")
    assert nik not in nik_hash(nik, b"k1")


@pytest.mark.parametrize(
    "raw", ["081234567890", "0812-3456-7890", "+62 812 3456 7890", "6281234567890"]
)
def test_indonesian_mobiles_are_stored_in_e164(raw: str) -> None:
    assert phone(raw) == "+6281234567890"


@pytest.mark.parametrize("raw", ["", "12345", "021 8910 1112", "+1 202 555 0100", "phone"])
def test_other_numbers_are_refused(raw: str) -> None:
    with pytest.raises(InvalidPhone):
        phone(raw)
