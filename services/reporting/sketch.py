"""A mergeable, log-bucketed histogram (the DDSketch mapping): quantiles within 1 % of the exact
ones, merged by adding bucket counts, stored as a document a MongoDB `$inc` can update."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Relative accuracy of every quantile (docs/decisions/0030-wait-time-sketches.md): a bucket k
# holds (GAMMA**(k-1), GAMMA**k] and answers with the value at most ALPHA away from all of them.
ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
_LOG_GAMMA = math.log(GAMMA)
# Durations below one second are answered as 0 (an absolute error under 1 s): a wait of 0.3 s
# and one of 0.03 s are the same to a citizen, and it keeps keys non-negative.
MIN_VALUE = 1.0
ZERO = "z"


def bucket(value: float) -> str:
    """The bucket a sample falls in, as a field name ("k<key>" or "z"): never a bare number,
    which a store may read as an array index."""
    if value < MIN_VALUE:
        return ZERO
    return f"k{math.ceil(math.log(value) / _LOG_GAMMA - 1e-9)}"


def bucket_value(name: str) -> float:
    """The value a bucket answers with: within ALPHA of every value the bucket holds."""
    if name == ZERO:
        return 0.0
    key = int(name[1:])
    return 2 * GAMMA**key / (GAMMA + 1)


def milliseconds(seconds: float) -> int:
    """Sums are kept in whole milliseconds: integer addition gives the same total in any order
    (float sums differ in the last bits between a live run and a replay)."""
    return round(seconds * 1000)


@dataclass
class Sketch:
    """Count, exact sum (ms), exact min/max and bucket counts of a set of durations in seconds."""

    n: int = 0
    sum_ms: int = 0
    min: float | None = None
    max: float | None = None
    buckets: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, values: Iterable[float]) -> Sketch:
        sketch = cls()
        for v in values:
            sketch.add(v)
        return sketch

    def add(self, value: float) -> None:
        value = max(value, 0.0)  # a clock a little behind another never makes a negative wait
        self.n += 1
        self.sum_ms += milliseconds(value)
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)
        name = bucket(value)
        self.buckets[name] = self.buckets.get(name, 0) + 1

    def merge(self, other: Sketch) -> None:
        """Adds another sketch in place: the result is the sketch of both sets of samples."""
        self.n += other.n
        self.sum_ms += other.sum_ms
        if other.min is not None:
            self.min = other.min if self.min is None else min(self.min, other.min)
        if other.max is not None:
            self.max = other.max if self.max is None else max(self.max, other.max)
        for name, count in other.buckets.items():
            self.buckets[name] = self.buckets.get(name, 0) + count

    @property
    def mean(self) -> float | None:
        return self.sum_ms / self.n / 1000 if self.n else None

    def quantile(self, q: float) -> float | None:
        """Nearest-rank q-th percentile (q in 0..100), within ALPHA of the exact one (or under
        1 s for sub-second values); the exact min and max bound the answer."""
        if self.n == 0:
            return None
        rank = max(1, math.ceil(q / 100 * self.n))
        seen = 0
        for name in sorted(self.buckets, key=_order):
            seen += self.buckets[name]
            if seen >= rank:
                assert self.min is not None and self.max is not None
                return min(max(bucket_value(name), self.min), self.max)
        raise AssertionError("bucket counts do not add up to n")  # pragma: no cover

    def count_at_most(self, limit: float) -> int:
        """Samples not above `limit`, exact except for the one bucket that straddles it (samples
        within 2 % of the limit), which counts as within when its answer is."""
        if self.max is not None and self.max <= limit:
            return self.n
        if self.min is not None and self.min > limit:
            return 0
        return sum(c for name, c in self.buckets.items() if bucket_value(name) <= limit)

    def to_document(self) -> dict[str, Any]:
        return {"n": self.n, "sum_ms": self.sum_ms, "min": self.min, "max": self.max,
                "b": dict(self.buckets)}  # fmt: skip

    @classmethod
    def from_document(cls, doc: Mapping[str, Any] | None) -> Sketch:
        if not doc:
            return cls()
        return cls(
            n=int(doc.get("n", 0)),
            sum_ms=int(doc.get("sum_ms", 0)),
            min=_float(doc.get("min")),
            max=_float(doc.get("max")),
            buckets={str(k): int(v) for k, v in (doc.get("b") or {}).items()},
        )


def increments(prefix: str, value: float) -> tuple[dict[str, int], float]:
    """What adding one sample does to a stored sketch under `prefix`: the `$inc` fields, and the
    (clamped) value for `$min`/`$max`."""
    value = max(value, 0.0)
    return {f"{prefix}.n": 1, f"{prefix}.sum_ms": milliseconds(value),
            f"{prefix}.b.{bucket(value)}": 1}, value  # fmt: skip


def _order(name: str) -> int:
    return -1 if name == ZERO else int(name[1:])


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
