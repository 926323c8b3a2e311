"""Bahasa Indonesia number words and the call sentence: checked against an independent reader of
number words (written here, not shared with the code), exhaustively for the small numbers a board
says and property-based up to the largest number the function covers."""

from __future__ import annotations

import itertools
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.queue.announce import (
    LARGEST,
    call_sentence,
    spoken_counter,
    spoken_ticket_number,
    terbilang,
)
from services.queue.domain import format_number

UNITS = {
    w: i
    for i, w in enumerate(
        ["nol", "satu", "dua", "tiga", "empat", "lima", "enam", "tujuh", "delapan", "sembilan"]
    )
}
SCALES = {"ribu": 10**3, "juta": 10**6, "miliar": 10**9, "triliun": 10**12}


def read_number(words: str) -> int:
    """Number words back to a number, the way a listener adds them up."""
    total = group = pending = 0
    for word in words.split():
        if word in UNITS:
            assert pending == 0, f"two digits in a row in {words!r}"
            pending = UNITS[word]
        elif word == "sepuluh":
            group += 10
        elif word == "sebelas":
            group += 11
        elif word == "seratus":
            group += 100
        elif word == "seribu":
            assert group == pending == 0
            total += 1000
        elif word == "ratus":
            group, pending = group + pending * 100, 0
        elif word == "puluh":
            group, pending = group + pending * 10, 0
        elif word == "belas":
            group, pending = group + pending + 10, 0
        elif word in SCALES:
            assert 0 < group + pending < 1000, f"{word} without a count in {words!r}"
            total, group, pending = total + (group + pending) * SCALES[word], 0, 0
        else:
            raise AssertionError(f"not a number word: {word!r} in {words!r}")
    return total + group + pending


def well_formed(n: int, words: str) -> None:
    """What a teacher would mark wrong even when the sum is right."""
    tokens = words.split()
    if n:
        assert "nol" not in tokens
    for bad in ("satu ratus", "satu puluh", "satu belas", "nol puluh", "nol belas"):
        assert bad not in words, (n, words)
    assert not words.startswith("satu ribu"), (n, words)  # seribu
    scales = [t for t in tokens if t in SCALES or t == "seribu"]
    order = [SCALES.get(t, 1000) for t in scales]
    assert order == sorted(order, reverse=True) and len(set(order)) == len(order), words
    assert "  " not in words and words == words.strip()


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "nol"),
        (1, "satu"),
        (10, "sepuluh"),
        (11, "sebelas"),
        (12, "dua belas"),
        (19, "sembilan belas"),
        (20, "dua puluh"),
        (21, "dua puluh satu"),
        (100, "seratus"),
        (101, "seratus satu"),
        (110, "seratus sepuluh"),
        (111, "seratus sebelas"),
        (999, "sembilan ratus sembilan puluh sembilan"),
        (1000, "seribu"),
        (1001, "seribu satu"),
        (2019, "dua ribu sembilan belas"),
        (11_000, "sebelas ribu"),
        (100_000, "seratus ribu"),
        (101_000, "seratus satu ribu"),
        (1_000_000, "satu juta"),
        (1_001_000, "satu juta seribu"),
        (2_500_000, "dua juta lima ratus ribu"),
        (1_000_000_000, "satu miliar"),
        (10**12, "satu triliun"),
    ],
)
def test_known_numbers(n: int, words: str) -> None:
    assert terbilang(n) == words


def test_every_number_below_two_hundred_thousand_reads_back() -> None:
    for n in range(200_000):
        words = terbilang(n)
        assert read_number(words) == n, (n, words)
        well_formed(n, words)


@given(st.integers(min_value=0, max_value=LARGEST))
def test_any_number_reads_back(n: int) -> None:
    words = terbilang(n)
    assert read_number(words) == n
    well_formed(n, words)


@given(st.integers(max_value=-1) | st.integers(min_value=LARGEST + 1))
def test_outside_the_range_is_refused(n: int) -> None:
    with pytest.raises(ValueError):
        terbilang(n)


def test_distinct_numbers_have_distinct_words() -> None:
    said = {terbilang(n) for n in range(20_000)}
    assert len(said) == 20_000


@given(
    st.sampled_from(string.ascii_uppercase),
    st.integers(min_value=1, max_value=99_999),
)
def test_a_ticket_number_is_said_as_printed(prefix: str, seq: int) -> None:
    number = format_number(prefix, seq)
    words = spoken_ticket_number(number).split()
    printed = number.replace("-", "")
    assert len(words) == len(printed)
    for char, word in zip(printed, words, strict=True):
        assert (UNITS[word] == int(char)) if char.isdigit() else word == char


def test_counters_are_said_with_number_words() -> None:
    assert spoken_counter("Loket 2") == "loket dua"
    assert spoken_counter("Booth Dukcapil 12") == "booth dukcapil dua belas"
    assert spoken_counter("Booth BPJS") == "booth bpjs"
    assert spoken_counter("Loket 1234567890123456") == "loket " + " ".join(
        itertools.chain.from_iterable(
            [k for k, v in UNITS.items() if v == int(d)] for d in "1234567890123456"
        )
    )


def test_the_call_sentence() -> None:
    assert call_sentence("A-005", "Loket 2") == "Nomor antrean A nol nol lima, silakan ke loket dua"
    assert call_sentence("K-120", "Booth Polres") == (
        "Nomor antrean K satu dua nol, silakan ke booth polres"
    )
