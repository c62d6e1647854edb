"""SGLang's hierarchical cache (HiCache) on a CPU device: the host<->device KV transfers in torch.

SGLang 0.5.23 moves KV between the device pool and its host pool only with `sgl_kernel`
CUDA/HIP/XPU kernels (`mem_cache/pool_host/mha.py:60-89` binds them for those platforms alone),
so on a CPU device HiCache fails at the first write-through. On CPU the "device" and the
"host" are both RAM, and a transfer is an indexed copy. This module supplies it, for every
MHA host layout SGLang offers (layer_first, page_first, page_first_direct, page_head), so
both SGLang's defaults (`--hicache-io-backend kernel`, `--hicache-mem-layout page_first`)
and the direct/layer_first combination work.

Installed only when torch has no CUDA (see plugin.py); on a GPU nothing here is touched.

The copies run on two LinkCopier threads (runtime/copier.py), one per direction, as CUDA
streams would on a GPU: HiCache's transfer code records events after submitting, and the
events (torch.cpu.Event, replaced by CopierEvent in CPU mode) complete when the copies have.
So a write-through is acked, and a device slot freed, only after its D2H copy finished; a
load-back's per-layer waits and PipeMax's rejoin fence wait for the H2D copies; and with
`--pipemax-emulate-link-gbps X` each direction runs at X GB/s, so the budget binds as PCIe would.

Invariant: after `backup_from_device_all_layer(dev, host_idx, dev_idx)` and a later
`load_to_device_per_layer(dev, host_idx, dev_idx2, layer)` for every layer, device rows
dev_idx2 hold exactly what rows dev_idx held (tests/integration check it through tokens).

Shapes (H heads, D head dim, L layers of this stage, S host tokens, P page size):
    device K or V of one layer:    [tokens, H, D]
    host layer_first:              k_buffer [L, S, H, D]
    host page_first:               k_buffer [S, L, H, D]
    host page_first_direct:        k_buffer [S/P, L, P, H, D]
    host page_head:                k_buffer [S/P, H, P, L, D]
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Iterator

import torch

from sglang.srt.plugins.hook_registry import HookRegistry, HookType

from pipemax_sglang import env
from pipemax_sglang.runtime.copier import CopierEvent, LinkCopier

_MHA_HOST = "sglang.srt.mem_cache.pool_host.mha.MHATokenToKVPoolHost"
_HOST_ALLOC = "sglang.srt.mem_cache.pool_host.common.alloc_with_host_register"


def _host_rows(host, buf: torch.Tensor, layer: int, idx: torch.Tensor):
    """Index tuple selecting tokens `idx` of `layer` in host buffer `buf` -> [n, H, D]."""
    layout = host.layout
    if layout == "layer_first":
        return (layer, idx)
    if layout == "page_first":
        return (idx, layer)
    p = host.page_size
    if layout == "page_first_direct":
        return (idx // p, layer, idx % p)
    if layout == "page_head":
        # [S/P, H, P, L, D][page, :, off, layer] -> advanced dims first: [n, H, D]
        return (idx // p, slice(None), idx % p, layer)
    raise ValueError(f"pipemax CPU HiCache: unsupported host layout {layout!r}")


class Links:
    """The process's two copiers, created on first use with the configured throttle."""

    _lock = threading.Lock()
    h2d: LinkCopier | None = None
    d2h: LinkCopier | None = None

    @classmethod
    def get(cls) -> tuple[LinkCopier, LinkCopier]:
        with cls._lock:
            if cls.h2d is None:
                gbps = _configured_link_gbps()
                cls.h2d = LinkCopier("h2d", gbps)
                cls.d2h = LinkCopier("d2h", gbps)
            return cls.h2d, cls.d2h

    @classmethod
    def drain(cls) -> None:
        for c in (cls.h2d, cls.d2h):
            if c is not None:
                c.drain()


def _configured_link_gbps() -> float | None:
    text = env.config_json()
    if not text:
        return None
    from pipemax_sglang.config import PipeMaxConfig

    return PipeMaxConfig.from_json(text).emulate_link_gbps


def _submit(copier: LinkCopier, fn, nbytes: int) -> None:
    copier.submit(fn, nbytes)
    CopierEvent.note_use(copier)


def _token_bytes(buf: torch.Tensor) -> int:
    """Bytes of one token's row of a device K or V buffer [tokens, H, D] (from its shape: a
    view per layer per copy, as buf[0] makes, is scheduler time)."""
    return math.prod(buf.shape[1:]) * buf.element_size()


