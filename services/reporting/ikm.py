"""The public satisfaction index (IKM) of PermenPANRB 14/2017, computed exactly, and the
Krejcie & Morgan sample size: pure rules, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

ELEMENTS: tuple[str, ...] = ("U1", "U2", "U3", "U4", "U5", "U6", "U7", "U8", "U9")
ELEMENT_NAMES: Mapping[str, tuple[str, str]] = {
    "U1": ("Persyaratan", "Requirements"),
    "U2": ("Sistem, mekanisme, dan prosedur", "Procedure"),
    "U3": ("Waktu penyelesaian", "Service time"),
    "U4": ("Biaya/tarif", "Cost/tariff"),
    "U5": ("Produk spesifikasi jenis pelayanan", "Product specification"),
    "U6": ("Kompetensi pelaksana", "Staff competence"),
    "U7": ("Perilaku pelaksana", "Staff behaviour"),
    "U8": ("Sarana dan prasarana", "Facilities"),
    "U9": ("Penanganan pengaduan, saran dan masukan", "Complaint handling"),
}

# Grades on the IKM as published (two decimals), from the regulation's bands.
GRADES: tuple[tuple[Decimal, str, str, str], ...] = (
    (Decimal("88.31"), "A", "Sangat baik", "Very good"),
    (Decimal("76.61"), "B", "Baik", "Good"),
    (Decimal("65.00"), "C", "Kurang baik", "Poor"),
    (Decimal("25.00"), "D", "Tidak baik", "Bad"),
)


@dataclass
class SurveyTally:
    """Answers counted per element: merging two tallies is adding them, so sessions roll up
    into days and sites into the kabupaten without keeping any single answer."""

    responses: int = 0
    sums: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ELEMENTS, 0))

    def add(self, scores: Mapping[str, int]) -> None:
        if set(scores) != set(ELEMENTS) or not all(1 <= v <= 4 for v in scores.values()):
            raise ValueError("an SKM answer has U1..U9, each 1-4")
        self.responses += 1
        for element, value in scores.items():
            self.sums[element] += value

    def merge(self, other: SurveyTally) -> SurveyTally:
        return SurveyTally(
            responses=self.responses + other.responses,
            sums={e: self.sums[e] + other.sums[e] for e in ELEMENTS},
        )

    def nrr(self) -> dict[str, Fraction]:
        """Nilai rata-rata per element: the mean of its answers (exact)."""
        if self.responses == 0:
            raise ValueError("no responses")
        return {e: Fraction(self.sums[e], self.responses) for e in ELEMENTS}


def ikm(nrr: Mapping[str, Fraction]) -> Fraction:
    """IKM = 25 x (sum of NRR_i x 1/9): weight exactly 1/9, kept exact until it is shown."""
    return 25 * sum((nrr[e] * Fraction(1, 9) for e in ELEMENTS), Fraction(0))


def published(value: Fraction) -> Decimal:
    """Two decimals, half up, as reports print it (and as the grade bands are written)."""
    return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_UP
    )


@dataclass(frozen=True)
class Grade:
    letter: str
    name_id: str
    name_en: str


def grade(index: Decimal) -> Grade:
    if not Decimal("25.00") <= index <= Decimal("100.00"):
        raise ValueError(f"an IKM lies between 25 and 100, not {index}")
    for lower, letter, name_id, name_en in GRADES:
        if index >= lower:
            return Grade(letter, name_id, name_en)
    raise AssertionError("unreachable")  # pragma: no cover


def krejcie_morgan(population: int) -> int:
    """Minimum sample for a population (95 % confidence, 5 % margin, P = 0.5), the table's
    formula: s = X^2 N P(1-P) / (d^2 (N-1) + X^2 P(1-P)), rounded to the nearest whole number
    as the published table is (N = 100 gives 79.51 -> 80, N = 500 gives 217.47 -> 217)."""
    if population <= 0:
        return 0
    chi2, p, d = 3.841, 0.5, 0.05
    s = chi2 * population * p * (1 - p) / (d * d * (population - 1) + chi2 * p * (1 - p))
    return int(Decimal(repr(s)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def tally(answers: Iterable[Mapping[str, int]]) -> SurveyTally:
    result = SurveyTally()
    for scores in answers:
        result.add(scores)
    return result
