"""The GPU ordering of PipeMax's copies, scripted on CPU with recording streams and events."""

from __future__ import annotations

from pipemax_sglang.runtime.fences import fence_loads, order_after_forward


class Recorder:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def wait_event(self, ev):
        self.log.append((self.name, "wait", ev.name))

    def synchronize(self):
        self.log.append((self.name, "synchronize"))


def test_gpu_rejoin_makes_the_forward_stream_wait_without_host_stall():
    log = []
    forward = Recorder("forward", log)
    loads = [Recorder("load-a", log), Recorder("load-b", log)]
    assert fence_loads(loads, forward, is_cuda=True) == 2
    assert log == [("forward", "wait", "load-a"), ("forward", "wait", "load-b")]  # no synchronize


def test_cpu_rejoin_waits_in_the_scheduler_thread():
    log = []
    fence_loads([Recorder("load-a", log)], None, is_cuda=False)
    assert log == [("load-a", "synchronize")]


def test_gpu_park_orders_the_write_after_the_forward():
    log = []
    current = Recorder("current", log)
    order_after_forward(Recorder("launch-mb2", log), current, is_cuda=True)
    assert log == [("current", "wait", "launch-mb2")]
    log.clear()
    order_after_forward(Recorder("launch-mb2", log), current, is_cuda=False)
    order_after_forward(None, current, is_cuda=True)
    assert log == []  # CPU: the forward already ran in this thread; no event: nothing launched
