"""The decision's frame: the input as columns, then the fixed part of every plan.

Every selector (greedy, exact, baselines) starts here, so they all solve the same problem:

1. Columns. Candidates are sorted by req_id (the canonical order: every tie anywhere is
   broken by position in it, so a shuffled input gives the same plan), validated, and
   turned into numpy arrays. A radix node listed by one candidate only is folded into its
   private tokens; nodes listed by two or more become an incidence list (candidate, node)
   so that a set of candidates pays each shared node once.

2. Park rule (residents, largest context first, ties by req_id). Within one micro-batch all
   members share the same next turn, so "furthest next turn" does not separate them;
   the largest context frees the most device memory and cuts t(m) the most per row lost.
   a. room: park while the kept members' one-new-token-each does not fit the free device
      tokens, or they exceed the row cap;
   b. balance (PipeMax policy only): park while doing so raises J, i.e. while the bubble
      time the member causes, priced at the pipeline's token rate, exceeds its one row;
   c. make room for forced candidates (3).

3. Ageing (PipeMax policy only). A candidate with rounds_waited >= A is forced: in order of
   (rounds_waited desc, arrival, req_id), each one that fits the remaining budget is added
   first, parking members (rule 2's order) if device tokens or rows are short. It is skipped
   only if it cannot fit even with every member parked.

   Bound. Suppose every decision's budget can carry any single candidate, any single
   candidate fits the device once the members are parked, and row_cap >= 1. Then the head
   of the forced queue is served at every decision. Passed-over candidates all age by one
   per decision, so the queue order never changes and new ones join behind; a candidate
   therefore rejoins within  A + (number of candidates ahead of it when it reached A)
   <= A + N - 1 decisions, N the most candidates ever waiting. Under value ageing most
   rejoin well before A; the repeated-game test checks the bound.

What remains free (the non-forced candidates, with the capacity left after 2 and 3) is what
the greedy, the exact solver and the baselines choose from.
"""

from __future__ import annotations

from itertools import chain

import numpy as np

from .objective import candidate_value, pipeline_model, score
from .selector_types import Candidate, Plan, SelectorInput

_I64 = np.int64


class Frame:
    """Columns + fixed part of one decision. Internal: built by `build_frame`."""

    __slots__ = (
        "inp", "model", "n", "ids_in", "perm", "ctx", "host", "priv", "value", "rounds", "arrival",
        "inc_cand", "inc_node", "node_tokens", "ptr", "k", "budget", "row_cap", "dev_cap",
        "park", "forced", "free", "base_value", "base_host", "base_rows", "base_ctx",
        "held0",
    )

    def fits(self, host, rows):
        """Hard constraints on totals (scalars or arrays): bytes, device tokens, rows."""
        return ((self.k * host <= self.budget) & (host + rows <= self.dev_cap)
                & (rows <= self.row_cap))

    def score(self, value, host, rows, ctx):
        return score(self.model, value, host, rows, ctx)

    def id_tuple(self, idx: np.ndarray) -> tuple[str, ...]:
        """req_ids of canonical positions `idx` (ascending positions give sorted ids)."""
        ids = self.ids_in
        return tuple(ids[i] for i in self.perm[idx].tolist())

    def nodes_of(self, i: int) -> np.ndarray:
        return self.inc_node[self.ptr[i]:self.ptr[i + 1]]

    @property
    def base_score(self) -> float:
        """J of the fixed part alone (parks + forced, no free candidate)."""
        return float(self.score(self.base_value, self.base_host, self.base_rows, self.base_ctx))

    def plan(self, chosen: np.ndarray) -> Plan:
        """The Plan for free candidates `chosen` (bool mask over the canonical order)."""
        if np.any(chosen & ~self.free):
            raise ValueError("chosen overlaps the forced set")
        idx = np.flatnonzero(chosen)
        held = self.held0.copy()
        if self.inc_cand.size:
            sel = chosen[self.inc_cand]
            np.add.at(held, self.inc_node[sel], 1)
        host = int(self.priv[idx].sum() + self.priv[self.forced].sum()
                   + self.node_tokens[held > 0].sum())
        rows = self.base_rows + idx.size
        ctx = self.base_ctx + int(self.ctx[idx].sum())
        value = self.base_value + float(self.value[idx].sum())
        both = np.sort(np.concatenate([idx, self.forced]))
        nbytes = self.k * host
        return Plan(
            rejoin=self.id_tuple(both),
            park=self.park,
            forced=self.id_tuple(np.sort(self.forced)),
            bytes=nbytes,
            host_tokens=host,
            device_tokens=host + rows,
            rows=rows,
            predicted_step_time=self.inp.cost.predict(rows, ctx),
            utilisation=nbytes / self.budget if self.budget > 0 else 0.0,
            objective=float(self.score(value, host, rows, ctx)),
        )


