"""The record of every SGLang 0.5.23 internal PipeMax relies on, checked against the pin.

SGLang has no public API for what PipeMax does inside its scheduler: overriding steps of the
PP loop, moving a request's KV between the radix tree's device and host tiers, rebuilding a
decode batch. Each such reliance is a seam, listed here once: the SGLang symbol, what kind
of thing it must be, the parameters we pass it, why we need it, where our code uses it and
which integration test exercises it. `check()` imports the pinned SGLang and verifies every
seam still exists in the shape we use, in seconds, without starting an engine:

    make check-seams                      (python -m pipemax_sglang.sglang.seams --check)
    python -m pipemax_sglang.sglang.seams --markdown > docs/seams.md

It is the first thing to run against a new SGLang release (version.py moves the pin); the
fast tier runs it (tests/test_seams.py) and requires docs/seams.md to be this table.

Kinds:
    def      a function or method: resolvable, callable, and (when listed) accepting the
             named parameters
    attr     an attribute set on instances: a class attribute, a dataclass field, or
             assigned as self.<name> in the source of a class in the owner's MRO
    class    a class
    override a method PipeMaxScheduler (scheduler.py) overrides: must exist on the base
             with the parameters listed, since SGLang calls it by name
    hook     a HookRegistry target (a dotted path SGLang's plugin system patches)
    object   a module-level object of any type
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import sys
import textwrap
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Seam:
    target: str                  # "module:Qualified.name"
    kind: str                    # def | attr | class | override | hook
    why: str
    users: str                   # our modules that rely on it
    test: str                    # the integration test that exercises it
    params: tuple[str, ...] = ()


SCHED = "sglang.srt.managers.scheduler:Scheduler"
BATCH = "sglang.srt.managers.schedule_batch:ScheduleBatch"
REQ = "sglang.srt.managers.schedule_batch:Req"
TREE = "sglang.srt.mem_cache.unified_radix_cache:UnifiedRadixCache"
CC = "sglang.srt.managers.cache_controller:HiCacheController"
PARK = "tests/integration/test_pipemax_parking.py"
SERVER = "tests/integration/test_pipemax_server.py"
HICACHE = "tests/integration/test_hicache.py"

SEAMS: tuple[Seam, ...] = (
    # ---- the scheduler subclass: SGLang calls these by name -------------------------------
    Seam(f"{SCHED}.init_request_dispatcher", "override", "add the dispatch of relayed plans", "scheduler.py", PARK),
    Seam(f"{SCHED}._poll_timeout_aborts", "override", "stage 0's plans ride the list of aborts it relays down the pipeline", "scheduler.py", PARK),
    Seam(f"{SCHED}.ingest_requests", "override", "apply relayed plans (parks; overdue prefetches) where every stage ingests", "scheduler.py, stage.py", PARK),
    Seam(f"{SCHED}.get_next_batch_to_run", "override", "merge rejoins before SGLang builds a batch; decide after", "scheduler.py, stage.py", PARK, ("running_batch", "last_batch")),
    Seam(f"{SCHED}.run_batch", "override", "issue the next turn's prefetches just before the forward; time each forward (the decider's step-cost model)", "scheduler.py", PARK, ("batch",)),
    Seam(f"{SCHED}._pp_launch_batch", "override", "record the launch (fences order parks after it on CUDA)", "scheduler.py", PARK, ("mb_id",)),
    Seam(f"{SCHED}._pp_process_batch_result", "override", "free a parked request's row once its in-flight result is in", "scheduler.py, stage.py", PARK, ("batch", "output_result")),
    Seam(f"{SCHED}.update_running_batch", "override", "park in core.park_order where a decode step does not fit, before SGLang retracts", "scheduler.py, stage.py", "tests/load/test_soak.py", ("batch",)),
    Seam(f"{SCHED}._should_defer_prefill", "override", "the admission rule (core.admission)", "scheduler.py", PARK, ("running_batch",)),
    Seam(f"{SCHED}.is_fully_idle", "override", "parked requests are work", "scheduler.py", SERVER),
    Seam(f"{SCHED}.abort_request", "override", "aborts reach parked and prefetching requests", "scheduler.py, stage.py", SERVER, ("recv_req",)),
    # ---- scheduler state read or called ----------------------------------------------------
    Seam(f"{SCHED}.tree_cache", "attr", "the radix tree that holds every KV token, device and host", "compat.py, kv_moves.py", PARK),
    Seam(f"{SCHED}.waiting_queue", "attr", "requests not admitted yet (decider view, retraction, hand-back)", "compat.py", PARK),
    Seam(f"{SCHED}.running_batch", "attr", "the running batch when pp_size is 1", "compat.py", PARK),
    Seam(f"{SCHED}.running_mbs", "attr", "each micro-batch's running batch in the PP loop", "compat.py", PARK),
    Seam(f"{SCHED}.req_to_token_pool", "attr", "rows for rejoining requests", "kv_moves.py", PARK),
    Seam("sglang.srt.mem_cache.memory_pool:ReqToTokenPool.req_to_token", "attr", "each row's KV slot indices (read by a park's copy; a rejoin writes them back, flat for many rows)", "kv_moves.py", PARK),
    Seam("sglang.srt.mem_cache.memory_pool:ReqToTokenPool.write", "def", "a rejoined row's KV slot indices", "kv_moves.py", PARK, ("indices", "values")),
    Seam("sglang.srt.mem_cache.memory_pool:ReqToTokenPool.alloc", "def", "rows for rejoining requests", "kv_moves.py", PARK, ("reqs",)),
    Seam("sglang.srt.mem_cache.memory_pool:ReqToTokenPool.free", "def", "a parked request's row", "kv_moves.py", PARK),
    Seam(f"{SCHED}.token_to_kv_pool_allocator", "attr", "device KV room", "compat.py", PARK),
    Seam(f"{SCHED}.max_total_num_tokens", "attr", "D, the device KV pool in tokens", "compat.py, scheduler.py", PARK),
    Seam(f"{SCHED}.max_running_requests", "attr", "the row cap", "compat.py", PARK),
    Seam(f"{SCHED}.chunked_req", "attr", "a chunked prefill in progress holds admission", "compat.py", PARK),
    Seam(f"{SCHED}.model_config", "attr", "KV bytes per token of this stage's layers", "compat.py", PARK),
    Seam(f"{SCHED}._add_request_to_queue", "def", "hand a request back to SGLang's queue (retract, watchdog)", "compat.py", "tests/integration/test_pipemax_server.py", ("req",)),
    Seam(f"{SCHED}._build_hisparse_decode_batch", "def", "a decode batch for requests whose rows and KV are in place (rejoin)", "compat.py", PARK, ("reqs",)),
    Seam("sglang.srt.managers.scheduler:_make_abort_req", "def", "tell the tokenizer a parked request was aborted", "compat.py", SERVER),
    # ---- requests and batches ---------------------------------------------------------------
    Seam(f"{REQ}.rid", "attr", "request identity across stages", "stage.py, compat.py", PARK),
    Seam(f"{REQ}.origin_input_ids", "attr", "prompt tokens (context length, the tree path)", "compat.py, kv_moves.py", PARK),
    Seam(f"{REQ}.output_ids", "attr", "generated tokens (context length, the tree path)", "compat.py, kv_moves.py", PARK),
    Seam(f"{REQ}.kv", "attr", "the request's KV bookkeeping (committed, allocated, inserted, protected lengths)", "compat.py, kv_moves.py", PARK),
    Seam(f"{REQ}.last_node", "attr", "a rejoined request ends at its relocked prompt's node, or at the root (it owns all its KV)", "kv_moves.py", PARK),
    Seam(f"{REQ}.prefix_len", "attr", "the relocked prompt's length at rejoin (0: none)", "kv_moves.py", PARK),
    Seam(f"{REQ}.lock", "attr", "the request's tree lock (released once its park's copy has read the prefix; the relocked prompt's at rejoin)", "kv_moves.py", PARK),
    Seam(f"{REQ}.extra_key", "attr", "a prompt's tree key (match at rejoin)", "compat.py", PARK),
    Seam(f"{REQ}.cache_salt", "attr", "a prompt's tree key (match at rejoin)", "compat.py", PARK),
    Seam(f"{REQ}.to_finish", "attr", "an abort is pending", "compat.py", SERVER),
    Seam(f"{REQ}.finished", "def", "finished requests are not parked", "stage.py", PARK),
    Seam(f"{REQ}.reset_for_retract", "def", "retract for recompute (the hand-back path)", "compat.py", "tests/load/test_soak.py"),
    Seam(f"{BATCH}.reqs", "attr", "members of a batch", "stage.py, compat.py", PARK),
    Seam(f"{BATCH}.forward_mode", "attr", "decode or extend", "compat.py", PARK),
    Seam(f"{BATCH}.seq_lens_sum", "attr", "a decode step's context (step-cost model)", "compat.py", PARK),
    Seam(f"{BATCH}.extend_num_tokens", "attr", "a prefill step's new tokens", "compat.py", PARK),
    Seam(f"{BATCH}.multimodal_inputs", "attr", "merge_batch concatenates it; the rebuilt batch needs a list", "compat.py", PARK),
    Seam(f"{BATCH}.batch_size", "def", "rows of a batch", "compat.py", PARK),
    Seam(f"{BATCH}.filter_batch", "def", "take parked rows out of a batch", "compat.py", PARK),
    Seam(f"{BATCH}.merge_batch", "def", "put rejoined rows into a batch", "compat.py", PARK, ("other",)),
    Seam(f"{BATCH}.is_empty", "def", "an empty micro-batch takes the rejoin batch whole", "compat.py", PARK),
    Seam(f"{BATCH}.check_decode_mem", "def", "whether a decode step fits (park before SGLang retracts)", "compat.py", "tests/load/test_soak.py"),
    Seam(f"{BATCH}.new_tokens_required_next_decode", "def", "a decode step's shortfall (how many to park at once)", "compat.py", "tests/load/test_soak.py", ("selected_indices",)),
    Seam("sglang.srt.mem_cache.allocator.base:BaseTokenToKVPoolAllocator.available_size", "def", "free device slots (a step's shortfall, a waiting prompt's room, a rejoin's)", "compat.py", PARK),
    Seam("sglang.srt.mem_cache.allocator.base:BaseTokenToKVPoolAllocator.alloc", "def", "device slots for rejoining KV", "compat.py", PARK, ("need_size",)),
    Seam("sglang.srt.mem_cache.allocator.base:BaseTokenToKVPoolAllocator.free", "def", "a parked request's device slots, after its copy", "kv_moves.py", PARK, ("free_index",)),
    Seam(f"{BATCH}.token_to_kv_pool_allocator", "attr", "the device pool a decode step allocates from", "compat.py", "tests/load/test_soak.py"),
    Seam(f"{BATCH}.release_req", "def", "free a retracted request's rows and KV", "compat.py", "tests/load/test_soak.py"),
    Seam(f"{BATCH}._get_decode_retraction_order", "def", "SGLang's retraction order (core.park_order starts from it)", "compat.py", "tests/load/test_soak.py"),
    # ---- per-request sampling state a rejoin restores (compat.restore_penalties) ----------------
    Seam(f"{BATCH}.sampling_info", "attr", "the rebuilt batch's sampling state", "compat.py", "tests/integration/test_sampling_parity.py"),
    Seam(f"{BATCH}.token_ids_logprobs", "attr", "the logprob token ids each request asked for", "compat.py", "tests/integration/test_sampling_parity.py"),
    Seam(f"{BATCH}.return_logprob", "attr", "whether the batch returns logprobs", "compat.py", "tests/integration/test_sampling_parity.py"),
    Seam(f"{REQ}.logprob", "attr", "a request's logprob settings", "compat.py", "tests/integration/test_sampling_parity.py"),
    Seam("sglang.srt.sampling.sampling_batch_info:SamplingBatchInfo.penalizer_orchestrator", "attr", "the penalizers of a batch", "compat.py", "tests/integration/test_sampling_parity.py"),
    Seam("sglang.srt.sampling.penaltylib.orchestrator:BatchedPenalizerOrchestrator.penalizers", "attr", "each penalizer's state", "compat.py", "tests/integration/test_sampling_parity.py"),
    Seam("sglang.srt.sampling.penaltylib.orchestrator:BatchedPenalizerOrchestrator.is_required", "attr", "whether any request uses a penalty", "compat.py", "tests/integration/test_sampling_parity.py"),
    Seam("sglang.srt.sampling.penaltylib.orchestrator:_BatchedPenalizer.is_prepared", "def", "only prepared penalizers hold state", "compat.py", "tests/integration/test_sampling_parity.py"),
    Seam("sglang.srt.sampling.penaltylib.frequency_penalty:BatchedFrequencyPenalizer.cumulated_frequency_penalties", "attr", "frequency counts x penalty, added per output token", "compat.py", "tests/integration/test_sampling_parity.py"),
    Seam("sglang.srt.sampling.penaltylib.frequency_penalty:BatchedFrequencyPenalizer.frequency_penalties", "attr", "each row's penalty", "compat.py", "tests/integration/test_sampling_parity.py"),
    Seam("sglang.srt.sampling.penaltylib.presence_penalty:BatchedPresencePenalizer.cumulated_presence_penalties", "attr", "presence, set per output token", "compat.py", "tests/integration/test_sampling_parity.py"),
    Seam("sglang.srt.sampling.penaltylib.presence_penalty:BatchedPresencePenalizer.presence_penalties", "attr", "each row's penalty", "compat.py", "tests/integration/test_sampling_parity.py"),
    Seam("sglang.srt.sampling.penaltylib.repetition_penalty:BatchedRepetitionPenalizer.cumulated_repetition_penalties", "attr", "repetition scale, set per output token", "compat.py", "tests/integration/test_sampling_parity.py"),
    Seam("sglang.srt.sampling.penaltylib.repetition_penalty:BatchedRepetitionPenalizer.repetition_penalties", "attr", "each row's penalty", "compat.py", "tests/integration/test_sampling_parity.py"),
    Seam("sglang.srt.sampling.penaltylib.min_new_tokens:BatchedMinNewTokensPenalizer.len_output_tokens", "attr", "min_new_tokens progress", "compat.py", "tests/integration/test_sampling_parity.py"),
    Seam("sglang.srt.managers.schedule_batch:ScheduleBatch.cumulate_penalty_output_tokens", "def", "adds the last output token at each decode step (restore puts back all but it)", "compat.py", "tests/integration/test_sampling_parity.py"),
    # ---- the radix tree and HiCache -----------------------------------------------------------
    Seam(f"{TREE}.unlock", "def", "let a parked request's prompt be evicted from the device", "kv_moves.py", PARK),
    Seam(f"{TREE}.match_prefix", "def", "whether the tree still holds a parked prompt on the device", "compat.py", PARK, ("params",)),
    Seam(f"{TREE}.lock", "def", "hold a rejoining request's prompt on the device", "compat.py", PARK, ("node_id",)),
    Seam(f"{TREE}.path_device_indices", "def", "a rejoining request's prompt slots", "compat.py", PARK, ("node",)),
    Seam("sglang.srt.mem_cache.base_prefix_cache:MatchPrefixParams", "class", "a prompt match's parameters", "compat.py", PARK),
    Seam("sglang.srt.mem_cache.radix_cache:RadixKey", "class", "a prompt's key (tokens, extra key, salt)", "compat.py", PARK),
    Seam(f"{TREE}.root_node_handle", "def", "where a rejoined request's path ends", "compat.py", PARK, ("extra_key",)),
    Seam(f"{TREE}.evict_host", "def", "make host room from reclaimable host-only cache", "compat.py", "tests/load/test_soak.py"),
    Seam(f"{TREE}.writing_check", "def", "reap finished write-throughs", "compat.py", HICACHE),
    Seam(f"{TREE}.ongoing_write_through", "attr", "write-throughs in flight", "compat.py", HICACHE),
    Seam(f"{TREE}.cache_controller", "attr", "HiCache's controller (pools, copy streams)", "compat.py", PARK),
    Seam(f"{TREE}.evictable_size", "def", "idle pools (status); whether a waiting prompt fits", "compat.py", SERVER),
    Seam(f"{TREE}.protected_size", "def", "idle pools (status)", "compat.py", SERVER),
    Seam(f"{CC}.mem_pool_host", "attr", "the host KV pool (room, reserve, parked tails' slots)", "compat.py", PARK),
    Seam(f"{CC}.mem_pool_device", "attr", "the device KV pool a parked tail is copied from and to", "compat.py", PARK),
    Seam(f"{CC}.l2_transfer_engine", "attr", "HiCache's two copy streams (CPU: the copiers): parked tails go on them", "compat.py", PARK),
    Seam(f"{CC}.move_indices", "def", "indices where the io backend wants them", "compat.py", PARK, ("host_indices", "device_indices")),
    Seam(f"{CC}.write_fence_stream", "attr", "what a device-to-host copy waits for", "compat.py", PARK),
    Seam(f"{CC}.load_fence_stream", "attr", "what a host-to-device copy waits for", "compat.py", PARK),
    Seam(f"{CC}.transfer_layer_id_max", "attr", "layers a host-to-device copy covers", "compat.py", PARK),
    Seam("sglang.srt.mem_cache.l2_transfer:L2Transfer", "class", "one copy between the pools", "compat.py", PARK),
    Seam("sglang.srt.mem_cache.l2_transfer:L2TransferEngine.submit_device_to_host", "def", "a micro-batch's parked tails, one copy", "compat.py", PARK, ("transfers",)),
    Seam("sglang.srt.mem_cache.l2_transfer:L2TransferEngine.submit_host_to_device", "def", "an ingest's rejoining tails, one copy", "compat.py", PARK, ("transfers", "transfer_layer_id_max")),
    Seam("sglang.srt.mem_cache.common:evict_from_tree_cache", "def", "device room for a rejoining tail", "compat.py", PARK, ("tree_cache", "num_tokens")),
    # ---- process-wide context, plugins, entry points -------------------------------------------
    Seam("sglang.srt.runtime_context:get_parallel", "def", "pp/tp ranks, async depth", "compat.py", PARK),
    Seam("sglang.srt.runtime_context:get_memory", "def", "hierarchical cache enabled", "compat.py", HICACHE),
    Seam("sglang.srt.runtime_context:get_schedule", "def", "scheduler settings", "compat.py", PARK),
    Seam("sglang.srt.plugins.hook_registry:HookRegistry", "class", "install the scheduler subclass and hooks in every process", "scheduler_install.py, cpu_backend.py, request_guard.py", PARK),
    Seam("sglang.srt.plugins.hook_registry:HookType", "class", "REPLACE / AROUND hooks", "scheduler_install.py", PARK),
    Seam("sglang.srt.managers.scheduler.Scheduler", "hook", "replaced by PipeMaxScheduler", "scheduler_install.py", PARK),
    Seam("sglang.srt.managers.tokenizer_manager.TokenizerManager._validate_one_request", "hook", "bad requests get a 4xx (request_guard.py)", "request_guard.py", SERVER),
    Seam("sglang.srt.mem_cache.common.release_kv_cache", "hook", "a parked request that finishes releases through PipeMax", "stage.py", PARK),
    Seam("sglang.srt.server_args:ServerArgs", "class", "every SGLang flag, parsed by SGLang", "launch_server.py, run_batch.py", "tests/test_config.py"),
    Seam("sglang.srt.server_args:prepare_server_args", "def", "SGLang's own argument parsing", "launch_args.py", "tests/test_config.py"),
    Seam("sglang.srt.entrypoints.engine:Engine", "class", "pipemax_sglang.Engine extends it", "engine.py", "tests/integration/test_engine_parity.py"),
    Seam("sglang.srt.entrypoints.http_server:launch_server", "def", "the HTTP server", "server.py", SERVER),
    Seam("sglang.srt.entrypoints.openai.serving_completions:OpenAIServingCompletion", "class", "the batch runner's /v1/completions", "compat.py", "tests/integration/test_run_batch.py"),
    Seam("sglang.srt.managers.tokenizer_manager:TokenizerManager.serving_chat_class", "attr", "the batch runner's /v1/chat/completions, built as the server builds it", "compat.py", "tests/integration/test_run_batch.py"),
    Seam("sglang.srt.managers.tokenizer_manager:TokenizerManager.auto_create_handle_loop", "def", "start the receive loop before installing the runner's signal handlers", "compat.py", "tests/integration/test_run_batch.py"),
    Seam("sglang.srt.entrypoints.engine:Engine.tokenizer_manager", "attr", "the in-process tokenizer (batch runner)", "compat.py", "tests/integration/test_run_batch.py"),
    Seam("sglang.srt.entrypoints.engine:Engine.template_manager", "attr", "chat templates as the server loads them", "compat.py", "tests/integration/test_run_batch.py"),
    Seam("sglang.srt.entrypoints.http_server:app", "object", "PipeMax's status routes are added to SGLang's app", "server.py", SERVER),
    Seam("sglang.srt.plugins:load_plugins", "def", "SGLang's own plugin loading before its flags are parsed", "launch_args.py", "tests/test_config.py"),
    Seam("sglang.srt.runtime_context:get_observability", "def", "whether SGLang's metrics are on (PipeMax's join them)", "compat.py", SERVER),
    Seam("sglang.srt.managers.scheduler:Scheduler", "class", "PipeMaxScheduler's base", "scheduler.py", PARK),
    Seam("sglang.utils:TypeBasedDispatcher", "class", "dispatch relayed plans beside SGLang's requests", "scheduler.py", PARK),
    Seam("sglang.srt.utils:kill_process_tree", "def", "stop every SGLang process on exit", "server.py, batch_runner.py", SERVER),
    Seam("sglang.srt.entrypoints.openai.protocol:ChatCompletionRequest", "class", "batch lines' chat bodies", "compat.py", "tests/integration/test_run_batch.py"),
    Seam("sglang.srt.entrypoints.openai.protocol:CompletionRequest", "class", "batch lines' completion bodies", "compat.py", "tests/integration/test_run_batch.py"),
)


# ---- the check --------------------------------------------------------------------------------

def _resolve(dotted: str):
    """'module:A.b' or a HookRegistry dotted path 'module.A.b' (longest importable module)."""
    if ":" in dotted:
        mod, _, qual = dotted.partition(":")
        obj = importlib.import_module(mod)
        names = qual.split(".")
    else:
        parts = dotted.split(".")
        for i in range(len(parts) - 1, 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            names = parts[i:]
            break
        else:
            raise ImportError(f"no module in {dotted}")
    owner = None
    for n in names:
        owner, obj = obj, getattr(obj, n)
    return owner, obj


@lru_cache(maxsize=None)
def _assigned(cls) -> frozenset[str]:
    """Names assigned as self.<name> (plain, annotated, augmented or tuple-unpacked) in the
    source of any class in cls's MRO."""
    out: set[str] = set()

    def targets(t):
        if isinstance(t, (ast.Tuple, ast.List)):
            for e in t.elts:
                yield from targets(e)
        elif isinstance(t, ast.Starred):
            yield from targets(t.value)
        elif isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
            yield t.attr

    for c in cls.__mro__:
        if c is object:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(c)))
        except (OSError, TypeError, SyntaxError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    out.update(targets(t))
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                out.update(targets(node.target))
    return frozenset(out)


def _has_instance_attr(cls, name: str) -> bool:
    if hasattr(cls, name):
        return True
    if dataclasses.is_dataclass(cls) and name in {f.name for f in dataclasses.fields(cls)}:
        return True
    return name in _assigned(cls)


def _params_missing(fn, params: tuple[str, ...]) -> list[str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    names = set(sig.parameters)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return [p for p in params if p not in names and not takes_any]


def check_one(s: Seam) -> str | None:
    """None when the seam holds, else why not (one line)."""
    try:
        if s.kind == "attr":
            mod, _, qual = s.target.partition(":")
            *cls_path, name = qual.split(".")
            cls = importlib.import_module(mod)
            for n in cls_path:
                cls = getattr(cls, n)
            return None if _has_instance_attr(cls, name) else f"{cls.__name__} has no attribute {name}"
        _, obj = _resolve(s.target)
    except (ImportError, AttributeError) as e:
        return f"not found: {e}"
    if s.kind == "class" and not inspect.isclass(obj):
        return "not a class"
    if s.kind in ("def", "override") and not callable(obj):
        return "not callable"
    missing = _params_missing(obj, s.params) if s.kind in ("def", "override") else []
    return f"parameters gone: {', '.join(missing)}" if missing else None


def check(seams=SEAMS) -> list[tuple[Seam, str]]:
    """Every seam that no longer holds, with the reason (empty: all hold)."""
    return [(s, why) for s in seams if (why := check_one(s)) is not None]


def markdown(seams=SEAMS) -> str:
    from pipemax_sglang.sglang.version import SGLANG_PIN

    lines = [
        "# SGLang seams",
        "",
        f"Every SGLang {SGLANG_PIN} internal PipeMax relies on, generated from",
        "`pipemax_sglang/sglang/seams.py` (`python -m pipemax_sglang.sglang.seams --markdown`).",
        "`make check-seams` verifies each still exists in the shape used (kinds: def and override",
        "with the parameters listed, attr set on instances, class, hook: a HookRegistry target).",
        "Run it first against a new SGLang release.",
        "",
        "| seam | kind | why | used in | exercised by |",
        "|---|---|---|---|---|",
    ]
    for s in seams:
        sig = f"({', '.join(s.params)})" if s.params else ""
        lines.append(f"| `{s.target}{sig}` | {s.kind} | {s.why} | {s.users} | `{s.test}` |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="verify every seam against the installed SGLang")
    ap.add_argument("--markdown", action="store_true", help="print docs/seams.md")
    a = ap.parse_args(argv)
    if a.markdown:
        sys.stdout.write(markdown())
        return 0
    bad = check()
    for s, why in bad:
        print(f"seam broken: {s.target} ({s.kind}): {why}", file=sys.stderr)
    print(f"seams: {len(SEAMS) - len(bad)} of {len(SEAMS)} hold")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
