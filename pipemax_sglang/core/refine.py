"""Stage 2 of the greedy selector: local refinement (docs/design.md section 4, "Selector").

Moves between chosen and unchosen free candidates (never the forced ones): add, drop,
1-for-1, and for at most SMALL_N free candidates also 1-for-2, 2-for-1, 2-for-2 and
2-for-3 (the compound moves fix a knapsack's "two mid-sized out, three small in" cases,
which matter when items are large against the budget, i.e. few candidates). Moves only
use the boundary: pools of the k chosen with the lowest density or value and the k
unchosen with the highest (k = params.refine_pool; the compound moves with more than one
on a side use the first SMALL_POOL of each), so a pass costs O(|chosen|) for the pools
plus a fixed number of moves (<= ~2.3 k). A pass scores every move vectorised (shared
radix nodes counted exactly), then walks the best ones, re-checks each exactly against
the current state and applies every disjoint one that is feasible and raises J by more
than MIN_GAIN rows. Stops at a fixed point or after params.refine_passes passes. J only
rises, so the result never scores below stage 1.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

from .frame import Frame
from .selection import SMALL_N, Selection, amortised_host

MIN_GAIN = 1e-3           # rows: a refinement move must raise J by more than this
_VERIFY_TOP = 16          # moves re-checked exactly per refinement pass


def _edges(fr: Frame, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, node): every (position in idx, shared node) pair the candidates idx list."""
    starts, lens = fr.ptr[idx], fr.ptr[idx + 1] - fr.ptr[idx]
    owner = np.repeat(np.arange(idx.size), lens)
    edge = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens - starts, lens)
    return owner, fr.inc_node[edge]


def _membership(owner: np.ndarray, node: np.ndarray, rows: int, nodes: np.ndarray) -> np.ndarray:
    """[rows + 1, len(nodes)] 0/1: does candidate r list nodes[c]. The extra last row is
    zeros (a move's unused slot -1 gathers it)."""
    m = np.zeros((rows + 1, nodes.size), dtype=np.int64)
    m[owner, np.searchsorted(nodes, node)] = 1
    return m


def _top(idx: np.ndarray, key: np.ndarray, k: int) -> np.ndarray:
    """The (up to) k of idx with the largest key[idx]. Ties at the cut fall as introselect
    leaves them: deterministic for equal (canonical) input, which is all a pool needs."""
    if idx.size <= k:
        return idx
    return idx[np.argpartition(-key[idx], k - 1)[:k]]


def _pool(idx: np.ndarray, dens: np.ndarray, value: np.ndarray, k: int,
          best: bool) -> np.ndarray:
    """Up to 2k of idx: the k best (or worst) by density and by value, ordered by density
    (best first / worst first), ties by canonical position."""
    sign = 1.0 if best else -1.0
    pool = np.unique(np.concatenate([_top(idx, sign * dens, k), _top(idx, sign * value, k)]))
    return pool[np.argsort(-sign * dens[pool], kind="stable")]


def refine(fr: Frame, st: Selection) -> Selection:
    """Stage 2 (see module note). Returns a state whose J is >= that of `st`.

    The unchosen side is drawn from a reservoir fixed at the start (the 4k best unchosen
    by density and by value, plus whatever refinement drops), so a pass costs
    O(|chosen|) plus a bounded number of moves, not O(n)."""
    st = st.copy()
    k = fr.inp.params.refine_pool
    dens = fr.value / (amortised_host(fr) + 1.0)
    unch = np.flatnonzero(fr.free & ~st.chosen)
    reservoir = np.unique(np.concatenate([_top(unch, dens, 4 * k), _top(unch, fr.value, 4 * k)]))
    lean = unch.size + int(st.chosen.sum()) > SMALL_N
    for _ in range(fr.inp.params.refine_passes):
        j_now = st.score(fr)
        pin = _pool(reservoir[~st.chosen[reservoir]], dens, fr.value, k, best=True)
        pout = _pool(np.flatnonzero(st.chosen), dens, fr.value, k, best=False)
        if pin.size == 0 and pout.size == 0:
            break
        applied = _apply_best(fr, st, _moves(fr, st, pin, pout, lean), j_now)
        if applied is None:
            break
        reservoir = np.union1d(reservoir, np.asarray(applied, dtype=np.int64))
    return st


