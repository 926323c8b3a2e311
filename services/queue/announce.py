"""What the waiting-room board says for a call, in Bahasa Indonesia: number words (terbilang) and
the sentence "Nomor antrean A nol nol lima, silakan ke loket dua". Pure functions, no I/O."""

from __future__ import annotations

import re

DIGITS = ("nol", "satu", "dua", "tiga", "empat", "lima", "enam", "tujuh", "delapan", "sembilan")
# Each scale word covers three more digits; one of it is said with the prefix se- only for ribu
# (seribu, but satu juta, satu miliar, satu triliun).
SCALES = ((10**12, "triliun"), (10**9, "miliar"), (10**6, "juta"), (10**3, "ribu"))
LARGEST = 10**15 - 1


def _below_thousand(n: int) -> list[str]:
    """1..999 as words."""
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds == 1:
        words.append("seratus")
    elif hundreds:
        words += [DIGITS[hundreds], "ratus"]
    if rest == 0:
        return words
    if rest < 10:
        words.append(DIGITS[rest])
    elif rest == 10:
        words.append("sepuluh")
    elif rest == 11:
        words.append("sebelas")
    elif rest < 20:
        words += [DIGITS[rest - 10], "belas"]
    else:
        tens, ones = divmod(rest, 10)
        words += [DIGITS[tens], "puluh"]
        if ones:
            words.append(DIGITS[ones])
    return words


def terbilang(n: int) -> str:
    """A whole number 0..10^15-1 in words, as Indonesians say it: 11 "sebelas", 1000 "seribu",
    2019 "dua ribu sembilan belas", 1_000_000 "satu juta"."""
    if not 0 <= n <= LARGEST:
        raise ValueError(f"terbilang covers 0..{LARGEST}, not {n}")
    if n == 0:
        return DIGITS[0]
    words: list[str] = []
    for size, name in SCALES:
        group, n = divmod(n, size)
        if group == 1 and name == "ribu":
            words.append("seribu")
        elif group:
            words += [*_below_thousand(group), name]
    if n:
        words += _below_thousand(n)
    return " ".join(words)


def spoken_ticket_number(number: str) -> str:
    """A ticket number as printed, said character by character so a citizen matches it to the
    slip in hand: "A-005" -> "A nol nol lima" (not "A lima"). Letters stay letters: the voice
    says their names ("be", "ka")."""
    return " ".join(
        DIGITS[int(c)] if c.isdigit() else c.upper() for c in number if c.isascii() and c.isalnum()
    )


def spoken_counter(name: str) -> str:
    """A counter's name with its numbers in words: "Loket 2" -> "loket dua", "Booth Dukcapil 12"
    -> "booth dukcapil dua belas". Runs of more than 15 digits are said digit by digit."""

    def words(match: re.Match[str]) -> str:
        digits = match.group()
        if len(digits) > 15:
            return " ".join(DIGITS[int(d)] for d in digits)
        return terbilang(int(digits))

    return re.sub(r"[0-9]+", words, name.lower()).strip()


def call_sentence(number: str, counter_name: str) -> str:
    """The one sentence a call is announced with, on every board and in every voice."""
    said_number, said_counter = spoken_ticket_number(number), spoken_counter(counter_name)
    return f"Nomor antrean {said_number}, silakan ke {said_counter}"
