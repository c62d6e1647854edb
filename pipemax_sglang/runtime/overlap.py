"""OverlapMeter: how much of the link's load time ran beside a forward.

    meter.forward(start, end)        a forward (run_batch) on this stage, scheduler clock
    meter.loads(intervals)           finished H2D copies (LinkCopier.intervals), same clock
    meter.load_s, meter.overlap_s    totals: overlap_s / load_s is the overlap fraction

PipeMax's point is that a prefetch for turn i+1 runs while turn i computes; a fence that
waits on it before the forward makes that fraction zero. Intervals are (start, end)
seconds of time.perf_counter in one process (the copier thread and the scheduler thread
share it). Loads are measured against the forwards kept (the last `keep`), which cover
any load finished since the previous poll.
"""

from __future__ import annotations

from collections import deque


class OverlapMeter:
    def __init__(self, keep: int = 256) -> None:
        self._fwd: deque[tuple[float, float]] = deque(maxlen=keep)
        self.load_s = 0.0
        self.overlap_s = 0.0
        self.loads_seen = 0

    def forward(self, start: float, end: float) -> None:
        self._fwd.append((start, end))

    def loads(self, intervals) -> None:
        for s, e in intervals:
            self.loads_seen += 1
            self.load_s += max(0.0, e - s)
            self.overlap_s += sum(max(0.0, min(e, fe) - max(s, fs)) for fs, fe in self._fwd
                                  if fe > s and fs < e)

    @property
    def fraction(self) -> float | None:
        return self.overlap_s / self.load_s if self.load_s > 0 else None