class _Moves:
    """Every candidate move of one pass, flattened: d_value, d_host, d_rows, d_ctx per
    move; out_ids (2 columns) and in_ids (3 columns) name the candidates (-1 = unused)."""

    __slots__ = ("dv", "dh", "dr", "dc", "out_ids", "in_ids")


# (candidates out, candidates in, pool cap): the move types of one pass. 2-for-2 and
# 2-for-3 (a knapsack's "two mid-sized out, three small in") only among the first
# SMALL_POOL of each pool, which are ordered by density: 15 * 15 + 15 * 20 = 525 moves.
SMALL_POOL = 6
_MOVE_TYPES = ((0, 1, None), (1, 0, None), (1, 1, None), (1, 2, None), (2, 1, None),
               (2, 2, SMALL_POOL), (2, 3, SMALL_POOL))
_LEAN_MOVE_TYPES = _MOVE_TYPES[:3]     # above SMALL_N free candidates: add, drop, 1-for-1


@lru_cache(maxsize=64)
def _combos(m: int, r: int) -> np.ndarray:
    """[C(m, r), r] index combinations (r = 0: one empty combination)."""
    if r == 0:
        return np.zeros((1, 0), dtype=np.int64)
    return np.array(list(itertools.combinations(range(m), r)), dtype=np.int64).reshape(-1, r)


@lru_cache(maxsize=256)
def _move_slots(ni: int, no: int, lean: bool) -> tuple[tuple[np.ndarray, ...],
                                                      tuple[np.ndarray, ...], np.ndarray]:
    """Slots of every move for pools of sizes ni (in) and no (out): two out columns and
    three in columns of positions in pout / pin (-1 when unused), and the change in rows.
    Cached: it depends on the sizes only."""
    outs, ins = [], []
    for r, s, cap in _LEAN_MOVE_TYPES if lean else _MOVE_TYPES:
        co = _combos(no if cap is None else min(no, cap), r)
        ci = _combos(ni if cap is None else min(ni, cap), s)
        if len(co) == 0 or len(ci) == 0:
            continue
        o = np.repeat(co, len(ci), axis=0)                  # out-major
        i = np.tile(ci, (len(co), 1))
        outs.append(np.pad(o, ((0, 0), (0, 2 - r)), constant_values=-1))
        ins.append(np.pad(i, ((0, 0), (0, 3 - s)), constant_values=-1))
    out = np.concatenate(outs) if outs else np.zeros((0, 2), dtype=np.int64)
    inn = np.concatenate(ins) if ins else np.zeros((0, 3), dtype=np.int64)
    dr = (inn >= 0).sum(axis=1) - (out >= 0).sum(axis=1)
    cols_out = tuple(np.ascontiguousarray(out[:, j]) for j in range(2))
    cols_in = tuple(np.ascontiguousarray(inn[:, j]) for j in range(3))
    for x in (*cols_out, *cols_in, dr):
        x.flags.writeable = False
    return cols_out, cols_in, dr


