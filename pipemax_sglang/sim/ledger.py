"""Device memory of one stage, in KV tokens: residents plus a ring of one-turn entries.

    capacity D = | residents (open-ended)         | ring: turns k1 k2 ..  | free |

Residents are requests that stay on the device across turns (their KV, and the next
token reserved for each). The ring holds what a turn brings in for itself only: rejoined
requests (loaded over H2D) or an offload policy's prefill; an entry is allocated when its
transfer starts on the link (link.py: the link's head waits for room, so allocations
happen in turn order) and released when the turn leaves the stage, except the part the
next decision keeps as residents (`keep`). Release happens only after the turn's
write-through has landed on host (docs/design.md invariant 3: no slot freed before its D2H copy).

Invariant checked at every change: residents + ring <= D. Ring allocations cannot break
it (they wait for room); moving tokens from a ring entry to the residents cannot either; a
turn's reservation waits for room before it starts (engine.py). A change that breaks it
anyway is a bug in a scheduler's books or the engine: counted in `violations` (tests
require zero), not hidden.
"""

from __future__ import annotations

from .turn import Effects


class StageLedger:
    __slots__ = ("capacity", "resident", "ring", "ring_used", "peak", "violations", "over")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.resident = 0
        self.ring: dict[int, int] = {}     # turn k -> tokens allocated for it
        self.ring_used = 0
        self.peak = 0                      # most tokens in use at once
        self.violations = 0                # changes that left resident + ring > capacity
        self.over = 0                      # largest excess seen

    @property
    def used(self) -> int:
        return self.resident + self.ring_used

    def _check(self) -> None:
        used = self.resident + self.ring_used
        if used > self.peak:
            self.peak = used
        if used > self.capacity:
            self.violations += 1
            self.over = max(self.over, used - self.capacity)
        if self.resident < 0:
            raise AssertionError(f"negative resident tokens {self.resident}")

    def apply(self, prev_k: int, effects: Effects) -> None:
        """Release the previous turn's ring entry (keeping `keep` of it as residents),
        then free and reserve residents. Only `reserve` can raise the total."""
        entry = self.ring.pop(prev_k, 0)
        if effects.keep > entry:
            raise AssertionError(f"keep {effects.keep} > ring entry {entry} of turn {prev_k}")
        self.ring_used -= entry
        self.resident += effects.keep - effects.free + effects.reserve
        self._check()

    def reserve(self, tokens: int) -> None:
        """A turn's resident reservation, when it starts on this stage (engine.py)."""
        if tokens:
            self.resident += tokens
            self._check()

    def fits(self, tokens: int) -> bool:
        return self.resident + self.ring_used + tokens <= self.capacity

    def allocate(self, k: int, tokens: int) -> None:
        self.ring[k] = self.ring.get(k, 0) + tokens
        self.ring_used += tokens
        self._check()
