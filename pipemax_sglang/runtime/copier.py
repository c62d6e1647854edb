"""LinkCopier: the CPU stand-in for one direction of a PCIe link, with an optional throttle.

On a GPU, host<->device KV copies run on dedicated CUDA streams and the scheduler waits on
events. On our CPU machines "device" and "host" are both RAM; without this module the copies
would run inline in the scheduler thread, so nothing would overlap and no budget could bind.
A LinkCopier is one worker thread with a FIFO queue, like one CUDA stream on one link:

    scheduler thread   submit(copy A)  submit(copy B)  record event E ... E.synchronize()
    H2D copier thread        |== A ==|== B ==|                        (returns after B)

- Jobs run in submission order (a stream is FIFO); `record()` marks the current tail, and
  waiting on the mark waits for every job submitted before it.
- With a throttle of X GB/s, each job takes at least bytes / X seconds (the copy itself,
  then a sleep for the remainder): the link behaves as a PCIe link of X GB/s would.
- torch copy kernels and sleeps release the GIL, so copies overlap the scheduler's compute.

Two copiers per process (H2D and D2H) model the two independent directions of the link.
Counters (bytes, jobs, busy seconds, wait stalls) feed PipeMax's statistics.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class CopierStats:
    name: str
    jobs: int
    bytes: int
    busy_s: float          # time the link was busy (copy + throttle)
    stall_s: float         # time callers spent waiting for this link
    gbps_limit: float | None


class LinkCopier:
    def __init__(self, name: str, gbps: float | None = None, *,
                 clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.name = name
        self.gbps = gbps
        self._clock, self._sleep = clock, sleep
        self._cv = threading.Condition()
        self._queue: deque[tuple[int, Callable[[], None], int, bool]] = deque()
        self._submitted = 0        # sequence number of the last submitted job
        self._completed = 0        # sequence number of the last finished job
        self._error: BaseException | None = None
        self._bytes = 0
        self._busy = 0.0
        self._stall = 0.0
        self._intervals: deque[tuple[float, float]] = deque(maxlen=8192)   # (start, end) a job
        self._timed = 0            # intervals recorded (copies, not barriers)
        self._taken = 0            # intervals handed out by take_intervals()
        self._thread = threading.Thread(target=self._run, name=f"pipemax-{name}", daemon=True)
        self._thread.start()

    # ---- producer side (scheduler thread) ----------------------------------------------
    def submit(self, fn: Callable[[], None], nbytes: int, barrier: bool = False) -> int:
        """Queue a copy (or, `barrier`, an ordering job: not timed as link work); returns its
        sequence number (a mark to wait on)."""
        with self._cv:
            self._submitted += 1
            seq = self._submitted
            self._queue.append((seq, fn, nbytes, barrier))
            self._cv.notify_all()
        return seq

    def tail(self) -> int:
        with self._cv:
            return self._submitted

    def done(self, seq: int) -> bool:
        with self._cv:
            self._raise_if_failed()
            return self._completed >= seq

    def wait(self, seq: int, count_stall: bool = True) -> float:
        """Block until job `seq` (and all before it) finished; returns the seconds waited
        (counted as this link's stall unless `count_stall` is False: another copier's
        barrier waiting, not the scheduler)."""
        start = time.perf_counter()
        with self._cv:
            while self._completed < seq and self._error is None:
                self._cv.wait()
            self._raise_if_failed()
        waited = time.perf_counter() - start
        if waited > 0 and count_stall:
            with self._cv:
                self._stall += waited
        return waited

    def drain(self) -> float:
        return self.wait(self.tail())

    def stats(self) -> CopierStats:
        with self._cv:
            return CopierStats(self.name, self._completed, self._bytes, self._busy, self._stall, self.gbps)

    def take_intervals(self) -> list[tuple[float, float]]:
        """(start, end) of the jobs finished since the last call (the clock's seconds)."""
        with self._cv:
            n = len(self._intervals)
            fresh = min(n, self._timed - self._taken)
            self._taken = self._timed
            return list(self._intervals)[n - fresh:]

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"pipemax {self.name} copier failed") from self._error

    # ---- consumer side (copier thread) -------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue:
                    self._cv.wait()
                seq, fn, nbytes, barrier = self._queue.popleft()
            start = self._clock()
            try:
                fn()
            except BaseException as e:  # surfaced to every waiter
                with self._cv:
                    self._error = e
                    self._cv.notify_all()
                return
            if barrier:
                with self._cv:
                    self._completed = seq
                    self._cv.notify_all()
                continue
            if self.gbps:
                remaining = nbytes / (self.gbps * 1e9) - (self._clock() - start)
                if remaining > 0:
                    self._sleep(remaining)
            with self._cv:
                end = self._clock()
                self._intervals.append((start, end))
                self._timed += 1
                self._busy += end - start
                self._bytes += nbytes
                self._completed = seq
                self._cv.notify_all()


class CopierEvent:
    """A torch.cpu.Event look-alike that orders against the copiers.

    `record()` marks the current tail of every copier the recording thread has ever used;
    `synchronize()` / `wait()` block until the copies before those marks finished; `query()`
    tells without blocking. An event recorded when no copy is pending completes at once, so
    it is a drop-in for every other CPU use.

    Why every copier and not "those used since the last record": SGLang records other events
    between submitting copies and recording their ack (HiCache's per-layer load events come
    after each layer, the ack after the last); had a record consumed the set, the ack would
    mark nothing and complete before its copies. Marking tails is exact for FIFO copiers and
    at worst waits for a copy in the other direction submitted just before.
    """

    _local = threading.local()

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
        if enable_timing:  # as torch.cpu.Event: callers then fall back to no timing
            raise TypeError("CopierEvent does not support timing")
        self._marks: list[tuple[LinkCopier, int]] = []

    @classmethod
    def note_use(cls, copier: LinkCopier) -> None:
        used = getattr(cls._local, "used", None)
        if used is None:
            used = cls._local.used = {}
        used[id(copier)] = copier

    def record(self, stream=None) -> None:
        used = getattr(CopierEvent._local, "used", None) or {}
        self._marks = [(c, c.tail()) for c in used.values()]

    def query(self) -> bool:
        return all(c.done(seq) for c, seq in self._marks)

    def synchronize(self) -> None:
        for c, seq in self._marks:
            c.wait(seq)

    def wait(self, stream=None) -> None:
        """A copy stream waits on this event (SGLang: `start_event.wait(copy_stream)` before
        submitting a transfer, l2_transfer.py:115): what is submitted to any copier after
        this runs after the marked copies. Ordered in the copier threads, not here: each
        copier gets a barrier job that waits for the other copiers' marks (its own are
        before the barrier already, FIFO), so the scheduler thread does not block, as a CUDA
        stream wait does not block the host. No cycle: a barrier waits only for jobs
        submitted before it. Marks already done need no barrier (a barrier a copy was a
        lock and a copier wake-up of scheduler time, and most marks are done by then); a
        copier that failed raises here, at the submission, rather than in a barrier.
        (Compute waits go through Stream.wait_event, which blocks: on CPU the work after it
        runs in the scheduler thread.)"""
        used = getattr(CopierEvent._local, "used", None) or {}
        for copier in used.values():
            others = [(c, seq) for c, seq in self._marks if c is not copier and not c.done(seq)]
            if others:
                copier.submit(lambda others=others: [c.wait(seq, count_stall=False) for c, seq in others],
                              0, barrier=True)

    def elapsed_time(self, end_event) -> float:
        raise NotImplementedError("CopierEvent does not time")