def _columns(fr: Frame, cands: tuple[Candidate, ...]) -> None:
    n = len(cands)
    fr.n = n
    empty = np.zeros(0, dtype=_I64)
    fr.inc_cand = fr.inc_node = fr.node_tokens = empty
    fr.ptr = np.zeros(n + 1, dtype=_I64)
    if n == 0:
        fr.ids_in, fr.perm = (), np.zeros(0, dtype=np.intp)
        fr.ctx = fr.host = fr.priv = fr.rounds = fr.arrival = empty
        fr.value = np.zeros(0)
        return
    ids_in, ctx_in, host_in, nodes_in, rounds_in, arrival_in = zip(*cands, strict=True)
    if len(set(ids_in)) != n:
        raise ValueError("a candidate req_id appears twice")
    # Canonical order: perm[i] is the input position of the i-th smallest req_id.
    perm = np.array(sorted(range(n), key=ids_in.__getitem__), dtype=np.intp)
    fr.ids_in, fr.perm = ids_in, perm
    fr.ctx = np.fromiter(ctx_in, _I64, n)[perm]
    fr.host = np.fromiter(host_in, _I64, n)[perm]
    fr.rounds = np.fromiter(rounds_in, _I64, n)[perm]
    fr.arrival = np.fromiter(arrival_in, _I64, n)[perm]
    if (fr.host < 0).any() or (fr.host > fr.ctx).any() or (fr.rounds < 0).any():
        raise ValueError("need 0 <= host_tokens <= context_len and rounds_waited >= 0")
    fr.priv = fr.host.copy()
    if any(nodes_in):
        _shared_nodes(fr, nodes_in, perm)


def _shared_nodes(fr: Frame, nodes_in: tuple, perm: np.ndarray) -> None:
    n = fr.n
    lens = np.fromiter(map(len, nodes_in), _I64, n)
    nid_t, ntok_t = zip(*chain.from_iterable(nodes_in), strict=True)
    ntok = np.fromiter(ntok_t, _I64, len(ntok_t))
    canon = np.empty(n, dtype=np.intp)
    canon[perm] = np.arange(n)
    owner = canon[np.repeat(np.arange(n), lens)]          # canonical candidate of each entry
    uniq, inv, counts = np.unique(np.asarray(nid_t), return_inverse=True, return_counts=True)
    tok_u = np.zeros(uniq.size, dtype=_I64)
    tok_u[inv] = ntok
    if (ntok <= 0).any() or (ntok != tok_u[inv]).any():
        raise ValueError("a host node needs tokens > 0, the same for every candidate listing it")
    if (np.bincount(owner, weights=ntok, minlength=n) > fr.host).any():
        raise ValueError("a candidate's host nodes hold more than its host_tokens")
    order = np.lexsort((inv, owner))                # by candidate, then node: CSR order
    owner, inv, ntok = owner[order], inv[order], ntok[order]
    if ((owner[1:] == owner[:-1]) & (inv[1:] == inv[:-1])).any():
        raise ValueError("a candidate lists the same host node twice")
    shared = counts[inv] >= 2                       # a node of one candidate is just private
    fr.priv = fr.host - np.bincount(owner[shared], weights=ntok[shared], minlength=n).astype(_I64)
    is_shared = counts >= 2
    dense = np.cumsum(is_shared) - 1                # shared nodes renumbered 0..u-1
    fr.inc_cand = owner[shared].astype(_I64)
    fr.inc_node = dense[inv[shared]].astype(_I64)
    fr.node_tokens = tok_u[is_shared]
    fr.ptr = np.searchsorted(fr.inc_cand, np.arange(n + 1)).astype(_I64)


