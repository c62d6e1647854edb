"""When a scheduler publishes its status: every STATUS_EVERY_S while busy, once on going idle,
and not for the moments between micro-batches when a stage is "fully idle" within a batch
(each such report, with the step samples, cost a pp 2 stage ~3% of its time)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipemax_sglang.sglang import scheduler as sched_mod
from pipemax_sglang.sglang.scheduler import IDLE_SETTLE_S, STATUS_EVERY_S, PipeMaxScheduler


@pytest.fixture()
def fake(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(sched_mod.time, "monotonic", lambda: clock[0])
    s = SimpleNamespace(_pipemax_published=(0.0, -1, True), _pipemax_idle_since=None,
                        pipemax=SimpleNamespace(turn=0), reports=[])

    def publish_now(idle, now=None, turn=0):
        s._pipemax_published = (clock[0] if now is None else now, turn, idle)
        s.reports.append((clock[0], idle))

    s._pipemax_publish_now = publish_now
    s.publish = lambda idle=False: PipeMaxScheduler.pipemax_publish(s, idle)
    return s, clock


def test_a_batch_reports_at_once_then_every_interval_and_once_idle(fake):
    s, clock = fake
    s.publish()                                       # work arrives: report at once
    assert s.reports == [(100.0, False)]
    turns = int(1.6 * STATUS_EVERY_S / 0.025)         # a batch of 1.6 intervals: turns every
    for step in range(1, turns):                      # 25 ms, a "fully idle" moment between them
        clock[0] = 100.0 + 0.025 * step
        s.pipemax.turn = step
        s.publish(idle=True)
        s.publish()
    busy = [t for t, idle in s.reports if not idle]
    assert not [r for r in s.reports if r[1]], "a moment between micro-batches was reported idle"
    assert len(busy) == 2 and busy[1] - busy[0] >= STATUS_EVERY_S
    clock[0] += 0.01
    s.publish(idle=True)                              # the batch is over: not yet settled
    assert s.reports[-1][1] is False
    clock[0] += IDLE_SETTLE_S + 1e-6
    s.publish(idle=True)                              # settled: the final report
    assert s.reports[-1] == (clock[0], True)
    n = len(s.reports)
    clock[0] += 5.0
    s.publish(idle=True)                              # still idle, nothing new: no rewrite
    assert len(s.reports) == n
