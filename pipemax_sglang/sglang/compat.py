"""Accesses to SGLang 0.5.23 internals that have no public API, beside the pin.

Every SGLang symbol PipeMax relies on, here or elsewhere in the package (the scheduler
subclass's overrides, kv_moves.py's radix-tree calls), is recorded in seams.py and checked
against the pinned SGLang by `make check-seams` (table: docs/seams.md). When the pin moves
(version.py), run that first. Paths below are those of 0.5.23.

stage.py reaches SGLang's scheduler, batches and requests only through this module (and
kv_moves.py, the radix-tree moves), apart from a batch's `reqs` and a request's `rid` and
`finished()`, which every SGLang extension reads.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sglang.srt.runtime_context import get_memory, get_parallel, get_schedule

# HookRegistry targets (dotted paths resolved by sglang.srt.plugins.hook_registry).
SCHEDULER_CLASS = "sglang.srt.managers.scheduler.Scheduler"


class StageRanks(NamedTuple):
    pp_rank: int
    pp_size: int
    tp_rank: int
    tp_size: int
    pp_async_batch_depth: int


def stage_ranks() -> StageRanks:
    """This scheduler process's place in the pipeline (srt/runtime_context.py:1285)."""
    p = get_parallel()
    return StageRanks(p.pp_rank, p.pp_size, p.tp_rank, p.tp_size, p.pp_async_batch_depth)


def hierarchical_cache_enabled() -> bool:
    return bool(get_memory().enable_hierarchical_cache)


def build_decode_batch(scheduler, reqs):
    """A decode ScheduleBatch for requests whose rows and KV are in place; their last output
    token is stashed in the future map under the new rows (scheduler.py:3830, the HiSparse
    staging->decode helper, which does exactly this)."""
    batch = scheduler._build_hisparse_decode_batch(reqs)
    # merge_batch concatenates multimodal_inputs lists; the helper leaves None
    batch.multimodal_inputs = [r.multimodal_inputs for r in reqs]
    if batch.return_logprob:
        # the helper lists each prompt as the token ids to report logprobs of; a decode
        # batch built for extend lists what the request asked for (schedule_batch.py:3100)
        batch.token_ids_logprobs = [r.logprob.token_ids_logprob for r in reqs]
    restore_penalties(batch)
    return batch


# The penalizers of sampling/penaltylib (0.5.23), by class name: the tensor that holds a
# request's accumulated state, and how one output token changes it. A new batch prepares
# them empty (zeros, ones), as for a request that has generated nothing.
_PENALTY_STATE = {
    "BatchedFrequencyPenalizer": ("cumulated_frequency_penalties", "frequency_penalties", "add"),
    "BatchedPresencePenalizer": ("cumulated_presence_penalties", "presence_penalties", "set"),
    "BatchedRepetitionPenalizer": ("cumulated_repetition_penalties", "repetition_penalties", "set"),
    "BatchedMinNewTokensPenalizer": ("len_output_tokens", None, "count"),
}


_WARNED: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _WARNED:
        _WARNED.add(msg)
        import logging

        logging.getLogger(__name__).warning(msg)


def restore_penalties(batch) -> None:
    """Give a rebuilt decode batch's penalizers the state its requests had when parked.

    SGLang accumulates penalty state per decode step, in prepare_for_decode, from each
    request's last output token (schedule_batch.py:3715, cumulate_penalty_output_tokens):
    before the step that makes output token n + 1, tokens 1..n-1 are in and token n is
    added by that step. A rebuilt batch starts empty, so a rejoined request would forget
    its frequency, presence and repetition counts and its min_new_tokens progress (stock
    SGLang's retraction forgets them too: it re-prefills). Here tokens 1..n-1 go back in,
    as the steps that made them put them in; the next prepare_for_decode adds token n."""
    import torch

    orch = getattr(batch.sampling_info, "penalizer_orchestrator", None)
    if orch is None or not orch.is_required:
        return
    seen = [r.output_ids[:-1] for r in batch.reqs]
    if not any(seen):
        return
    for pen in orch.penalizers.values():
        if not pen.is_prepared():
            continue
        spec = _PENALTY_STATE.get(type(pen).__name__)
        if spec is None:       # a penalizer this pin does not have: degrade, never fail
            _warn_once(f"pipemax: {type(pen).__name__} state is not carried across a park; "
                       "outputs that use it may differ from stock SGLang's")
            continue
        state_name, value_name, how = spec
        state = getattr(pen, state_name)
        for i, toks in enumerate(seen):
            if not toks:
                continue
            if how == "count":
                state[i] += len(toks)
                continue
            idx = torch.tensor(toks, dtype=torch.int64, device=state.device)
            value = getattr(pen, value_name)[i]            # shape [1]
            if how == "add":
                state[i].scatter_add_(0, idx, value.expand(len(toks)))
            else:
                state[i].scatter_(0, idx, value.expand(len(toks)))


