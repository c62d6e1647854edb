"""Where PipeMax orders host<->device copies against compute, on a GPU and on our CPUs.

Two fences, and why each exists (docs/design.md section 5, invariant 3):

    park      the write-through (D2H, HiCache's device_to_host stream) of a request that has
              just run must not read its KV before that forward wrote it:
                  current stream waits on the micro-batch's launch event, and HiCache's
                  D2H stream waits on the current stream (its start event) before copying.
              CPU: the forward ran synchronously in this thread; nothing to wait for.
    rejoin    a micro-batch must not run before its prefetch (H2D on HiCache's
              host_to_device stream) landed:
                  GPU: the forward stream waits on each load's finish event (no host stall;
                       decode may run as a CUDA graph, so no per-layer waits);
                  CPU: the copier thread's event is waited on by this thread.

    GPU timeline (one stage, micro-batches a, b):

    forward stream   | a(t) |........| b(t) |.wait(load a)| a(t+1) |
    D2H stream              |park a: newest tokens|
    H2D stream                      |load a's evicted nodes|
                            ^ waits a's launch event          ^ a(t+1) waits here

Plain functions over objects with CUDA-event/stream methods, so tests script them on CPU.
"""

from __future__ import annotations

from typing import Any, Iterable


def order_after_forward(launch_event: Any, current_stream: Any, is_cuda: bool) -> None:
    """Before parking: later work on the current stream (HiCache records its start event
    there) comes after the micro-batch's forward."""
    if is_cuda and launch_event is not None:
        current_stream.wait_event(launch_event)


def fence_loads(finish_events: Iterable[Any], forward_stream: Any, is_cuda: bool) -> int:
    """Before a turn: the forward comes after every load it needs. Returns how many."""
    n = 0
    for ev in finish_events:
        if is_cuda:
            forward_stream.wait_event(ev)
        else:
            ev.synchronize()
        n += 1
    return n