def _moves(fr: Frame, st: Selection, pin: np.ndarray, pout: np.ndarray, lean: bool) -> _Moves:
    """Every move of one pass with its exact change in totals.

    Host tokens: each candidate's marginal alone (private tokens, plus shared nodes nobody
    holds if it comes in, or that only it holds if it goes out) adds up exactly, except on
    a node two candidates of the same move both list; those nodes (few) are recounted by
    holder count: a node costs its tokens when its count goes 0 -> >0 and frees them when
    it goes >0 -> 0."""
    (o1, o2), (i1, i2, i3), dr = _move_slots(pin.size, pout.size, lean)
    mv = _Moves()

    add_h, rem_h = fr.priv[pin], fr.priv[pout]
    fix = None
    if fr.inc_cand.size:
        own_in, node_in = _edges(fr, pin)
        own_out, node_out = _edges(fr, pout)
        nodes = np.union1d(node_in, node_out)
        if nodes.size:
            m_in = _membership(own_in, node_in, pin.size, nodes)
            m_out = _membership(own_out, node_out, pout.size, nodes)
            held, tok = st.held[nodes], fr.node_tokens[nodes]
            add_h = add_h + m_in[:-1] @ np.where(held == 0, tok, 0)
            rem_h = rem_h + m_out[:-1] @ np.where(held == 1, tok, 0)
            # Nodes listed by two or more pool candidates: recount exactly.
            multi = (m_in.sum(axis=0) + m_out.sum(axis=0)) > 1
            if multi.any():
                # float64 throughout: integer matmul has no BLAS; counts stay exact.
                a_in = m_in[:, multi].astype(np.float64)
                a_out = m_out[:, multi].astype(np.float64)
                held, tok = held[multi].astype(np.float64), tok[multi].astype(np.float64)
                # np.take(axis=0): a row gather several times faster than a[idx] here.
                cnt_in = (np.take(a_in, i1, axis=0) + np.take(a_in, i2, axis=0)
                          + np.take(a_in, i3, axis=0))                          # [moves, u]
                cnt = cnt_in - np.take(a_out, o1, axis=0) - np.take(a_out, o2, axis=0)
                exact = (held + cnt > 0) @ tok - float((held > 0) @ tok)
                additive = (cnt_in @ np.where(held == 0, tok, 0.0)
                            - (cnt_in - cnt) @ np.where(held == 1, tok, 0.0))
                fix = exact - additive
    def col(x_in, x_out):
        # A zero appended at index -1, so unused slots contribute nothing.
        xi = np.concatenate([x_in, [0]])
        xo = np.concatenate([x_out, [0]])
        return xi[i1] + xi[i2] + xi[i3] - xo[o1] - xo[o2]

    mv.dv = col(fr.value[pin], fr.value[pout])
    mv.dh = col(add_h, rem_h) if fix is None else col(add_h, rem_h) + fix
    mv.dc = col(fr.ctx[pin], fr.ctx[pout])
    mv.dr = dr
    pi, po = np.concatenate([pin, [-1]]), np.concatenate([pout, [-1]])
    mv.out_ids = (po[o1], po[o2])
    mv.in_ids = (pi[i1], pi[i2], pi[i3])
    return mv


def _apply_best(fr: Frame, st: Selection, mv: _Moves, j_now: float) -> list[int] | None:
    """Walk the best-scoring moves, best first; re-check each exactly against the CURRENT
    state and apply it if it is feasible and raises J by more than MIN_GAIN. Moves that
    touch a candidate an applied move already moved are skipped (their scores are
    stale), so one pass can apply several disjoint moves. Returns the indices moved out
    (None if nothing was applied)."""
    if mv.dv.size == 0:
        return None
    g = fr.score(st.value + mv.dv, st.host + mv.dh, st.rows + mv.dr, st.ctx + mv.dc) - j_now
    g = np.where(fr.fits(st.host + mv.dh, st.rows + mv.dr), g, -np.inf)
    top = min(_VERIFY_TOP, g.size)
    cand = np.argpartition(-g, top - 1)[:top]
    cand = cand[np.lexsort((cand, -g[cand]))]      # best first, ties by position
    moved: set[int] = set()
    dropped: list[int] = []
    j_cur = j_now
    for f in cand.tolist():
        if not g[f] > MIN_GAIN:
            break
        out = tuple(int(c[f]) for c in mv.out_ids if c[f] >= 0)
        inn = tuple(int(c[f]) for c in mv.in_ids if c[f] >= 0)
        if moved.intersection(out + inn):
            continue
        totals = st.after(fr, out, inn)
        value, host, rows, ctx, _ = totals
        if not fr.fits(host, rows):
            continue
        j = float(fr.score(value, host, rows, ctx))
        if j > j_cur + MIN_GAIN:
            st.apply(out, inn, totals)
            moved.update(out + inn)
            dropped.extend(out)
            j_cur = j
    return dropped if moved else None
