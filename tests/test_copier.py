"""LinkCopier: one direction of an emulated PCIe link, FIFO, throttled, counted."""

from __future__ import annotations

import threading

import pytest

from pipemax_sglang.runtime.copier import CopierEvent, LinkCopier


def test_jobs_run_in_order_and_marks_wait_for_everything_before():
    link = LinkCopier("test")
    order: list[int] = []
    gate = threading.Event()
    link.submit(gate.wait, 0)
    seqs = [link.submit(lambda i=i: order.append(i), 10) for i in range(5)]
    assert not link.done(seqs[0])
    gate.set()
    link.wait(seqs[-1])
    assert order == [0, 1, 2, 3, 4]
    assert link.stats().bytes == 50 and link.stats().jobs == 6


class FakeTime:
    """A scripted clock: each copy "takes" copy_s; sleeps advance the clock."""

    def __init__(self, copy_s: float) -> None:
        self.now, self.copy_s, self.slept = 0.0, copy_s, []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_throttle_holds_the_link_for_bytes_over_bandwidth():
    t = FakeTime(copy_s=0.005)
    link = LinkCopier("slow", gbps=0.01, clock=t.clock, sleep=t.sleep)  # 10 MB/s

    def copy():
        t.now += t.copy_s

    link.submit(copy, 200_000)    # 0.02 s at 10 MB/s: the copy took 0.005, sleep the rest
    link.submit(copy, 10_000)     # 0.001 s at 10 MB/s: the copy alone is slower, no sleep
    link.drain()
    assert t.slept == [pytest.approx(0.015)]
    assert link.stats().busy_s == pytest.approx(0.02 + 0.005)
    assert link.stats().bytes == 210_000


def test_event_without_copies_is_complete():
    ev = CopierEvent()
    ev.record()
    assert ev.query()
    ev.synchronize()


def test_timing_is_refused_like_torch_cpu_event():
    with pytest.raises(TypeError):
        CopierEvent(enable_timing=True)


def test_failed_copy_surfaces_to_waiters():
    link = LinkCopier("bad")

    def boom():
        raise ValueError("copy failed")

    seq = link.submit(boom, 1)
    with pytest.raises(RuntimeError, match="bad copier failed"):
        link.wait(seq)


def test_gpu_check_script_runs_its_code_paths_on_cpu():
    """benchmarks/gpu_check.py is run on a lent GPU only; its smoke mode keeps it honest here."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
    proc = subprocess.run([sys.executable, str(script), "--cpu-smoke"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "plain pinned copy" in proc.stdout and "KV mover" in proc.stdout


def test_an_event_recorded_after_another_still_covers_earlier_copies():
    """HiCache records a per-layer event after each layer's copies, then the ack: the ack
    must still wait for every copy (it once marked nothing and completed at once)."""
    link = LinkCopier("order")
    gate = threading.Event()
    link.submit(gate.wait, 0)
    CopierEvent.note_use(link)
    layer_done = CopierEvent()
    layer_done.record()
    ack = CopierEvent()
    ack.record()
    assert not layer_done.query() and not ack.query()
    gate.set()
    ack.synchronize()
    assert layer_done.query()


def test_finished_jobs_hand_out_their_intervals_once():
    link = LinkCopier("h2d")
    for _ in range(3):
        link.submit(lambda: None, 0)
    link.drain()
    first = link.take_intervals()
    assert len(first) == 3 and all(s <= e for s, e in first)
    assert [s for s, _ in first] == sorted(s for s, _ in first)      # in job order
    assert link.take_intervals() == []
    link.submit(lambda: None, 0)
    link.drain()
    assert len(link.take_intervals()) == 1


def test_a_copy_stream_waiting_on_an_event_orders_copies_without_blocking_the_caller():
    """SGLang's `start_event.wait(copy_stream)`: a load submitted after it must not run
    before the write the event marked (another copier), and the caller must not block."""
    d2h, h2d = LinkCopier("d2h-order"), LinkCopier("h2d-order")
    gate = threading.Event()
    d2h.submit(gate.wait, 0)                         # a write still on the wire
    CopierEvent.note_use(d2h)
    CopierEvent.note_use(h2d)
    ev = CopierEvent()
    ev.record()
    ev.wait(stream=object())                         # returns at once
    ran = threading.Event()
    h2d.submit(ran.set, 0)                           # the load submitted after the wait
    assert not ran.wait(0.2)                         # held behind the write
    gate.set()
    h2d.drain()
    assert ran.is_set()
    assert len(h2d.take_intervals()) == 1            # the copy; barriers are not link time


def test_a_wait_on_copies_already_done_adds_no_barrier():
    """A copy stream waiting on an event whose copies have landed needs no ordering job:
    the waiting copier's queue gets nothing (a barrier was scheduler time a copy)."""
    d2h, h2d = LinkCopier("d2h-done"), LinkCopier("h2d-done")
    saved = getattr(CopierEvent._local, "used", None)
    CopierEvent._local.used = {}                     # only these two copiers, whatever ran before
    try:
        d2h.submit(lambda: None, 0)
        d2h.drain()
        CopierEvent.note_use(d2h)
        CopierEvent.note_use(h2d)
        ev = CopierEvent()
        ev.record()
        before = h2d.tail()
        ev.wait(stream=object())
        assert h2d.tail() == before                  # nothing queued behind the done write
        gate = threading.Event()
        d2h.submit(gate.wait, 0)                     # a write still on the wire
        ev2 = CopierEvent()
        ev2.record()
        ev2.wait(stream=object())
        assert h2d.tail() == before + 1              # this one is ordered by a barrier
        gate.set()
        h2d.drain()
    finally:
        CopierEvent._local.used = saved
