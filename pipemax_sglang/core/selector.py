"""The two-stage greedy selector (docs/design.md section 4, "Selector").

    plan = select_greedy(inp)

The problem (objective, constraints, park rule, ageing) is defined in objective.py and
frame.py; this file only searches. All arithmetic is numpy over the canonical
(req_id-sorted) order, so ties always fall the same way and a shuffled input gives the
same plan.

Stage 1, greedy initialisation: walk the free candidates in order of value per unit of
cost and add each one that keeps the plan feasible and raises J (first fit). Done as
vectorised passes: a pass takes the longest prefix that fits (cumulative sums, a shared
node charged to its first taker), cut where J peaks, then drops every remaining candidate
that no longer fits alone or no longer raises J; each pass takes or drops at least one.
Only the head of the order is sorted (partition, ties at the cut kept whole); the tail is
walked only if something in it could still be added. Orders tried, best J kept:
  - aggregate: cost = sum over the resources that can run out (bytes, device tokens,
    rows, step time up to the bubble's kink) of use / room, weighted by how
    oversubscribed each is; with only the budget binding this is docs/design.md's "value per
    byte" (a shared node split among the candidates that list it);
  - the aggregate re-weighted by what the first walk actually used up (usage^4);
  - for at most SMALL_N free candidates also value per host token and value per second
    of step time. One order alone can be led astray by an instance built against it.

Stage 2, local refinement, is refine.py. J only rises there, so the plan never scores
below stage 1's.
"""

from __future__ import annotations

import numpy as np

from .frame import Frame, build_frame
from .refine import refine
from .selection import SMALL_N, Selection, amortised_host, unheld_tokens
from .selector_types import Plan, SelectorInput

_HEAD = 256               # stage 1 sorts this many (at least) of each order up front
_MAX_FIRST_FIT_PASSES = 32
_TOL = 1e-9               # stage 1: J must rise by more than this (relative)


# ----------------------------------------------------------------------------- stage 1

