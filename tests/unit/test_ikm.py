"""IKM per PermenPANRB 14/2017: the formula, the band edges, sample sizes, mergeable tallies."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.reporting.ikm import (
    ELEMENTS,
    SurveyTally,
    grade,
    ikm,
    krejcie_morgan,
    published,
    tally,
)

answers = st.fixed_dictionaries({e: st.integers(1, 4) for e in ELEMENTS})


def test_worked_example_from_the_formula() -> None:
    """Four respondents; NRR per element is the mean; IKM = 25 x mean of the nine NRRs."""
    rows = [
        {"U1": 4, "U2": 3, "U3": 3, "U4": 4, "U5": 3, "U6": 4, "U7": 4, "U8": 3, "U9": 3},
        {"U1": 3, "U2": 3, "U3": 2, "U4": 4, "U5": 3, "U6": 3, "U7": 4, "U8": 3, "U9": 3},
        {"U1": 4, "U2": 4, "U3": 3, "U4": 4, "U5": 4, "U6": 4, "U7": 4, "U8": 3, "U9": 2},
        {"U1": 3, "U2": 3, "U3": 3, "U4": 4, "U5": 3, "U6": 3, "U7": 3, "U8": 2, "U9": 3},
    ]
    nrr = tally(rows).nrr()
    assert nrr["U1"] == Fraction(14, 4) and nrr["U3"] == Fraction(11, 4)
    # sum of NRR = (14+13+11+16+13+14+15+11+11)/4 = 118/4 = 29.5; IKM = 25 x 29.5 / 9
    assert ikm(nrr) == Fraction(25 * 118, 36)
    assert published(ikm(nrr)) == Decimal("81.94")
    assert grade(published(ikm(nrr))).letter == "B"


@pytest.mark.parametrize(
    ("value", "letter"),
    [("100.00", "A"), ("88.31", "A"), ("88.30", "B"), ("76.61", "B"), ("76.60", "C"),
     ("65.00", "C"), ("64.99", "D"), ("25.00", "D")],
)  # fmt: skip
def test_band_edges(value: str, letter: str) -> None:
    assert grade(Decimal(value)).letter == letter


def test_rounding_is_half_up_at_two_decimals() -> None:
    assert published(Fraction(88305, 1000)) == Decimal("88.31")  # A, not B
    assert published(Fraction(88304999, 1000000)) == Decimal("88.30")


def test_all_fours_and_all_ones_are_the_extremes() -> None:
    assert ikm(tally([dict.fromkeys(ELEMENTS, 4)]).nrr()) == 100
    assert ikm(tally([dict.fromkeys(ELEMENTS, 1)]).nrr()) == 25


@pytest.mark.parametrize(
    ("population", "sample"),
    [(10, 10), (50, 44), (100, 80), (500, 217), (1000, 278), (10000, 370), (1000000, 384)],
)
def test_krejcie_morgan_table(population: int, sample: int) -> None:
    assert krejcie_morgan(population) == sample


def test_answers_outside_the_scale_are_refused() -> None:
    with pytest.raises(ValueError, match="1-4"):
        SurveyTally().add({**dict.fromkeys(ELEMENTS, 4), "U9": 5})
    with pytest.raises(ValueError, match=r"U1\.\.U9"):
        SurveyTally().add({"U1": 4})


@given(st.lists(answers, min_size=1, max_size=40), st.lists(answers, min_size=1, max_size=40))
def test_tallies_merge_like_one_survey(a: list[dict[str, int]], b: list[dict[str, int]]) -> None:
    assert tally(a).merge(tally(b)) == tally(a + b)
    value = ikm(tally(a + b).nrr())
    assert 25 <= value <= 100
