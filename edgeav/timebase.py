"""Time arithmetic: integer nanoseconds on the pipeline clock, one rounding rule.

Every conversion between a duration and a sample count goes through `samples_for_ns` /
`ns_for_samples`, which round half up on exact integers. Never float seconds in the pipeline.
"""

from __future__ import annotations

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000


def _div_round_half_up(num: int, den: int) -> int:
    if den <= 0:
        raise ValueError(f"denominator must be positive, got {den}")
    q, r = divmod(num, den)
    return q + (1 if 2 * r >= den else 0)


def samples_for_ns(duration_ns: int, rate_hz: int) -> int:
    """Number of samples in `duration_ns` at `rate_hz` (round half up)."""
    return _div_round_half_up(int(duration_ns) * int(rate_hz), NS_PER_S)


def ns_for_samples(n_samples: int, rate_hz: int) -> int:
    """Duration in ns of `n_samples` at `rate_hz` (round half up)."""
    return _div_round_half_up(int(n_samples) * NS_PER_S, int(rate_hz))


def s_to_ns(seconds: float) -> int:
    """Convert a configured duration in seconds (a user-facing float) to integer ns, once, at the edge."""
    return int(round(float(seconds) * NS_PER_S))


def ns_to_s(ns: int) -> float:
    """For display and reports only."""
    return ns / NS_PER_S