# ---- scheduler state PipeMax reads (scheduler.py, scheduler_pp_mixin.py) -----------------

def is_decider_rank() -> bool:
    """The rank that polls the tokenizer (and so can add to what every stage dispatches)."""
    p = get_parallel()
    return p.pp_rank == 0 and p.attn_tp_rank == 0 and p.attn_cp_rank == 0


def pp_mode(sched) -> bool:
    return get_parallel().pp_size > 1


def running_batches(sched) -> list:
    return list(sched.running_mbs) if pp_mode(sched) and hasattr(sched, "running_mbs") else [sched.running_batch]


def live_batch(sched, mb: int):
    return sched.running_mbs[mb] if pp_mode(sched) else sched.running_batch


def freeze_in_flight(sched, mb: int, batch) -> bool:
    """Before PipeMax filters a micro-batch whose result is still in flight (PP loop), give
    SGLang a forward-time snapshot to process that result against, as it does for PP with
    speculative decoding (scheduler_pp_mixin.py:60, :195). Returns whether it was in flight."""
    if not pp_mode(sched) or sched.mbs[mb] is not batch:
        return False
    snap = batch.copy()
    snap.req_pool_indices = batch.req_pool_indices.clone()
    snap.pipemax_snapshot = True
    sched.mbs[mb] = snap
    # The live batch's input ids are the launched step's. SGLang clears them on the batch it
    # processes the result against (scheduler_pp_mixin.py:1132), so that the next decode
    # reads the new tokens from the future map by req_pool_indices (overlap_utils.py:144);
    # that is the snapshot now, so clear them here too, or rows that stay would decode
    # their previous token again.
    batch.input_ids = None
    md = sched.mb_metadata[mb]
    if md is not None and md.fwd_batch is None:
        md.fwd_batch = snap
    return True


def settle_snapshot(batch) -> None:
    """After SGLang processed a result against a PipeMax snapshot, the snapshot stays in
    last_mbs (scheduler_pp_mixin.py:204) where, unlike a stock decode batch, nothing filters
    it: is_fully_idle (scheduler.py:5348) would then never see the server idle. Empty it:
    its live rows are in running_mbs; a snapshot is a decode batch, and last_batch is only
    merged when it is an extend (scheduler.py:3934). Only the empty filter is safe here:
    batch.copy() carries no seq_lens or sampling_info for a partial one to index."""
    if getattr(batch, "pipemax_snapshot", False):
        batch.filter_batch(keep_indices=[])


def row_cap(sched) -> int:
    cap = get_parallel().pp_max_micro_batch_size if pp_mode(sched) else None
    return int(cap or sched.max_running_requests)


def prefill_in_progress(sched) -> bool:
    """A chunked prefill is part-way: its next chunk is admitted at the next turn that
    admits (scheduler.py get_new_batch_prefill)."""
    return sched.chunked_req is not None


def device_tokens(sched) -> int:
    return int(sched.max_total_num_tokens)


def host_pool(sched):
    """The KV host pool (HiCache wraps its pools in a HostPoolGroup: its anchor is the KV)."""
    cc = getattr(sched.tree_cache, "cache_controller", None)
    if cc is None:
        return None
    pool = cc.mem_pool_host
    return pool.anchor_entry.host_pool if hasattr(pool, "anchor_entry") else pool


def host_pool_of(tree_cache):
    cc = tree_cache.cache_controller
    pool = cc.mem_pool_host
    return pool.anchor_entry.host_pool if hasattr(pool, "anchor_entry") else pool


def tree_root(tree_cache, req):
    """The root of the request's tree (a request that matched no prefix ends there)."""
    return tree_cache.root_node_handle(req.extra_key)


