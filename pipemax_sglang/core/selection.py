"""A partial plan over a frame, as both search stages see it.

`Selection` holds the totals of (fixed part + chosen free candidates) and, per shared radix
node, how many chosen candidates hold it; a node's tokens are paid while its count is > 0.
Its invariants: `host` equals the fixed part's host tokens plus the private tokens of the
chosen plus the tokens of every node with held > 0; `chosen` never includes a forced
candidate. Both stages only ever change it through `take` and `apply`.
"""

from __future__ import annotations

import numpy as np

from .frame import Frame

SMALL_N = 512             # free candidates up to which both stages search harder


class Selection:
    """Totals of (fixed part + chosen free candidates); `held`: takers per shared node."""

    __slots__ = ("value", "host", "rows", "ctx", "held", "chosen")

    def __init__(self, fr: Frame) -> None:
        self.value, self.host = fr.base_value, fr.base_host
        self.rows, self.ctx = fr.base_rows, fr.base_ctx
        self.held = fr.held0.copy()
        self.chosen = np.zeros(fr.n, dtype=bool)

    def score(self, fr: Frame) -> float:
        return float(fr.score(self.value, self.host, self.rows, self.ctx))

    def copy(self) -> "Selection":
        other = Selection.__new__(Selection)
        other.value, other.host, other.rows, other.ctx = self.value, self.host, self.rows, self.ctx
        other.held, other.chosen = self.held.copy(), self.chosen.copy()
        return other

    def take(self, fr: Frame, idx: np.ndarray) -> None:
        """Add the free candidates `idx` (not chosen yet); shared nodes counted once."""
        self.chosen[idx] = True
        self.value += float(fr.value[idx].sum())
        self.host += int(fr.priv[idx].sum())
        self.rows += int(idx.size)
        self.ctx += int(fr.ctx[idx].sum())
        if fr.inc_cand.size:
            mask = np.zeros(fr.n, dtype=bool)
            mask[idx] = True
            nodes = fr.inc_node[mask[fr.inc_cand]]
            newly = np.unique(nodes[self.held[nodes] == 0])
            self.host += int(fr.node_tokens[newly].sum())
            np.add.at(self.held, nodes, 1)

    def after(self, fr: Frame, out: tuple[int, ...], inn: tuple[int, ...]):
        """Totals after dropping `out` and adding `inn` (shared nodes exact), and the change
        in holders per node: (value, host, rows, ctx, delta). Scalar arithmetic."""
        lo, li = list(out), list(inn)
        host = self.host - int(fr.priv[lo].sum()) + int(fr.priv[li].sum())
        delta: dict[int, int] = {}
        if fr.inc_cand.size:
            for i, d in [(i, -1) for i in out] + [(j, 1) for j in inn]:
                for u in fr.nodes_of(i).tolist():
                    delta[u] = delta.get(u, 0) + d
            for u, d in delta.items():
                before = int(self.held[u])
                if before == 0 and before + d > 0:
                    host += int(fr.node_tokens[u])
                elif before > 0 and before + d == 0:
                    host -= int(fr.node_tokens[u])
        value = self.value - float(fr.value[lo].sum()) + float(fr.value[li].sum())
        rows = self.rows - len(out) + len(inn)
        ctx = self.ctx - int(fr.ctx[lo].sum()) + int(fr.ctx[li].sum())
        return value, host, rows, ctx, delta

    def apply(self, out: tuple[int, ...], inn: tuple[int, ...], totals) -> None:
        """Commit a move whose `after` totals are `totals`."""
        self.value, self.host, self.rows, self.ctx, delta = totals
        for u, d in delta.items():
            self.held[u] += d
        self.chosen[list(out)] = False
        self.chosen[list(inn)] = True


def unheld_tokens(fr: Frame, held: np.ndarray) -> np.ndarray:
    """[n] tokens of each candidate's shared nodes that nobody holds."""
    if fr.inc_cand.size == 0:
        return np.zeros(fr.n, dtype=np.int64)
    w = np.where(held[fr.inc_node] == 0, fr.node_tokens[fr.inc_node], 0)
    return np.bincount(fr.inc_cand, weights=w, minlength=fr.n).astype(np.int64)


def amortised_host(fr: Frame) -> np.ndarray:
    """Host tokens with each shared node split evenly among the candidates listing it."""
    if fr.inc_cand.size == 0:
        return fr.priv.astype(np.float64)
    listers = np.bincount(fr.inc_node, minlength=fr.node_tokens.size)
    share = fr.node_tokens[fr.inc_node] / listers[fr.inc_node]
    return fr.priv + np.bincount(fr.inc_cand, weights=share, minlength=fr.n)
