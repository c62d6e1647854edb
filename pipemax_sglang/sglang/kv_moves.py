"""The KV moves of PipeMax on SGLang (docs/design.md section 3).

A parked request's KV lives in host slots PipeMax owns (its HostCopy), not in the radix
tree; the tree keeps what it held before (the prompt, inserted after prefill) as ordinary
cache, shared with every other request, evictable and spilled by HiCache as SGLang decides.

    park_many(reqs)    after the requests' forward on this stage: every token their
                       HostCopies lack goes to host, all of the micro-batch's in ONE
                       device-to-host copy; once the copy has read them, their own device
                       slots are freed and their tree locks released. The row stays: an
                       in-flight result may still stash a token under it.
    park_finish(req)   once that result is processed: the row is freed.
    prefetch_many(ps)  before their next turn: where the tree still holds a request's prompt
                       on the device, it is locked and reused (one match, one lock); device
                       slots for the rest of their KV, ONE allocation.
    load_many(pfs)     ONE host-to-device copy of what was not reused, on the link HiCache's
                       loads use, behind them.
    rejoin(pfs)        at the turn, after the loads landed: fresh rows over the slots, the
                       KV lengths restored, a decode batch to merge. Nothing recomputed.

Why not a path in the tree (SGLang's checkpoint, load-back and match), which shares a
prefix: every park inserted a node (a one-token node when a request parks every turn) and
submitted a write-through per node, every rejoin walked the tree again; measured, a move
cost 150-400 us of scheduler time, 88% of a park in SGLang's checkpoint (py-spy), and with
a pressed device the rejoin's prefix had to be found, reloaded and relocked node by node.
Here a move is a few tensor slices per request; the tree is touched to unlock a request's
prompt at park and, at its rejoin, once to match and lock the prompt if the device still
holds it (then its slots are reused: no eviction to make room for a second copy, nothing on
the link for it). Where the tree evicted part of the prompt meanwhile, the rejoin loads the
whole KV from the request's own copy and owns it (until it finishes, when SGLang's insert
frees what duplicates the tree); its first park copies its prompt to host although HiCache
may hold it too.

Invariants kept here, and why they hold:
- No device slot is freed, and no tree lock released, before the copy that reads them
  finished (DeferredFrees); an abandoned prefetch's slots wait for their load likewise.
- No host copy is lost while parked: the tree never frees HostCopy slots; they go back
  only when the request finishes, is aborted, or goes to SGLang's recompute (release_ring).
- A rejoin has all L tokens: [0, P') from the tree, locked before the allocation that could
  evict them, and [P', L) from the request's own copy: it cannot find its KV evicted, so a
  parked request never needs recompute. P' is at most the prefix the tree held at park,
  and below L, so every rejoin has a load of its own to fence on (prefetch_many says why).
- A load never reads host slots a park's copy is still writing. Nothing in the copies
  orders them (on a GPU the H2D stream does not wait for the D2H stream); the turn order
  does: a request parked at turn j (a plan's park at turn j's ingest, a pressed step's
  while turn j is scheduled) is decided back at the end of turn j at the earliest and
  loaded at turn j + 1's ingest or a later launch, each after a reap (DeferredFrees) that
  has waited for the copies of every park of turn j and before, each park's copy being in
  an entry (its device slots or its prefix lock travel with it). The stage checks it
  before each load (unwritten: the copy a HostCopy last got is done), waits where it is
  not, and counts that (stats.late_park_copies, which the tests hold at 0): on CPU the copiers'
  start events would order the two anyway and hide a break, on a GPU nothing would.
- page_size 1 only (config check).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from pipemax_sglang.sglang import compat

_NO_INDICES = torch.empty(0, dtype=torch.int64)


class Span(NamedTuple):
    """Positions [start, end) of an index tensor `base`, not yet sliced: a view per request is
    a torch op per request (~2-10 us of dispatch on our hosts), which a move of a micro-batch
    must not cost; spans are sliced or gathered only where a tensor is needed (gather). A
    span keeps its whole base alive (the indices of one park's or load's allocation, 8 bytes
    a token, until its last request re-spans or releases): small beside the KV they index."""
    base: torch.Tensor
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    def tensor(self) -> torch.Tensor:
        return self.base[self.start:self.end]


def whole(t: torch.Tensor) -> Span:
    return Span(t, 0, t.shape[0])


_NO_SPAN = Span(_NO_INDICES, 0, 0)


@dataclass
class HostCopy:
    """A request's KV [0, tokens) in host slots PipeMax allocated, in token order, as the
    spans its parks copied (of each park's one allocation; never sliced or concatenated per
    park). KV never changes once written, so the copy stays valid while the request runs
    again, and its next park copies only what it decoded since."""
    chunks: list = field(default_factory=list)    # Spans of int64 host-pool index tensors
    tokens: int = 0
    writer: Any = None      # the park copy that wrote its last chunk, until a load saw it done

    def indices(self) -> torch.Tensor:
        return gather(self.chunks)

    def past(self, p: int) -> list[Span]:
        """The spans of tokens [p, tokens)."""
        out = []
        for c in self.chunks:
            if p >= c.size:
                p -= c.size
                continue
            out.append(Span(c.base, c.start + p, c.end) if p else c)
            p = 0
        return out


# Below this many rows a per-row slice is cheaper than one flat gather (measured on our CPU
# hosts: a torch op costs ~10 us of dispatch, a slice one op a row, the flat gather ~6 ops).
_SLICE_ROWS = 8


def _flat_ranges(firsts: list[int], counts: list[int]) -> torch.Tensor:
    """[firsts[0], firsts[0] + counts[0]) ++ [firsts[1], ...) ... as one int64 (CPU) tensor, all
    at once: a handful of numpy ops for a micro-batch, not a few per request (numpy, not
    torch: ~35 us for 32 rows of 512 here, torch's dispatch made it ~95)."""
    c = np.asarray(counts, dtype=np.int64)
    total = int(c.sum())
    if total == 0:
        return _NO_INDICES
    shift = np.repeat(np.asarray(firsts, dtype=np.int64) - (np.cumsum(c) - c), c)
    return torch.from_numpy(np.arange(total, dtype=np.int64) + shift)


def _flat_spans(rows: list[int], starts: list[int], ends: list[int], width: int) -> torch.Tensor:
    """Flat indices (row * width + position) of positions [starts[i], ends[i]) of rows[i],
    in order, all rows at once."""
    return _flat_ranges([r * width + s for r, s in zip(rows, starts)],
                        [e - s for s, e in zip(starts, ends)])


def gather(spans: list[Span]) -> torch.Tensor:
    """The concatenation of `spans` (of tensors of one dtype and device) as one tensor: spans
    that continue one another merge; one is a view, a few are sliced and concatenated, more
    are one index_select over their distinct bases (a micro-batch's spans come from a few
    allocations: the parks and loads of a few turns)."""
    merged: list[Span] = []
    for sp in spans:
        if sp.end <= sp.start:
            continue
        if merged and merged[-1].base is sp.base and merged[-1].end == sp.start:
            merged[-1] = Span(sp.base, merged[-1].start, sp.end)
        else:
            merged.append(sp)
    if not merged:
        return _NO_INDICES
    if len(merged) == 1:
        return merged[0].tensor()
    if len(merged) <= _SLICE_ROWS:
        return torch.cat([sp.tensor() for sp in merged])
    at: dict[int, int] = {}
    bases, size = [], 0
    for sp in merged:
        if id(sp.base) not in at:
            at[id(sp.base)] = size
            bases.append(sp.base)
            size += sp.base.shape[0]
    src = torch.cat(bases) if len(bases) > 1 else bases[0]
    flat = _flat_ranges([at[id(sp.base)] + sp.start for sp in merged], [sp.size for sp in merged])
    return src.index_select(0, flat.to(src.device))


def gather_spans(table: torch.Tensor, rows: list[int], starts: list[int], ends: list[int]) -> torch.Tensor:
    """table[rows[i], starts[i]:ends[i]] for every i, concatenated, as int64."""
    return gather_spans_each(table, rows, [(starts, ends)])[0]


def gather_spans_each(table: torch.Tensor, rows: list[int],
                      ranges: list[tuple[list[int], list[int]]]) -> list[torch.Tensor]:
    """gather_spans(table, rows, starts, ends) for each (starts, ends) of `ranges`, read from
    the table in one gather (a park reads its copy's and its frees' slots from the same
    rows: one op, not two, each costing about the same here whatever it reads)."""
    if len(rows) <= _SLICE_ROWS:
        out = []
        for starts, ends in ranges:
            parts = [table[r, s:e] for r, s, e in zip(rows, starts, ends) if e > s]
            out.append((torch.cat(parts) if len(parts) > 1 else parts[0]).to(torch.int64)
                       if parts else _NO_INDICES)
        return out
    flat = _flat_spans(rows * len(ranges), [s for starts, _ in ranges for s in starts],
                       [e for _, ends in ranges for e in ends], table.shape[1])
    if not len(flat):
        return [_NO_INDICES] * len(ranges)
    got = table.view(-1).index_select(0, flat.to(table.device)).to(torch.int64)
    if len(ranges) == 1:
        return [got]
    out, at = [], 0
    for starts, ends in ranges:
        n = sum(ends) - sum(starts)
        out.append(got[at:at + n])
        at += n
    return out


def write_rows(pool, rows: list[int], values: torch.Tensor, lens: list[int]) -> None:
    """Row rows[i] of the req-to-token table maps its positions [0, lens[i]) to the next
    lens[i] slots of `values` (every row's slots, concatenated in order)."""
    if len(rows) <= _SLICE_ROWS:
        at = 0
        for r, n in zip(rows, lens):
            pool.write((r, slice(0, n)), values[at:at + n].to(torch.int32))
            at += n
        return
    table = pool.req_to_token
    flat = _flat_spans(rows, [0] * len(rows), lens, table.shape[1])
    table.view(-1).index_copy_(0, flat.to(table.device), values.to(table.dtype))   # pool.write, flat


@dataclass
class ParkedReq:
    req: Any                 # sglang Req
    kv_len: int              # L: tokens of KV at park (origin + output); its HostCopy holds them
    parked_turn: int
    arrival: int
    ready: bool = False      # in-flight result processed and row freed
    rounds_waited: int = 0
    owner: Any = None        # the PipeMaxStage (the release hook reaches it through the Req)
    tree_len: int = 0        # P: its first P tokens were the tree's at park (its prompt)

    @property
    def rid(self) -> str:
        return self.req.rid


@dataclass
class Prefetch:
    parked: ParkedReq
    target_turn: int
    slots: Span = _NO_SPAN                 # the request's new device slots for [len(prefix), L)
    load: Any = None                       # the copy filling them (None: not issued yet)
    prefix: torch.Tensor = field(default_factory=lambda: _NO_INDICES)   # tree slots [0, P'), locked
    node: Any = None                       # the tree node the prefix ends at
    lock: Any = None                       # the lock holding it (released with the prefetch)

    @property
    def load_tokens(self) -> int:
        """Tokens this prefetch loads (its KV less the reused prefix)."""
        return self.slots.size


class DeferredFrees:
    """What a park releases once its copy to host has read it: the request's own device
    slots (to the allocator) and its lock on the tree prefix (unlocked, so that HiCache may
    evict it: before the copy, eviction could hand the slots to a forward that overwrites
    them). An abandoned prefetch's slots wait for the load writing them likewise.

    When is decided by turn numbers, never by whether a copy happens to be done: every
    pipeline stage must hold the same memory state at the same loop point (each admits and
    matches prefixes on its own, and stage s > 0 must build the batches stage 0 built), and
    copies finish at different moments on different stages. So an entry goes at the first
    reap at least `age` turns after it was added (waiting for its copy there if need be), or
    at a reap that waits for everything, which callers do only at points every stage
    reaches with the same state."""

    def __init__(self) -> None:
        self.items: list[tuple[int, Any, torch.Tensor, Any]] = []   # (turn, copy, slots, lock)

    def add(self, turn: int, copy, slots: torch.Tensor, lock=None) -> None:
        if slots.shape[0] or lock is not None:
            self.items.append((turn, copy, slots, lock))

    @staticmethod
    def _is_due(entry, upto_turn: int | None) -> bool:
        return upto_turn is None or entry[0] <= upto_turn

    def due(self, upto_turn: int | None = None) -> bool:
        """Whether reap(sched, upto_turn) would release anything."""
        return any(self._is_due(e, upto_turn) for e in self.items)

    def reap(self, sched, upto_turn: int | None = None) -> tuple[int, float]:
        """Release the entries added at or before `upto_turn` (None: all), after their
        copies. Returns (slots freed, seconds waited for copies): the rest of a reap (the
        frees, a tree unlock per parked request) is scheduler work the caller charges to
        the moves; a park's entries share its one copy, waited for once."""
        due = [e for e in self.items if self._is_due(e, upto_turn)]
        if not due:
            return 0, 0.0
        start = time.perf_counter()
        for copy in {id(e[1]): e[1] for e in due if e[1] is not None}.values():
            copy.synchronize()            # a copy that failed raises here, its entries kept
        waited = time.perf_counter() - start
        self.items = [e for e in self.items if not self._is_due(e, upto_turn)]
        for _, _, _, lock in due:
            if lock is not None:
                sched.tree_cache.unlock(lock)
        freed = [e[2] for e in due if e[2].shape[0]]
        if freed:
            sched.token_to_kv_pool_allocator.free(torch.cat(freed) if len(freed) > 1 else freed[0])
        return sum(s.shape[0] for s in freed), waited


def new_host_tokens(req) -> int:
    """Tokens a park of `req` copies to host: its KV less what its HostCopy holds."""
    ring = getattr(req, "pipemax_ring", None)
    return req.kv.kv_committed_len - (ring.tokens if ring is not None else 0)


def park_many(reqs: list, sched, frees: DeferredFrees, turn: int) -> list[tuple[int, int, int]] | None:
    """Park `reqs` (their forward on this stage done): one device-to-host copy of every
    token their HostCopies lack. Their own device slots [P, L) (P: the tree-owned prefix,
    kv.cache_protected_len) and their tree locks are released once the copy has read them.
    Returns per request (L, tokens copied, P), or None, with nothing changed, when the host pool
    cannot take the tokens (the caller reserved them: another user filled it in between)."""
    r2t = sched.req_to_token_pool.req_to_token
    rows, known, lens, prefix = [], [], [], []
    for req in reqs:
        kv = req.kv
        L = kv.kv_committed_len
        assert L == kv.kv_allocated_len, (req.rid, L, kv.kv_allocated_len)
        ring = getattr(req, "pipemax_ring", None)
        k = ring.tokens if ring is not None else 0
        assert k <= L, (req.rid, k, L)
        rows.append(kv.req_pool_idx)
        known.append(k)
        lens.append(L)
        prefix.append(kv.cache_protected_len)
    n = sum(lens) - sum(known)
    host = compat.host_alloc(sched, n) if n else _NO_INDICES
    if host is None:
        return None
    copy = None
    if n:
        to_host, mine = gather_spans_each(r2t, rows, [(known, lens), (prefix, lens)])
        copy = compat.copy_to_host(sched, host, to_host)
    else:
        mine = gather_spans(r2t, rows, prefix, lens)
    frees.add(turn, copy, mine)
    out, at = [], 0
    for req, k, L, P in zip(reqs, known, lens, prefix):
        ring = getattr(req, "pipemax_ring", None)
        if ring is None:
            ring = req.pipemax_ring = HostCopy()
        c = L - k
        if c:
            ring.chunks.append(Span(host, at, at + c))
            ring.tokens += c
            ring.writer = copy
            at += c
        if req.lock is not None:
            frees.add(turn, copy, _NO_INDICES, req.lock)
            req.lock = None
        out.append((L, c, P))
    return out


def park_finish(req, tree_cache) -> None:
    """Free the row once no in-flight result can write under it."""
    tree_cache.req_to_token_pool.free(req)
    req.kv.mark_kv_released()


def release_ring(req, tree_cache) -> None:
    """Give a request's HostCopy slots back to the host pool (it finished, was aborted, or
    goes to SGLang's recompute). A copy still writing them is ordered before any later write
    to them: every device-to-host copy runs on the one D2H link, in order."""
    ring = getattr(req, "pipemax_ring", None)
    if ring is not None:
        req.pipemax_ring = None
        if ring.tokens:
            compat.host_pool_of(tree_cache).free(ring.indices())


def prefetch_many(wanted: list, sched,
                  reuse_min_tokens: int | None = None) -> tuple[list[Prefetch], list]:
    """Device slots for (target_turn, parked) pairs, in order, while they fit: one
    allocation for all when they do. Where the tree still holds a request's prompt on the
    device (it was unlocked at park, not yet evicted), that prefix is locked and reused, and
    only [P', L) is allocated and loaded: no eviction of the old copy for room to hold a new
    one, no bytes on the link for it. Matched before allocating, so the allocation's eviction
    cannot take it; tried only for a prompt of at least `reuse_min_tokens` (None: never),
    where the link time it saves exceeds what the match costs the scheduler
    (core.cost_model.prefix_reuse_min_tokens). Returns (prefetches, the pairs left parked)."""
    # at most L - 1 tokens: every prefetch loads something, so its turn fences on a copy
    # submitted after the match, on the stream HiCache's load-backs use (FIFO): a prefix the
    # tree marked on-device for an admission's load-back is filled before the rejoin reads it
    pres = [compat.match_device_prefix(sched, p.req, min(p.tree_len, p.kv_len - 1))
            if reuse_min_tokens is not None and p.tree_len >= reuse_min_tokens else None
            for _, p in wanted]
    made = [Prefetch(p, target) if m is None else
            Prefetch(p, target, prefix=m.indices, node=m.node, lock=m.lock)
            for (target, p), m in zip(wanted, pres)]
    sizes = [pf.parked.kv_len - pf.prefix.shape[0] for pf in made]
    slots = compat.alloc_device(sched, sum(sizes)) if wanted else None
    if slots is not None:
        at = 0
        for pf, n in zip(made, sizes):
            pf.slots = Span(slots, at, at + n)
            at += n
        return made, []
    for i, (pf, n) in enumerate(zip(made, sizes)):
        s = compat.alloc_device(sched, n)
        if s is None:
            for rest in made[i:]:
                sched.tree_cache.unlock(rest.lock)    # nothing reads them yet
                rest.lock = None
            return made[:i], wanted[i:]
        pf.slots = whole(s)
    return made, []


def _to_load(pf: Prefetch) -> bool:
    """Whether load_many still has to copy something of `pf` back (unwritten asks the same)."""
    return pf.load is None and pf.slots.size > 0


def unwritten(prefetches: list[Prefetch]) -> list:
    """The park copies, each once, still writing host slots that load_many(prefetches) would
    read; the caller waits for them before the load. The turn order leaves none (the
    module's invariants): one here is a break of it, which on a GPU would load torn KV.
    Each host copy's writer is forgotten once asked (done, or waited for by the caller)."""
    seen: set[int] = set()
    late = []
    for pf in filter(_to_load, prefetches):
        ring = pf.parked.req.pipemax_ring
        w = ring.writer
        if w is None:
            continue
        ring.writer = None
        if id(w) not in seen:
            seen.add(id(w))
            if not w.query():
                late.append(w)
    return late


def load_many(prefetches: list[Prefetch], sched):
    """One host-to-device copy for `prefetches` (on the link HiCache's loads use, after
    them: its finish covers them). Returns the copy (a fence, and its bytes) or None."""
    todo = [pf for pf in prefetches if _to_load(pf)]
    if not todo:
        return None
    spans = []
    for pf in todo:
        ring = pf.parked.req.pipemax_ring
        assert ring.tokens == pf.parked.kv_len, pf.parked.rid
        P = pf.prefix.shape[0]
        spans.extend(ring.past(P) if P else ring.chunks)
    host = gather(spans)
    copy = compat.copy_to_device(sched, host, gather([pf.slots for pf in todo]))
    # a loaded request's copy becomes one span (of `host`): a request that parks every turn
    # would otherwise bring one more span to every later load
    at = 0
    for pf in todo:
        pf.load = copy
        ring = pf.parked.req.pipemax_ring
        if not pf.prefix.shape[0] and len(ring.chunks) > 1:
            ring.chunks = [Span(host, at, at + ring.tokens)]
        at += pf.slots.size
    return copy


def abandon(pf: Prefetch, frees: DeferredFrees, turn: int) -> None:
    frees.add(turn, pf.load, pf.slots.tensor(), pf.lock)      # a load may still be writing them
    pf.slots, pf.prefix = _NO_SPAN, _NO_INDICES
    pf.lock = None


def rejoin(prefetches: list[Prefetch], scheduler) -> Any:
    """Rows and KV lengths for the prefetched requests; returns their decode ScheduleBatch.

    The caller has fenced on the loads. Each request holds its KV as a request admitted with a
    matched prefix does: the tree's prefix [0, P') under the prefetch's lock (protected and
    inserted length P'; P' = 0: no lock, it owns all), its own slots above: when it finishes,
    SGLang's own insert frees what duplicates the tree. The decode input (each request's last
    output token) is stashed under its new row by SGLang's own helper."""
    tree_cache = scheduler.tree_cache
    reqs = [pf.parked.req for pf in prefetches]
    for pf in prefetches:
        req = pf.parked.req
        L = pf.parked.kv_len
        assert len(req.origin_input_ids) + len(req.output_ids) - 1 == L, (req.rid, L)
        assert req.lock is None, req.rid
        req.last_node = pf.node if pf.lock is not None else compat.tree_root(tree_cache, req)
        req.lock, pf.lock = pf.lock, None
        req.prefix_len = pf.prefix.shape[0]
    rows = scheduler.req_to_token_pool.alloc(reqs)
    if rows is None:
        raise RuntimeError("pipemax: no free req_to_token rows for rejoining requests")
    lens = [pf.parked.kv_len for pf in prefetches]
    spans = []
    for pf in prefetches:
        if pf.prefix.shape[0]:
            spans.append(whole(pf.prefix))
        spans.append(pf.slots)
    write_rows(scheduler.req_to_token_pool, [r.kv.req_pool_idx for r in reqs], gather(spans), lens)
    for pf, L in zip(prefetches, lens):
        kv = pf.parked.req.kv
        kv.cache_protected_len = kv.cache_inserted_len = pf.prefix.shape[0]
        pf.slots, pf.prefix = _NO_SPAN, _NO_INDICES      # the request's now (SGLang frees its own)
        kv.kv_committed_len = kv.kv_allocated_len = L
    return compat.build_decode_batch(scheduler, reqs)