class DevicePrefix(NamedTuple):
    """The part of a parked request's KV the tree still holds on the device, locked."""
    length: int
    indices: Any            # device slots of tokens [0, length)
    node: Any               # the tree node the path ends at (the request's last_node)
    lock: Any               # TreeLock on it (tree_cache.unlock releases it)


def match_device_prefix(sched, req, tokens: int) -> DevicePrefix | None:
    """The longest device-resident tree prefix of req's first `tokens` tokens, locked so that
    eviction cannot take it; None when the tree holds none of it on the device. One walk of
    the tree (UnifiedRadixCache.match_prefix, with the radix key SGLang's own admission
    builds, mem_cache/common.py _req_radix_key), one lock; host-resident parts are ignored
    (the request's own host copy has them). Deterministic for equal trees, so every stage
    matches the same."""
    if tokens <= 0:
        return None
    from sglang.srt.mem_cache.base_prefix_cache import MatchPrefixParams
    from sglang.srt.mem_cache.radix_cache import RadixKey

    tc = sched.tree_cache
    ids = req.origin_input_ids
    ids = ids[:tokens] if tokens <= len(ids) else (ids + req.output_ids)[:tokens]
    res = tc.match_prefix(MatchPrefixParams(
        key=RadixKey(token_ids=ids, extra_key=req.extra_key, cache_salt=req.cache_salt)))
    n = int(res.device_prefix_len)
    if n <= 0:
        return None
    node = res.last_device_node       # a tree node: with req=None no session shortcut applies
    return DevicePrefix(n, tc.path_device_indices(node)[:n].long(), node, tc.lock(node))


def host_alloc(sched, tokens: int):
    """Host-pool slots for parked KV (int64 indices), or None when the pool is full."""
    return host_pool(sched).alloc(tokens)


def alloc_device(sched, tokens: int):
    """Device KV slots for rejoining KV, evicting the tree's unlocked cache as SGLang does
    before an allocation (mem_cache/common.py evict_from_tree_cache); None if they do not
    fit."""
    from sglang.srt.mem_cache.common import evict_from_tree_cache

    alloc = sched.token_to_kv_pool_allocator
    if alloc.available_size() < tokens:
        evict_from_tree_cache(sched.tree_cache, tokens)
        if alloc.available_size() < tokens:
            return None
    return alloc.alloc(tokens)


def _l2(sched, host_idx, dev_idx):
    from sglang.srt.mem_cache.l2_transfer import L2Transfer

    cc = sched.tree_cache.cache_controller
    h, d = cc.move_indices(host_idx, dev_idx)
    return cc, [L2Transfer(host_pool=host_pool(sched), device_pool=cc.mem_pool_device,
                           host_indices=h, device_indices=d)]


def _own(transfers, layers: int | None = None):
    """PipeMax's copies' index tensors, which no one writes again: the CPU copier reads
    them without a copy of its own, and a load of `layers` layers is one job (cpu_backend.
    owned_indices; not used on a GPU)."""
    from pipemax_sglang.sglang.cpu_backend import owned_indices

    return owned_indices(transfers[0].host_indices, transfers[0].device_indices, layers)


class KVCopy(NamedTuple):
    """A copy PipeMax submitted: what a turn fences on (as a HiCache ack) and its bytes."""
    finish_event: Any
    num_bytes: int

    def query(self) -> bool:
        return self.finish_event.query()

    def synchronize(self) -> None:
        self.finish_event.synchronize()


def copy_to_host(sched, host_idx, dev_idx) -> KVCopy:
    """One device-to-host copy of parked KV, every layer of this stage, on HiCache's D2H
    stream (on CPU the D2H copier, throttled like any write-through), as HiCache's
    write-through submits it (cache_controller.py:886 start_writing): behind the write fence (the forward that
    wrote the KV), with no ack in the tree's queue, since no tree node is involved."""
    cc, transfers = _l2(sched, host_idx, dev_idx)
    eng = cc.l2_transfer_engine
    if cc.write_fence_stream is not None:
        eng.device_to_host_stream.wait_stream(cc.write_fence_stream)
    with _own(transfers):
        done = eng.submit_device_to_host(transfers)
    return KVCopy(done.finish_event, len(dev_idx) * host_pool(sched).get_size_per_token())


