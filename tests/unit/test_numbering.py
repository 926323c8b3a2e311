"""Ticket numbers: one format, per session and line, and deterministic ticket ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.queue.domain import format_number, line_key, ticket_id_for


def test_numbers_are_prefix_dash_three_digits() -> None:
    assert format_number("A", 1) == "A-001"
    assert format_number("K", 42) == "K-042"
    assert format_number("B", 999) == "B-999"
    assert format_number("B", 1000) == "B-1000"  # a big day grows, never wraps


def test_sequence_starts_at_one() -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        format_number("A", 0)


@given(st.sampled_from("ABCDEFGHJKLMNP"), st.integers(1, 10**6), st.integers(1, 10**6))
def test_order_of_numbers_follows_order_of_sequence(prefix: str, a: int, b: int) -> None:
    """A board sorting numbers by their digits shows them in issue order."""
    first, second = format_number(prefix, a), format_number(prefix, b)
    assert first.startswith(f"{prefix}-")
    assert (int(first.split("-")[1]) < int(second.split("-")[1])) == (a < b)
    assert (first == second) == (a == b)


def test_lines_are_numbered_per_session() -> None:
    assert line_key("cikarang-utara-20261129", "A") != line_key("cikarang-utara-20261206", "A")
    assert line_key("s", "A") != line_key("s", "B")


def test_ticket_ids_are_deterministic_per_request_and_service() -> None:
    assert ticket_id_for("r1", "KIA") == ticket_id_for("r1", "KIA")
    assert ticket_id_for("r1", "KIA") != ticket_id_for("r1", "KTP-CETAK")
    assert ticket_id_for("r1", "KIA") != ticket_id_for("r2", "KIA")
