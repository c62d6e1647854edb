"""The offload scheduler's book of ring entries: who will hold device memory, and when.

Each committed turn j that brings KV in for itself has an entry: C_j tokens, held on
stage s from its predicted start (its load's as-late-as-possible start, or its turn's
start when nothing is loaded) to its predicted turn end. Turns on a stage run in order,
so when micro-batch m decides its next turn, every entry in the book ends before that
turn starts. That gives the room of m's next turn without any search over time:

    stage s   ...|  j1  |  j2  |  j3  |  m  |
    ring      [==j1==)
                 [====j2====)
                        [=== j3 ===)
                            [==== m's load ====|== m ==)
                            ^ start(X) = land_by - lat - X / rate

A load of X tokens must land by `land_by` (the turn less the budget margin) and starts as
late as it can, so the bigger X the earlier it starts and the more entries it meets:
those ending after start(X). Room = the largest X with X <= D - R - growth - (tokens of
the entries it meets), smallest over stages. Sorting the entries by end, latest first,
splits X into regions where the same entries are met; in each region the bound is a
constant, so the answer is a max over J + 1 regions (vectorised over stages).
"""

from __future__ import annotations

import numpy as np


class RingBook:
    """Entries of upcoming turns: tokens, predicted start and end per stage (numpy rows)."""

    __slots__ = ("P", "_tokens", "_start", "_end", "_cache")

    def __init__(self, num_stages: int) -> None:
        self.P = num_stages
        self._tokens: dict[int, int] = {}
        self._start: dict[int, tuple[float, ...]] = {}
        self._end: dict[int, tuple[float, ...]] = {}
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._tokens)

    def add(self, k: int, tokens: int, start: tuple[float, ...], end: tuple[float, ...]) -> None:
        self._tokens[k] = tokens
        self._start[k] = start
        self._end[k] = end
        self._cache = None

    def drop(self, k: int) -> None:
        """Turn k has run: its entry is released (or kept as residents) where it ran."""
        if self._tokens.pop(k, None) is not None:
            del self._start[k], self._end[k]
            self._cache = None

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._cache is None:
            keys = list(self._tokens)
            tok = np.array([self._tokens[k] for k in keys], dtype=np.float64)          # [J]
            start = np.array([self._start[k] for k in keys]).reshape(len(keys), self.P)  # [J, P]
            end = np.array([self._end[k] for k in keys]).reshape(len(keys), self.P)      # [J, P]
            self._cache = (tok, start, end)
        return self._cache

    def load_room(self, base: int, land_by: np.ndarray, link_start: np.ndarray,
                  latency: float, rate: np.ndarray) -> int:
        """Largest X (tokens) a load may bring (module note). base = D - R - growth;
        land_by, link_start, rate (tokens/s): per stage [P]."""
        if base <= 0:
            return 0
        if not self._tokens:
            return base
        tok, _, end = self._arrays()
        # Entries that end before the load could even start never meet it.
        end = np.where(end > link_start[None, :], end, -np.inf)
        order = np.argsort(-end, axis=0, kind="stable")                    # [J, P]
        e_sorted = np.take_along_axis(end, order, axis=0)
        held = np.cumsum(tok[order], axis=0)                               # [J, P]
        # X above hi[i] starts before entry i's end: it meets entries 0..i.
        hi = np.where(np.isfinite(e_sorted),
                      (land_by[None, :] - latency - e_sorted) * rate[None, :], np.inf)
        J = tok.size
        hi_all = np.vstack([hi, np.full((1, self.P), np.inf)])             # [J+1, P]
        held_all = np.vstack([np.zeros((1, self.P)), held])                # [J+1, P]
        lo_all = np.vstack([np.full((1, self.P), -np.inf), hi])            # [J+1, P]
        x = np.minimum(base - held_all, hi_all)                            # best X per region
        x = np.where(x > lo_all, x, 0.0)
        room = np.max(x, axis=0)                                           # [P]
        return int(max(0.0, min(float(room.min()), float(base)))) if J else base

    def largest(self) -> int:
        """The largest entry. Entries are allocated in turn order and each waits for room;
        so that none can wait for ever, residents may only grow while every committed entry
        still fits beside them once the turns ahead of it are gone (no deadlock)."""
        return max(self._tokens.values(), default=0)

    def turn_room(self, base: int, turn_start: np.ndarray) -> int:
        """Tokens a turn may allocate at its own start (nothing loaded): base minus the
        entries still held then."""
        if not self._tokens:
            return base
        tok, _, end = self._arrays()
        held = (tok[:, None] * (end > turn_start[None, :])).sum(axis=0)    # [P]
        return int(base - held.max())

    def peak(self, now: float) -> int:
        """Most entry tokens held at once from `now` on, on any stage. Overlap peaks at some
        entry's start (clamped to now): [J candidate instants, J entries, P stages]."""
        if not self._tokens:
            return 0
        tok, start, end = self._arrays()
        st = np.maximum(start, now)                                        # [J, P]
        live = end > now
        at = st[:, None, :]                                                # instants i
        held = (st[None, :, :] <= at) & (end[None, :, :] > at) & live[None, :, :]
        load = (held * tok[None, :, None]).sum(axis=1)                     # [J, P]
        return int(np.where(live, load, 0.0).max())