def copy_to_device(sched, host_idx, dev_idx) -> KVCopy:
    """One host-to-device copy on HiCache's H2D stream (on CPU the H2D copier), behind the
    load fence as HiCache's load-back (cache_controller.py:1024 start_loading), without its
    per-layer counter: a turn fences on the whole copy before its forward."""
    cc, transfers = _l2(sched, host_idx, dev_idx)
    eng = cc.l2_transfer_engine
    if cc.load_fence_stream is not None:
        eng.host_to_device_stream.wait_stream(cc.load_fence_stream)
    with _own(transfers, cc.transfer_layer_id_max):
        done = eng.submit_host_to_device(transfers, transfer_layer_id_max=cc.transfer_layer_id_max)
    return KVCopy(done.finish_event, len(dev_idx) * host_pool(sched).get_size_per_token())


def host_free_tokens(sched) -> int:
    pool = host_pool(sched)
    return 0 if pool is None else int(pool.available_size())


def reserve_host(sched, tokens: int) -> bool:
    """Whether the host tier can take `tokens` more KV tokens, after reclaiming cold host-only
    cache for them as SGLang's own write path does when a backup finds the pool full
    (unified_radix_cache.py:1745-1749, evict_host). Free slots alone are the wrong measure:
    under load the host pool fills with host-only copies of finished requests' prefixes,
    which SGLang frees only on demand, so `available_size()` sits near zero while almost all
    of it is reclaimable. Host-locked (parked) paths are never reclaimed. Deterministic for
    equal trees (the eviction order is a logical clock), so every stage reclaims the same."""
    pool = host_pool(sched)
    if pool is None:
        return False
    short = tokens - int(pool.available_size())
    if short > 0:
        sched.tree_cache.evict_host(short)
    return int(pool.available_size()) >= tokens


def kv_bytes_per_token(sched) -> int:
    """This stage's KV bytes per token (its layers only)."""
    pool = host_pool(sched)
    return int(pool.get_size_per_token()) if pool is not None else 0


def binding_kv_bytes_per_token(sched) -> int:
    """The largest per-token KV of any stage: a plan sized for it fits every stage."""
    return max(kv_bytes_per_token(sched), model_kv_bytes_per_token(sched) or 0)


def model_kv_bytes_per_token(sched) -> int | None:
    """The largest per-stage KV a token, from the model's configuration: the same on every
    stage. None where the configuration does not say."""
    from pipemax_sglang.core import ModelKVConfig, stage_kv_bytes_per_token

    try:
        cfg = sched.model_config.hf_text_config.to_dict()
        itemsize = sched.token_to_kv_pool_allocator.get_kvcache().dtype.itemsize
        dtype = {1: "float8_e4m3fn", 2: "bfloat16", 4: "float32"}[itemsize]
        per_stage = stage_kv_bytes_per_token(ModelKVConfig.from_hf_config(cfg, kv_dtype=dtype),
                                             get_parallel().pp_size, get_parallel().tp_size)
        return max(per_stage)
    except (KeyError, ValueError, AttributeError):
        return None


def link_bytes_per_s() -> float | None:
    """The host link's H2D rate: a datasheet profile for a known GPU, else None (CPU)."""
    import torch

    if not torch.cuda.is_available():
        return None
    from pipemax_sglang.core import PROFILES

    name = torch.cuda.get_device_name().lower()
    for key, profile in PROFILES.items():
        if key.replace("-", " ").split()[0] in name:
            return profile.h2d_gbps * 1e9
    return 25e9


def is_aborting(req) -> bool:
    return req.to_finish is not None


def wait_loads(sched, copies) -> None:
    """The prefetch fence (runtime/fences.py): the forward comes after `copies`. Loads issued
    later (for later turns) run on beside the forward."""
    import torch

    from pipemax_sglang.runtime.fences import fence_loads

    events = [c.finish_event for c in copies]
    if events:
        fence_loads(events, getattr(sched, "forward_stream", None), torch.cuda.is_available())


def writes_pending(tree_cache) -> bool:
    return getattr(tree_cache, "cache_controller", None) is not None and bool(tree_cache.ongoing_write_through)


def order_park_after_forward(sched, mb: int) -> None:
    """Before parking micro-batch mb's requests (runtime/fences.py)."""
    import torch

    from pipemax_sglang.runtime.fences import order_after_forward
    from pipemax_sglang.sglang.platform import on_gpu

    if on_gpu():
        events = getattr(sched, "pipemax_launch_events", {})
        order_after_forward(events.get(mb), torch.cuda.current_stream(), True)


