"""PCIe links as FIFO servers: one transfer on the wire at a time, in issue order.

A link serves one GPU, or the k GPUs behind one switch uplink (machine.py). Each item is
(stage, turn, ring tokens to allocate, bytes, release time). An item starts when the link
is idle, its release time has come, and its stage's ledger has room for its ring tokens
(it allocates them then): a prefetch holds device memory from the moment it goes on the
wire, not while it queues. The release time is the scheduler's "as late as possible"
start (land just before the turn, with the budget's margin): the ring holds a turn's
rejoins for about two slots, not a whole cycle; a stage that is ready for the turn
releases its item at once (engine.py). The engine queues at most one item per stage, in
turn order, so allocations on a stage happen in turn order and no turn can wait on
memory held by a later one (no deadlock); among the items that can go, the first queued
goes first. An item of 0 bytes (a ring entry with no load) completes at once.

Transfer time = latency + bytes / rate (core.TransferModel's form). Every transfer's
(start, end) is kept when `record` is on, so tests can check the link is never over-committed.
"""

from __future__ import annotations

from collections import deque
from typing import Callable


class Item:
    __slots__ = ("stage", "k", "tokens", "nbytes", "done", "release")

    def __init__(self, stage: int, k: int, tokens: int, nbytes: int,
                 done: Callable[[], None], release: float = 0.0) -> None:
        self.stage, self.k, self.tokens, self.nbytes = stage, k, tokens, nbytes
        self.done = done                  # called when it has landed
        self.release = release            # not before this time (0: at once)


class Link:
    __slots__ = ("name", "rate", "latency", "busy", "queue", "bytes_moved", "busy_time",
                 "transfers", "record", "intervals", "wake_at")

    def __init__(self, name: str, bytes_per_s: float, latency_s: float, record: bool = False) -> None:
        self.name = name
        self.rate = bytes_per_s
        self.latency = latency_s
        self.busy = False
        self.queue: deque[Item] = deque()
        self.bytes_moved = 0
        self.busy_time = 0.0
        self.transfers = 0
        self.record = record
        self.intervals: list[tuple[float, float, int]] = []   # (start, end, bytes)
        self.wake_at = float("inf")       # a wake-up is scheduled for this time

    def duration(self, nbytes: int) -> float:
        return 0.0 if nbytes <= 0 else self.latency + nbytes / self.rate

    def started(self, now: float, nbytes: int) -> float:
        """Book a transfer starting now; returns its end time."""
        end = now + self.duration(nbytes)
        self.bytes_moved += nbytes
        self.busy_time += end - now
        self.transfers += 1
        if self.record:
            self.intervals.append((now, end, nbytes))
        return end
