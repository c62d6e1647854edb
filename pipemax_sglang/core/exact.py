"""Exact solver for small instances: the optimum the greedy is measured against.

Same frame as the greedy (frame.py: park rule, forced candidates), same objective and
constraints (objective.py); it maximises J over EVERY subset of the free candidates, by
exhaustive enumeration, vectorised in blocks of 2^14 subsets. Subset s includes free
candidate j when bit j of s is set (free candidates in canonical req_id order); among equal
J the smallest s wins, so the answer is deterministic. n free candidates cost 2^n
evaluations: n = 16 is ~65 k rows of numpy arithmetic (milliseconds); above
`MAX_FREE_CANDIDATES` it refuses rather than hang.
"""

from __future__ import annotations

import numpy as np

from .frame import build_frame
from .selector_types import Plan, SelectorInput

MAX_FREE_CANDIDATES = 22
_BLOCK = 1 << 14


def select_exact(inp: SelectorInput) -> Plan:
    fr = build_frame(inp, pipemax=True)
    free = np.flatnonzero(fr.free)
    m = free.size
    if m > MAX_FREE_CANDIDATES:
        raise ValueError(f"select_exact: {m} free candidates > {MAX_FREE_CANDIDATES}")
    v, ctx, priv = fr.value[free], fr.ctx[free], fr.priv[free]
    # Shared nodes not already held by the forced set, as a [m, u] incidence matrix.
    pos = np.full(fr.n, -1)
    pos[free] = np.arange(m)
    sel = (pos[fr.inc_cand] >= 0) & (fr.held0[fr.inc_node] == 0)
    nodes, node_col = np.unique(fr.inc_node[sel], return_inverse=True)
    inc = np.zeros((m, nodes.size))
    inc[pos[fr.inc_cand[sel]], node_col] = 1.0
    node_tok = fr.node_tokens[nodes].astype(np.float64)
    bit = np.arange(m)
    best_j, best_s = -np.inf, 0
    for lo in range(0, 1 << m, _BLOCK):
        s = np.arange(lo, min(lo + _BLOCK, 1 << m))
        x = ((s[:, None] >> bit) & 1).astype(np.float64)          # [S, m] membership
        host = fr.base_host + x @ priv + ((x @ inc) > 0) @ node_tok
        rows = fr.base_rows + x.sum(axis=1)
        j = fr.score(fr.base_value + x @ v, host, rows, fr.base_ctx + x @ ctx)
        j = np.where(fr.fits(host, rows), j, -np.inf)
        i = int(np.argmax(j))
        if j[i] > best_j:
            best_j, best_s = float(j[i]), int(s[i])
    chosen = np.zeros(fr.n, dtype=bool)
    chosen[free[((best_s >> bit) & 1).astype(bool)]] = True
    return fr.plan(chosen)
