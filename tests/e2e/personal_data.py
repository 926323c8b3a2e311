"""Finds NIK-like and phone-like strings in log files: personal data must never be logged."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# A NIK is 16 digits; an Indonesian mobile number starts 08, 628 or +628 and may be written with
# spaces or dashes. Neither may touch other digits (ports, sequence numbers, timestamps).
NIK_LIKE = re.compile(r"(?<!\d)\d{16}(?!\d)")
PHONE_LIKE = re.compile(r"(?<![\d+])(?:\+62|62|0)8\d{1,3}[-\s]?\d{3,4}[-\s]?\d{3,5}(?!\d)")


def personal_data_in(paths: Iterable[Path]) -> list[str]:
    """`file:line: match` for every hit; empty when the logs are clean."""
    hits: list[str] = []
    for path in paths:
        if not path.exists():
            continue
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                for pattern in (NIK_LIKE, PHONE_LIKE):
                    for match in pattern.finditer(line):
                        hits.append(f"{path.name}:{number}: {match.group(0)}")
    return hits