def _frozen_indices(host, host_indices, device_indices, layer_id: int):
    """int64 copies of a transfer's indices, which the copier reads later (the caller may
    reuse its tensors meanwhile). SGLang calls the per-layer load once per layer, layers in
    increasing order, with the same two tensors (l2_transfer.py submit_host_to_device): they
    are copied at the transfer's first layer and the copies reused for its later layers (a
    copy of a micro-batch's indices costs ~80 us, and every layer's would be scheduler time).
    A call with other tensors, or a layer not above the last one, is a new transfer and
    copies afresh (so tensors a caller refilled for a second transfer are read again).
    PipeMax's own tensors (owned_indices) are read as they are (its loads do not come here:
    they are one job, _load_layers)."""
    last = getattr(host, "_pipemax_frozen", None)
    if (last is not None and last[0] is host_indices and last[1] is device_indices
            and layer_id > last[4]):
        host._pipemax_frozen = last[:4] + (layer_id,)
        return last[2], last[3]
    hidx, didx = _stable(host_indices, device_indices)
    host._pipemax_frozen = (host_indices, device_indices, hidx, didx, layer_id)
    return hidx, didx


class _Owned:
    """The copy PipeMax is submitting (owned_indices): its index tensors, the layers SGLang's
    engine will ask to load, and whether the one job that loads them all was submitted."""
    __slots__ = ("host", "device", "layers", "loaded")

    def __init__(self, host, device, layers: int | None) -> None:
        self.host, self.device, self.layers, self.loaded = host, device, layers, False

    def covers(self, host_indices, device_indices) -> bool:
        return host_indices is self.host and device_indices is self.device


_owned: _Owned | None = None     # the copy PipeMax is submitting, if any


@contextlib.contextmanager
def owned_indices(host_indices, device_indices, layers: int | None = None) -> Iterator[None]:
    """Around the submission of one of PipeMax's own copies (compat.copy_to_host and
    copy_to_device): its index tensors are never written again (a fresh gather, or spans of
    an allocation's result, which PipeMax's host copies already rely on never changing,
    kv_moves.HostCopy), so the copier may read them later as they are: a defensive copy of
    each was ~40 us of scheduler time a copy on our hosts. Only those very tensors, passed
    through SGLang's transfer engine unchanged, are read without a copy; anything else
    (SGLang's own transfers, or tensors the engine made) is copied as always.

    A load of PipeMax's (`layers`: the transfer_layer_id_max that compat.copy_to_device
    passes to the engine too, so the layers its per-layer calls would ask for) is also one
    job for all of them, submitted at the engine's first per-layer call: PipeMax fences on
    a load as a whole, never layer by layer (compat.copy_to_device), and a job a layer was
    a lock, a copier wake-up and a closure each, ~25 us of scheduler time a layer on our
    hosts."""
    global _owned
    _owned = _Owned(host_indices, device_indices, layers)
    try:
        yield
    finally:
        _owned = None


def _stable(host_indices, device_indices) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 index tensors the copier may read later: the given ones where they are
    PipeMax's own (owned_indices), else copies."""
    if _owned is not None and _owned.covers(host_indices, device_indices):
        return host_indices.to(torch.int64), device_indices.to(torch.int64)
    return host_indices.to(torch.int64, copy=True), device_indices.to(torch.int64, copy=True)


def _layers(host) -> tuple[list, list[int]]:
    """Per layer of `host`'s stage: its ((host K, device K), (host V, device V)) buffer pairs
    and their bytes a token. Built once per set of buffers (kept on the pool, keyed by the
    buffers' identity): built per copy, the lists and shapes were ~50 us of scheduler time
    a copy on our hosts."""
    kv = getattr(host, "kv_buffer", None)    # SGLang's: k_buffer, v_buffer are views of it made per access
    key = ((kv,) if kv is not None else (host.k_buffer, host.v_buffer)) + (
        host.device_k_buffers, host.device_v_buffers)
    got = getattr(host, "_pipemax_layers", None)
    if got is not None and len(got[0]) == len(key) and all(a is b for a, b in zip(got[0], key)):
        return got[1], got[2]
    pairs = [((host.k_buffer, dk), (host.v_buffer, dv))
             for dk, dv in zip(host.device_k_buffers, host.device_v_buffers)]
    per_token = [sum(_token_bytes(d) for _, d in layer) for layer in pairs]
    host._pipemax_layers = (key, pairs, per_token)
    return pairs, per_token