def _context(req) -> int:
    return len(req.origin_input_ids) + len(req.output_ids)


def contexts(reqs) -> tuple[int, ...]:
    """KV tokens of each request: prompt and generated so far."""
    return tuple(_context(r) for r in reqs)


def next_residents(plan, parked_rids) -> tuple[int, ...]:
    """Context lengths of the micro-batch's members that stay on the device for its next
    turn: the running batch minus what is parked, plus a prefill batch that joins it."""
    parked = set(parked_rids)
    out = [_context(r) for r in plan.running_batch.reqs if r.rid not in parked]
    batch = plan.batch_to_run
    if batch is not None and batch is not plan.running_batch and batch.forward_mode.is_extend():
        out += [_context(r) for r in batch.reqs]
    return tuple(out)


def step_shape(batch) -> tuple[str, int, int] | None:
    """("decode", rows, context) or ("prefill", rows, new tokens) of a launched batch (a
    chunked prefill's every chunk counts as a prefill); None for anything else."""
    if batch is None:
        return None
    if batch.forward_mode.is_decode():
        return "decode", batch.batch_size(), int(batch.seq_lens_sum)
    if batch.forward_mode.is_extend() and batch.extend_num_tokens:
        return "prefill", batch.batch_size(), int(batch.extend_num_tokens)
    return None


def mb_shapes(sched, m: int, mb: int, plan) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Rows and context tokens of each of m micro-batches' running batch. Inside
    get_next_batch_to_run micro-batch mb's is the plan's: SGLang stores it in running_mbs
    only after the call returns (scheduler_pp_mixin.py:153), and after a rejoin into an
    empty micro-batch it is a new object."""
    batches = (list(running_batches(sched)) + [None] * m)[:m]
    batches[mb] = plan.running_batch
    reqs = [b.reqs if b is not None else [] for b in batches]
    return tuple(len(r) for r in reqs), tuple(sum(_context(x) for x in r) for r in reqs)


def send_abort(sched, req, recv_req) -> None:
    """Tell the tokenizer a request ended by abort (as SGLang does for queued requests)."""
    from sglang.srt.managers.scheduler import _make_abort_req

    reason = recv_req.finished_reason if recv_req is not None else None
    if reason is None and req.to_finish is not None:
        reason = req.to_finish.to_json()
    sched.send_abort_output(_make_abort_req(req, finished_reason=reason), req)


RELEASE_KV_CACHE = "sglang.srt.mem_cache.common.release_kv_cache"


def reap_writes(tree_cache) -> None:
    """Finish every queued write-through and release its write lock (the blocking branch of
    unified_radix_cache.writing_check, :3472). Same on every rank: it drains all acks."""
    if getattr(tree_cache, "cache_controller", None) is not None and tree_cache.ongoing_write_through:
        tree_cache.writing_check(write_back=True)


def metrics_enabled() -> bool:
    from sglang.srt.runtime_context import get_observability

    return bool(get_observability().enable_metrics)


def pool_usage(sched) -> dict:
    """Device and host KV pools, in tokens: what an idle server must give back."""
    tc = sched.tree_cache
    host = host_pool(sched)
    return {
        "device_total": device_tokens(sched),
        "device_available": int(sched.token_to_kv_pool_allocator.available_size()),
        "device_evictable": int(tc.evictable_size()),
        "device_protected": int(tc.protected_size()),
        "host_total": int(host.size) if host is not None else 0,
        "host_available": host_free_tokens(sched),
    }


def retraction_order(batch) -> list[int]:
    """Indices in SGLang's decode retraction order, the last retracted first
    (schedule_batch.py:3453 retract_decode pops from the end)."""
    return list(batch._get_decode_retraction_order(batch.reqs))


def retraction_by_priority() -> bool:
    """The user asked SGLang to retract by request priority (--retraction-policy priority)."""
    return get_schedule().retraction_policy == "priority"


def remaining_bound(req) -> int:
    """Tokens a request may still generate: max_new_tokens less what it has (an upper
    bound: a stop token may end it sooner)."""
    limit = req.sampling_params.max_new_tokens
    return (limit if limit is not None else 1 << 30) - len(req.output_ids)


def retract_for_recompute(sched, batch, idx: int, remaining: int) -> None:
    """SGLang's retraction of one decode request (schedule_batch.py:3488, then
    scheduler.py:4539): free its KV without a tree insert, reset it, queue it again."""
    req = batch.reqs[idx]
    batch.release_req(idx, remaining)
    sched._add_request_to_queue(req, is_retracted=True)


def requeue_for_recompute(sched, req) -> None:
    """SGLang's own retraction path for one request (schedule_batch.py:2389-2394)."""
    req.reset_for_retract()
    sched._add_request_to_queue(req, is_retracted=True)


