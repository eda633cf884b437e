"""Time arithmetic: integer nanoseconds on the pipeline clock, one rounding rule; `DriftCorrector` re-bases a
sensor whose clock drifts (a sound card's crystal) onto the capture clock.

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


class DriftCorrector:
    """Re-bases one sensor's buffer times onto the capture (monotonic) clock, continuously.

    A sound card stamps its buffers by counting samples on its own crystal: 200 ppm fast, its stream time runs
    17 s ahead of the camera's after a day. An offset measured once at start cannot follow that; this fits it as
    it goes. Each buffer gives (stream time of its end, arrival time on the capture clock); the arrival is late by
    a latency that is never below some floor but often above it (scheduling, a busy loop). So per block of
    `block_ns` of stream time only the least-delayed buffer is kept - the lower envelope of the delay - and a
    line is fitted through the last `fit_blocks` of those minima (least squares): its slope is the rate error,
    its level the offset. `map()` returns the buffer's start corrected by how far that envelope has moved since
    the first fit: the offset at start stays what the pipeline said (so a sensor that does not drift is left as
    it was), only the drift accumulated since is taken out. Before `min_blocks` blocks are seen nothing is
    corrected (200 ppm over 3 blocks of 10 s is 6 ms). Memory: `fit_blocks` pairs.
    """

    def __init__(self, block_ns: int = 10 * NS_PER_S, fit_blocks: int = 60, min_blocks: int = 3) -> None:
        if block_ns <= 0 or fit_blocks < 2 or not 2 <= min_blocks <= fit_blocks:
            raise ValueError(
                f"DriftCorrector needs block_ns > 0 and 2 <= min_blocks <= fit_blocks, got "
                f"{block_ns}, {min_blocks}, {fit_blocks}"
            )
        self.block_ns, self.fit_blocks, self.min_blocks = int(block_ns), int(fit_blocks), int(min_blocks)
        self._blocks: list[tuple[int, int]] = []  # (stream end ns, least delay ns) per finished block
        self._block_end: int | None = None  # stream time at which the current block ends
        self._best: tuple[int, int] | None = None  # (stream end ns, delay ns) of the least-delayed buffer so far
        self._line: tuple[int, float, float] | None = None  # (x0, level at x0, slope) of the current fit
        self._ref: float | None = None  # the envelope's level at the first fit: the offset the pipeline gave
        self.rate_error_ppm = 0.0  # the fitted rate error of the sensor's clock (+ = its stream time runs fast)

    def map(self, pts_ns: int, duration_ns: int, arrival_ns: int) -> int:
        """The buffer's start time on the capture clock. `arrival_ns`: when it arrived, on the capture clock."""
        end = int(pts_ns) + int(duration_ns)
        delay = int(arrival_ns) - end
        if self._block_end is None:
            self._block_end = end + self.block_ns
        elif end >= self._block_end:
            if self._best is not None:
                self._blocks.append(self._best)
                del self._blocks[: -self.fit_blocks]
                self._fit()
            self._best = None
            self._block_end = end + self.block_ns
        if self._best is None or delay < self._best[1]:
            self._best = (end, delay)
        return int(pts_ns) + self.correction_ns(int(pts_ns))

    def correction_ns(self, pts_ns: int) -> int:
        if self._line is None or self._ref is None:
            return 0
        x0, level, slope = self._line
        return int(round(level + slope * (pts_ns - x0) - self._ref))

    def _fit(self) -> None:
        n = len(self._blocks)
        if n < self.min_blocks:
            return
        x0 = self._blocks[0][0]
        xs = [x - x0 for x, _ in self._blocks]
        ys = [y for _, y in self._blocks]
        mx, my = sum(xs) / n, sum(ys) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx > 0 else 0.0
        level = my - slope * mx  # the line's value at x0
        if self._ref is None:
            self._ref = level  # the first fit, at the first block: where the correction is zero
        self._line = (x0, level, slope)
        self.rate_error_ppm = -slope / (1.0 + slope) * 1e6 if slope > -1.0 else 0.0