def load_to_device_per_layer(
    self, device_pool, host_indices, device_indices, layer_id, io_backend, *, is_draft=False
):
    """H2D for one layer (SGLang calls it layer by layer while the forward proceeds); a load
    of PipeMax's own is one job for every layer, at the first call (owned_indices)."""
    if not is_draft and not 0 <= layer_id < self.target_layer_num:
        return
    own = _owned
    if own is not None and own.layers is not None and not is_draft and own.covers(host_indices, device_indices):
        if not own.loaded:
            own.loaded = True
            hidx, didx = _stable(host_indices, device_indices)
            _load_layers(self, hidx, didx, range(min(own.layers, self.target_layer_num)))
        return
    hidx, didx = _frozen_indices(self, host_indices, device_indices, layer_id)
    _load_layers(self, hidx, didx, (layer_id,))


def _load_layers(self, hidx, didx, layers) -> None:
    """One H2D job: tokens `hidx` of host pool `self` into device slots `didx` (int64 tensors
    no one writes again), for each of `layers`."""
    pairs, per_token = _layers(self)

    def copy() -> None:
        for layer in layers:
            for host_buf, dev_buf in pairs[layer]:
                dev_buf[didx] = host_buf[_host_rows(self, host_buf, layer, hidx)]

    _submit(Links.get()[0], copy, sum(per_token[layer] for layer in layers) * didx.shape[0])


def backup_from_device_all_layer(self, device_pool, host_indices, device_indices, io_backend):
    """D2H of all layers of the given tokens (write-through / write-back)."""
    hidx, didx = _stable(host_indices, device_indices)
    pairs, per_token = _layers(self)
    layers = range(self.layer_num)

    def copy() -> None:
        for layer in layers:
            for host_buf, dev_buf in pairs[layer]:
                host_buf[_host_rows(self, host_buf, layer, hidx)] = dev_buf[didx]

    _submit(Links.get()[1], copy, sum(per_token[layer] for layer in layers) * didx.shape[0])


def alloc_host_buffer(dims, dtype, device, pin_memory, allocator, registration_granularity_bytes=None):
    """Host pool allocation without cudaHostRegister (there is no CUDA to register with)."""
    return allocator.allocate(dims, dtype=dtype, device=device)


def _stream_synchronize(self) -> None:
    """A CPU "stream" is drained when both copiers are."""
    Links.drain()


def _stream_query(self) -> bool:
    return all(c is None or c.done(c.tail()) for c in (Links.h2d, Links.d2h))


def _stream_wait_event(self, event) -> None:
    """A stream waiting on an event: on CPU the work after it runs in this thread, so block.
    (HiCache's per-layer load wait is `current_stream().wait_event(...)`, cache_controller.py:77;
    torch.cpu.Stream.wait_event is a no-op, which would let a forward read KV mid-copy.)"""
    if isinstance(event, CopierEvent):
        event.synchronize()


def _stream_wait_stream(self, stream) -> None:
    """A stream waiting for another: in SGLang 0.5.23 the stream waited on is always a
    compute stream (forward or schedule: scheduler.py, scheduler_pp_mixin.py:715/1497,
    cache_controller.py:898/1043 with the forward stream as fence), and on CPU compute runs
    synchronously in the scheduler thread, so it is already done: nothing to wait for. Copy
    ordering goes through events (CopierEvent.wait). Draining the copiers here, as this once
    did, made every forward (`forward_stream.wait_stream(schedule_stream)` before each
    launch) wait for the loads of the turns after it."""


def register_hooks() -> None:
    """Register the CPU transfer path with SGLang's HookRegistry (call from the plugin)."""
    HookRegistry.register(_HOST_ALLOC, alloc_host_buffer, HookType.REPLACE)
    HookRegistry.register(f"{_MHA_HOST}.load_to_device_per_layer", load_to_device_per_layer, HookType.REPLACE)
    HookRegistry.register(
        f"{_MHA_HOST}.backup_from_device_all_layer", backup_from_device_all_layer, HookType.REPLACE
    )
    # l2_transfer.py calls stream.synchronize()/query(); torch.cpu.Stream lacks both.
    torch.cpu.Stream.synchronize = _stream_synchronize
    torch.cpu.Stream.query = _stream_query
    torch.cpu.Stream.wait_event = _stream_wait_event
    torch.cpu.Stream.wait_stream = _stream_wait_stream
    # SGLang creates its transfer events as device_module.Event (torch.cpu.Event on CPU), at
    # call time: events that know the copiers make every HiCache wait honour the copies.
    torch.cpu.Event = CopierEvent