class _Members:
    """The target micro-batch's members in park order, and the running totals of the ones
    kept. Park order: largest context first, then req_id (stored reversed: pop() is O(1))."""

    __slots__ = ("queue", "parked", "rows", "ctx", "cap", "spare", "value")

    def __init__(self, inp: SelectorInput) -> None:
        self.queue = sorted(inp.residents, key=lambda r: (-r.context_len, r.req_id))[::-1]
        self.parked: list[str] = []
        self.rows = len(self.queue)
        self.ctx = sum(r.context_len for r in self.queue)
        self.cap = inp.device_tokens_free          # device tokens, grows as members park
        self.spare = sum(r.freeable for r in self.queue)   # what parking all would free
        self.value = 0.0                           # -1 per parked member (objective.py)

    def park_next(self) -> None:
        r = self.queue.pop()
        self.parked.append(r.req_id)
        self.rows -= 1
        self.ctx -= r.context_len
        self.cap += r.freeable
        self.spare -= r.freeable
        self.value -= 1.0


def build_frame(inp: SelectorInput, pipemax: bool = True) -> Frame:
    """pipemax=False: baselines' frame (room parking only, no balance parking, no ageing)."""
    fr = Frame()
    fr.inp = inp
    fr.model = pipeline_model(inp)
    _columns(fr, inp.candidates)
    fr.value = candidate_value(fr.rounds, inp.params.force_after_rounds)
    fr.k, fr.budget, fr.row_cap = inp.kv_bytes_per_token, inp.budget_bytes, inp.row_cap

    res_ids = {r.req_id for r in inp.residents}
    if len(res_ids) != len(inp.residents):
        raise ValueError("a resident req_id appears twice")
    if not res_ids.isdisjoint(fr.ids_in):
        raise ValueError("a request is both resident and candidate")
    if any(r.context_len < 0 or not 0 <= r.freeable <= r.context_len for r in inp.residents):
        raise ValueError("need 0 <= private_tokens <= context_len for residents")

    mem = _Members(inp)
    # 2a. room for the members themselves (one new token each, one row each)
    while mem.queue and (mem.rows > inp.row_cap or mem.rows > mem.cap):
        mem.park_next()
    # 2b. balance: park while it raises J (no rejoin involved: host tokens 0)
    if pipemax and fr.model.lam > 0.0:
        while mem.queue:
            r = mem.queue[-1]
            now = fr.score(mem.value, 0, mem.rows, mem.ctx)
            if not fr.score(mem.value - 1.0, 0, mem.rows - 1, mem.ctx - r.context_len) > now:
                break
            mem.park_next()

    # 3. forced candidates, oldest first
    held0 = np.zeros(fr.node_tokens.size, dtype=_I64)
    forced: list[int] = []
    host = 0
    aged = (np.flatnonzero(fr.rounds >= inp.params.force_after_rounds) if pipemax
            else np.zeros(0, dtype=_I64))
    aged = aged[np.lexsort((aged, fr.arrival[aged], -fr.rounds[aged]))]
    for i in aged.tolist():
        nodes = fr.nodes_of(i)
        add = int(fr.priv[i] + fr.node_tokens[nodes[held0[nodes] == 0]].sum())
        if fr.k * (host + add) > inp.budget_bytes:
            continue
        if (len(forced) + 1 > inp.row_cap
                or host + add + len(forced) + 1 > mem.cap + mem.spare):
            continue                      # does not fit even with every member parked
        while mem.queue and (mem.rows + len(forced) + 1 > inp.row_cap
                             or host + add + mem.rows + len(forced) + 1 > mem.cap):
            mem.park_next()
        forced.append(i)
        host += add
        held0[nodes] += 1

    fr.park = tuple(sorted(mem.parked))
    fr.dev_cap = mem.cap
    fr.forced = np.array(forced, dtype=_I64)
    fr.free = np.ones(fr.n, dtype=bool)
    fr.free[fr.forced] = False
    fr.held0 = held0
    fr.base_value = mem.value + float(fr.value[fr.forced].sum())
    fr.base_host = host
    fr.base_rows = mem.rows + len(forced)
    fr.base_ctx = mem.ctx + int(fr.ctx[fr.forced].sum())
    return fr
