"""The four KV moves of PipeMax on SGLang's hierarchical radix cache (docs/design.md section 3).

    park_begin(req)    after the request's forward on this stage: its KV [0, L) becomes radix
                       nodes (checkpoint), queued for write-through to host, and unlocked, so
                       the device copy is evictable; a host lock pins the host copy. The row
                       stays: an in-flight result may still stash a token under it.
    park_finish(req)   once that result is processed: the row is freed. The request holds no
                       device KV now; only the tree (device and/or host) has it.
    prefetch(req, L)   before its next turn: match its path, start a load-back of the
                       host-only nodes (HiCache's H2D, asynchronous), lock the path so nothing
                       evicts it before the turn.
    rejoin(reqs)       at the turn, after the loads landed: a fresh row pointing at the path,
                       the KV lengths restored, and a decode batch to merge. Nothing recomputed.

Invariants kept here, and why they hold:
- No device slot is freed before its D2H copy finished: parked nodes become evictable only
  when HiCache reaps their write-through ack (writing_check), and eviction is HiCache's own.
- No host copy is lost while parked: the host lock (inc_host_lock_ref) keeps host eviction
  away from the parked path until rejoin or finish.
- A request is rejoined only with all L tokens on the device (prefix_len == L), else it stays
  parked; `load_back_threshold` is set to 1 so that short host tails are loaded too.
- page_size 1 only (config check): with larger pages the unaligned tail is not in the tree.

SGLang 0.5.23 call sequence measured in docs/sglang-internals.md section 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import logging

import torch

from sglang.srt.mem_cache.base_prefix_cache import InitLoadBackParams
from sglang.srt.mem_cache.common import match_kv_cache

from pipemax_sglang import env
from pipemax_sglang.sglang import compat

logger = logging.getLogger(__name__)


@dataclass
class ParkedReq:
    req: Any                 # sglang Req
    kv_len: int              # L: tokens of KV the tree holds for it (origin + output at park)
    parked_turn: int
    arrival: int
    ready: bool = False      # in-flight result processed and row freed
    host_lock: Any = None    # (node, DecLockRefParams) for dec_host_lock_ref
    rounds_waited: int = 0
    owner: Any = None        # the PipeMaxStage (the release hook reaches it through the Req)

    @property
    def rid(self) -> str:
        return self.req.rid


@dataclass
class Prefetch:
    parked: ParkedReq
    node: Any                # deepest node of the matched path (locked)
    lock: Any                # TreeLock
    host_tokens: int         # tokens loaded back from host (0: all on device)
    target_turn: int


def park_begin(req, tree_cache) -> tuple[int, int, Any]:
    """Checkpoint the request's KV into the tree and unlock it.
    Returns (L, tokens newly written to host, host lock)."""
    kv = req.kv
    L = kv.kv_committed_len
    assert L == kv.kv_allocated_len, (req.rid, L, kv.kv_allocated_len)
    new_tokens = L - kv.cache_inserted_len
    req.refresh_fill_ids()
    tree_cache.checkpoint(req, up_to=L)
    assert kv.cache_protected_len == L, (req.rid, kv.cache_protected_len, L)
    tree_cache.unlock(req.lock)
    req.lock = None
    node = req.last_node
    receipt = tree_cache.inc_host_lock_ref(node).to_dec_params()
    return L, new_tokens, (node, receipt)


def park_finish(req, tree_cache) -> None:
    """Free the row once no in-flight result can write under it."""
    tree_cache.req_to_token_pool.free(req)
    req.kv.mark_kv_released()


def release_host_lock(parked: ParkedReq, tree_cache) -> None:
    if parked.host_lock is not None:
        node, receipt = parked.host_lock
        tree_cache.dec_host_lock_ref(node, receipt)
        parked.host_lock = None


def prefetch(parked: ParkedReq, tree_cache, target_turn: int) -> tuple[Prefetch | None, bool]:
    """Start bringing the path back. Returns (prefetch, lost): (None, False) if the device
    cannot take it now (it stays parked); (None, True) if the tree no longer holds all of
    its KV on device or host."""
    req = parked.req
    L = parked.kv_len
    tokens = req.origin_input_ids + req.output_ids[: L - len(req.origin_input_ids)]
    match_kv_cache(req, tree_cache, token_ids=tokens)
    loaded = 0
    if req.host_hit_length > 0:
        n, node = tree_cache.init_load_back(
            InitLoadBackParams(req.best_match_node, req.host_hit_length, req=req)
        )
        req.last_node = node
        req.prefix_len += n
        loaded = n
    if req.prefix_len != L:
        lost = req.prefix_len - loaded + req.host_hit_length < L
        if env.debug():
            logger.warning(
                "pipemax prefetch short %s: L=%d prefix=%d host_hit=%d loaded=%d lost=%s", req.rid[:6], L,
                req.prefix_len, req.host_hit_length, loaded, lost)
        return None, lost
    lock = tree_cache.lock(req.last_node)
    return Prefetch(parked, req.last_node, lock, loaded, target_turn), False


def abandon(pf: Prefetch, tree_cache) -> None:
    tree_cache.unlock(pf.lock)


def rejoin(prefetches: list[Prefetch], scheduler) -> Any:
    """Rows and KV lengths for the prefetched requests; returns their decode ScheduleBatch.

    The caller has fenced on the loads. The decode input (each request's last output token)
    is stashed under its new row by SGLang's own helper."""
    tree_cache = scheduler.tree_cache
    reqs = [pf.parked.req for pf in prefetches]
    for pf in prefetches:
        req = pf.parked.req
        L = pf.parked.kv_len
        assert len(req.origin_input_ids) + len(req.output_ids) - 1 == L, (req.rid, L)
        req.last_node = pf.node
        req.prefix_len = L
        req.lock = pf.lock
    rows = scheduler.req_to_token_pool.alloc(reqs)
    if rows is None:
        raise RuntimeError("pipemax: no free req_to_token rows for rejoining requests")
    for pf in prefetches:
        req = pf.parked.req
        L = pf.parked.kv_len
        idx = tree_cache.prefix_device_indices(req)
        scheduler.req_to_token_pool.write((req.kv.req_pool_idx, slice(0, L)), idx.to(torch.int32))
        kv = req.kv
        kv.cache_protected_len = kv.cache_inserted_len = kv.kv_committed_len = kv.kv_allocated_len = L
    return compat.build_decode_batch(scheduler, reqs)