def _marginal_in_order(fr: Frame, rem: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Host tokens each of `rem` adds if taken in this order: its private tokens plus the
    shared nodes no one holds yet and no earlier item of `rem` lists."""
    mh = fr.priv[rem]
    if fr.inc_cand.size == 0 or rem.size == 0:
        return mh
    pos = np.full(fr.n, -1, dtype=np.int64)
    pos[rem] = np.arange(rem.size)
    p = pos[fr.inc_cand]
    sel = (p >= 0) & (held[fr.inc_node] == 0)
    if sel.any():
        p_s, u_s = p[sel], fr.inc_node[sel]
        o = np.lexsort((p_s, u_s))                    # by node, then by position in rem
        u_o = u_s[o]
        first = np.ones(o.size, dtype=bool)
        first[1:] = u_o[1:] != u_o[:-1]
        mh = mh + np.bincount(p_s[o][first], weights=fr.node_tokens[u_o[first]],
                              minlength=rem.size).astype(np.int64)
    return mh


def _addable(fr: Frame, st: Selection, idx: np.ndarray, use_objective: bool) -> np.ndarray:
    """Mask over idx: fits if added alone now, and (use_objective) raises J."""
    add = fr.priv[idx] + (unheld_tokens(fr, st.held)[idx] if fr.inc_cand.size else 0)
    keep = fr.fits(st.host + add, st.rows + 1)
    if use_objective:
        j_now = st.score(fr)
        gain = fr.score(st.value + fr.value[idx], st.host + add, st.rows + 1,
                        st.ctx + fr.ctx[idx]) - j_now
        keep &= gain > _TOL * max(1.0, abs(j_now))
    return keep


def first_fit(fr: Frame, order: np.ndarray, use_objective: bool,
              st: Selection | None = None) -> Selection:
    """Walk `order` first-fit from `st` (default: the fixed part). With use_objective=False
    (baselines) every candidate that fits is taken; otherwise only those raising J."""
    st = Selection(fr) if st is None else st
    rem = order
    for _ in range(_MAX_FIRST_FIT_PASSES):
        if rem.size == 0:
            break
        mh = _marginal_in_order(fr, rem, st.held)
        cum_h = st.host + np.cumsum(mh)
        cum_r = st.rows + np.arange(1, rem.size + 1)
        ok = fr.fits(cum_h, cum_r)
        nfit = rem.size if ok.all() else int(np.argmin(ok))
        if use_objective and nfit:
            j = fr.score(st.value + np.cumsum(fr.value[rem[:nfit]]), cum_h[:nfit], cum_r[:nfit],
                         st.ctx + np.cumsum(fr.ctx[rem[:nfit]]))
            j_now = st.score(fr)
            best = int(np.argmax(j))
            kbest = best + 1 if j[best] > j_now + _TOL * max(1.0, abs(j_now)) else 0
        else:
            kbest = nfit
        if kbest:
            st.take(fr, rem[:kbest])
        rest = rem[kbest:]
        rem = rest[_addable(fr, st, rest, use_objective)] if rest.size else rest
    return st


class _Resources:
    """What each free candidate needs of each resource that can bind, and what is left.

    Rows of `need`: bytes, device tokens, rows, step time up to the bubble's kink (the
    soft one: past it, time costs J instead of being refused)."""

    __slots__ = ("need", "room", "binding")

    def __init__(self, fr: Frame, free: np.ndarray, h: np.ndarray) -> None:
        m = fr.model
        dt = m.b + m.c * fr.ctx[free]
        t_base = m.a + m.b * fr.base_rows + m.c * fr.base_ctx if fr.base_rows else m.a
        t_free = (max(m.others_max, m.others_sum / (m.stages - 1)) - t_base
                  if m.stages > 1 and m.lam > 0 else np.inf)
        self.need = np.stack([fr.k * h, h + 1.0, np.ones(free.size), dt])      # [4, n_free]
        room = np.array([fr.budget - fr.k * fr.base_host, fr.dev_cap - fr.base_host - fr.base_rows,
                         fr.row_cap - fr.base_rows, t_free], dtype=np.float64)
        self.binding = self.need.sum(axis=1) > room          # only these can run out
        # An exhausted resource counts as one average item's worth left (finite weights).
        self.room = np.maximum(room, np.maximum(self.need.mean(axis=1), 1e-12))

    def key(self, v: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """v / (weighted sum of need / room over the binding resources)."""
        w = np.where(self.binding, weights, 0.0) / self.room
        agg = w @ self.need
        return v / np.maximum(agg, 1e-300) if agg.any() else v / self.need[1]

    def oversubscription(self) -> np.ndarray:
        return self.need.sum(axis=1) / self.room

    def usage(self, free: np.ndarray, chosen: np.ndarray) -> np.ndarray:
        """Fraction of each resource's room the chosen free candidates use (<= 1 for the
        hard ones; the soft time one is clipped)."""
        return np.minimum(self.need[:, chosen[free]].sum(axis=1) / self.room, 1.0)


def _keys(fr: Frame, free: np.ndarray, res: _Resources, v: np.ndarray) -> list[np.ndarray]:
    """Stage 1's first orders (module note): the aggregate, and for small n the others.
    The aggregate's first weights are each resource's oversubscription (total need over
    room): the more oversubscribed, the likelier it runs out first."""
    keys = [res.key(v, res.oversubscription())]
    if free.size <= SMALL_N:
        keys.append(v / res.need[1])                       # value per host token (+1)
        if fr.model.b > 0 or fr.model.c > 0:
            keys.append(v / np.maximum(res.need[3], 1e-300))   # value per second
    return keys


def _split_order(free: np.ndarray, key: np.ndarray, head: int) -> tuple[np.ndarray, np.ndarray]:
    """(head sorted by key desc, rest unsorted). Ties at the cut all go to the head and
    sort by canonical position, so the split does not depend on the selection algorithm."""
    if free.size <= head:
        return free[np.argsort(-key, kind="stable")], free[:0]
    thr = np.partition(-key, head - 1)[head - 1]
    top = -key <= thr
    idx = np.flatnonzero(top)
    return free[idx[np.argsort(-key[idx], kind="stable")]], free[~top]


def _stage1(fr: Frame, free: np.ndarray, key: np.ndarray) -> Selection:
    head, tail = _split_order(free, key, max(_HEAD, 2 * fr.inp.params.refine_pool))
    st = first_fit(fr, head, use_objective=True)
    if tail.size and _addable(fr, st, tail, use_objective=True).any():
        pos = np.searchsorted(free, tail)          # tail's keys, in free's positions
        st = first_fit(fr, tail[np.argsort(-key[pos], kind="stable")], True, st)
    return st


# ----------------------------------------------------------------------------- entry point

def select_greedy(inp: SelectorInput, refine_plan: bool = True) -> Plan:
    """Two-stage greedy plan for `inp` (module note). Deterministic; O(n log n) + bounded
    passes. refine_plan=False stops after stage 1 (tests and benchmarks compare)."""
    fr = build_frame(inp, pipemax=True)
    free = np.flatnonzero(fr.free)
    best = Selection(fr)
    best_j = best.score(fr)

    def consider(key: np.ndarray) -> None:
        nonlocal best, best_j
        st = _stage1(fr, free, key)
        j = st.score(fr)
        if j > best_j + _TOL * max(1.0, abs(best_j)):
            best, best_j = st, j

    if free.size:
        v = fr.value[free]
        res = _Resources(fr, free, amortised_host(fr)[free])
        for key in _keys(fr, free, res, v):
            consider(key)
        # Re-weight the aggregate towards what actually ran out: weight = usage^4, so a
        # resource used to 100% dominates one used to 50% (1 vs 1/16).
        if res.binding.sum() > 1:
            consider(res.key(v, res.usage(free, best.chosen) ** 4))
    return fr.plan((refine(fr, best) if refine_plan else best).chosen)
