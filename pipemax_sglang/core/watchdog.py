"""Watchdog: the last line of liveness. If work is pending and the pipeline has made no
progress for `timeout_s`, PipeMax hands its parked requests back to the scheduler's own
path and steps aside (the stage then runs as stock SGLang).

    trip = watchdog.observe(now, progressed, pending)

Progress is a launched batch (a prefill or a decode) or a finished request. The check runs
where the scheduler loop iterates, so a long forward, or a stage waiting for its neighbour
inside the loop, never looks like a stall: only a loop that spins with work pending and
nothing to launch does. Pure: time is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Watchdog:
    timeout_s: float                 # <= 0: disabled
    last_progress: float | None = None
    tripped: bool = False

    def observe(self, now: float, progressed: bool, pending: bool) -> bool:
        """True once, at the observation that finds `timeout_s` without progress while work
        was pending throughout."""
        if self.tripped or self.timeout_s <= 0:
            return False
        if progressed or not pending or self.last_progress is None:
            self.last_progress = now
            return False
        if now - self.last_progress >= self.timeout_s:
            self.tripped = True
            return True
        return False
