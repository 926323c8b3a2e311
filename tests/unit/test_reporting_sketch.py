"""The wait/service-time sketch: percentiles within its stated accuracy of the exact ones, and
merging sketches gives the sketch of the union (what lets sessions roll up into days and sites
into the kabupaten)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from services.reporting.domain import percentile
from services.reporting.sketch import ALPHA, MIN_VALUE, Sketch, bucket, bucket_value

durations = st.floats(min_value=0, max_value=86_400, allow_nan=False, allow_infinity=False)
samples = st.lists(durations, min_size=1, max_size=300)
QUANTILES = (0, 1, 25, 50, 90, 95, 99, 100)


def close(estimate: float, exact: float) -> bool:
    """Within the relative accuracy (a hair more for float rounding at a bucket edge), or under
    one second for sub-second values, which the sketch answers as 0."""
    if exact < MIN_VALUE:
        return estimate < MIN_VALUE
    return abs(estimate - exact) <= ALPHA * exact * (1 + 1e-6)


@given(samples)
def test_percentiles_are_within_the_stated_accuracy(values: list[float]) -> None:
    sketch = Sketch.of(values)
    ordered = sorted(values)
    for q in QUANTILES:
        estimate = sketch.quantile(q)
        assert estimate is not None
        assert close(estimate, percentile(ordered, q)), (q, estimate, percentile(ordered, q))
    assert (sketch.n, sketch.max, sketch.min) == (len(values), max(values), min(values))
    assert sketch.mean is not None
    assert math.isclose(sketch.mean, sum(values) / len(values), abs_tol=0.001)


@given(st.lists(samples, min_size=1, max_size=6))
def test_merged_sketches_equal_the_sketch_of_the_union(parts: list[list[float]]) -> None:
    merged = Sketch()
    for part in parts:
        merged.merge(Sketch.of(part))
    union = [v for part in parts for v in part]
    assert merged == Sketch.of(union)  # the same buckets, count, sum, min and max
    ordered = sorted(union)
    for q in QUANTILES:
        estimate = merged.quantile(q)
        assert estimate is not None and close(estimate, percentile(ordered, q))


@given(samples, st.floats(min_value=1, max_value=86_400))
def test_count_at_most_misses_only_values_near_the_limit(values: list[float], limit: float) -> None:
    sketch = Sketch.of(values)
    counted = sketch.count_at_most(limit)
    certain = sum(1 for v in values if v <= limit / (1 + 2 * ALPHA))
    possible = sum(1 for v in values if v <= limit * (1 + 2 * ALPHA))
    assert certain <= counted <= possible


@given(samples)
def test_a_stored_sketch_reads_back_the_same(values: list[float]) -> None:
    sketch = Sketch.of(values)
    assert Sketch.from_document(sketch.to_document()) == sketch


def test_buckets_and_edges() -> None:
    assert bucket(0.0) == bucket(0.999) == "z"
    assert bucket(1.0) == "k0"
    assert Sketch.of([-5.0]).max == 0.0  # a clock behind another never makes a negative wait
    assert Sketch().quantile(50) is None and Sketch().mean is None
    # every value in a bucket is within ALPHA of the bucket's answer
    for value in (1.0, 59.9, 60.0, 1799.0, 1800.0, 1801.0, 14_400.0):
        answer = bucket_value(bucket(value))
        assert abs(answer - value) <= ALPHA * value * (1 + 1e-9)
    # four hours of one-second resolution in a few hundred buckets
    assert int(bucket(4 * 3600.0)[1:]) < 500
