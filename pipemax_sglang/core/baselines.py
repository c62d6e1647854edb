"""Baseline policies beside the greedy, for tests, the simulator and benchmarks.

Each takes the same SelectorInput and returns the same Plan, within the same hard
constraints, and its Plan carries the same objective (core/objective.py), so policies are
compared on one scale. Baselines are naive on purpose: room parking only (frame.py rule
2a), no balance parking, no ageing guarantee, no objective; they walk the candidates in
their order and take every one that still fits (first fit, not head-of-line blocking, so
a large head does not hide that the rest could fit).

  fcfs      admission order (arrival, then req_id)
  shortest  fewest host tokens first (cheapest transfer), then req_id
  oldest    most rounds waited first, then arrival, then req_id
  none      no offload: rejoins nothing (what stock SGLang does with a parked request)
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .frame import Frame, build_frame
from .selector import first_fit, select_greedy
from .selector_types import Plan, SelectorInput


def _walk(inp: SelectorInput, key: Callable[[Frame], tuple[np.ndarray, ...]]) -> Plan:
    fr = build_frame(inp, pipemax=False)
    if fr.n == 0:
        return fr.plan(np.zeros(0, dtype=bool))
    # np.lexsort: last key is primary; the canonical position breaks every tie.
    order = np.lexsort((np.arange(fr.n),) + key(fr))
    return fr.plan(first_fit(fr, order, use_objective=False).chosen)


def select_fcfs(inp: SelectorInput) -> Plan:
    return _walk(inp, lambda fr: (fr.arrival,))


def select_shortest(inp: SelectorInput) -> Plan:
    return _walk(inp, lambda fr: (fr.host,))


def select_oldest(inp: SelectorInput) -> Plan:
    return _walk(inp, lambda fr: (fr.arrival, -fr.rounds))


def select_none(inp: SelectorInput) -> Plan:
    fr = build_frame(inp, pipemax=False)
    return fr.plan(np.zeros(fr.n, dtype=bool))


SELECTORS: dict[str, Callable[[SelectorInput], Plan]] = {
    "greedy": select_greedy,
    "fcfs": select_fcfs,
    "shortest": select_shortest,
    "oldest": select_oldest,
    "none": select_none,
}
"""Every policy by name. exact.select_exact is not listed: it only accepts small inputs."""