# ---- the main process's side: what run_batch drives in process -----------------------------

def openai_routes(engine) -> dict[str, tuple[Any, type]]:
    """url -> (SGLang's OpenAI serving object, the request model its route parses), built as
    the HTTP server builds them at start-up (entrypoints/http_server.py:333): same classes, same
    tokenizer and template managers, so a batch line is answered exactly as the route would."""
    from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest, CompletionRequest
    from sglang.srt.entrypoints.openai.serving_completions import OpenAIServingCompletion

    tm, templates = engine.tokenizer_manager, engine.template_manager
    return {
        "/v1/completions": (OpenAIServingCompletion(tm, templates), CompletionRequest),
        "/v1/chat/completions": (tm.serving_chat_class(tm, templates), ChatCompletionRequest),
    }


def start_tokenizer_loop(engine) -> None:
    """Start the TokenizerManager's receive loop now rather than on the first request
    (managers/tokenizer_manager.py:2440): it installs SGLang's SIGTERM/SIGQUIT handlers on the
    event loop, and a caller that wants its own must install them after these."""
    engine.tokenizer_manager.auto_create_handle_loop()


# ---- the batch and scheduler state stage.py reads and changes (managers/schedule_batch.py,
# managers/scheduler.py); each recorded in seams.py ------------------------------------------
def tree_cache(sched):
    """The radix tree (HiRadixCache with the host tier) holding every KV token."""
    return sched.tree_cache


def kv_len(req) -> int:
    """KV tokens the request has committed on the device (req.kv, schedule_batch.py)."""
    return req.kv.kv_committed_len


def waiting_count(sched) -> int:
    """Requests SGLang has not admitted yet (its waiting queue)."""
    return len(sched.waiting_queue)


def decode_fits(batch, keep: list[int] | None = None) -> bool:
    """Whether the next decode step of `batch` (of its rows `keep`, if given) fits the pool;
    SGLang retracts where it does not (ScheduleBatch.check_decode_mem)."""
    return batch.check_decode_mem() if keep is None else batch.check_decode_mem(selected_indices=keep)


def next_prompt_short(sched) -> bool:
    """Whether the first waiting request's KV (its prompt, and what it generated if it was
    retracted) exceeds the device's free and evictable slots: SGLang cannot admit it without
    more room. Equal on every stage at the same loop point (same pools, same queue)."""
    if not sched.waiting_queue:
        return False
    req = sched.waiting_queue[0]
    need = len(req.origin_input_ids) + len(req.output_ids)
    room = sched.token_to_kv_pool_allocator.available_size() + sched.tree_cache.evictable_size()
    return int(room) < need


def decode_shortfall(batch, keep: list[int]) -> int:
    """Tokens the next decode step of rows `keep` lacks, after decode_fits evicted what it
    could (check_decode_mem: new_tokens_required_next_decode against the allocator's
    available size, schedule_batch.py:3432, allocator/base.py:171)."""
    need = batch.new_tokens_required_next_decode(selected_indices=keep)
    return max(0, int(need) - int(batch.token_to_kv_pool_allocator.available_size()))


def keep_rows(batch, keep: list[int]) -> None:
    """Leave only rows `keep` (indices into batch.reqs) in the batch."""
    batch.filter_batch(keep_indices=keep)


def merge_rows(running, joining):
    """The running batch with `joining`'s rows added (it may be empty: then `joining`)."""
    if running.is_empty():
        return joining
    running.merge_batch(joining)
    return running


def decode_rows(batch) -> int | None:
    """Rows of a decode batch; None for any other batch (prefill, idle) or none."""
    if batch is None or not batch.forward_mode.is_decode():
        return None
    return batch.batch_size()


def mode_name(batch) -> str | None:
    return None if batch is None else str(batch.forward_mode.name)
