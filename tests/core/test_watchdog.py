"""The watchdog (core/watchdog.py): trips once after timeout_s of pending work without progress."""

from pipemax_sglang.core.watchdog import Watchdog


def test_trips_once_after_the_timeout_of_pending_work_without_progress():
    w = Watchdog(timeout_s=5.0)
    assert not w.observe(0.0, progressed=True, pending=True)
    assert not w.observe(4.9, progressed=False, pending=True)
    assert w.observe(5.0, progressed=False, pending=True)
    assert not w.observe(50.0, progressed=False, pending=True)      # once


def test_progress_or_an_idle_server_resets_it():
    w = Watchdog(timeout_s=5.0)
    w.observe(0.0, progressed=False, pending=True)
    assert not w.observe(4.0, progressed=True, pending=True)        # a launch at 4 s
    assert not w.observe(8.9, progressed=False, pending=True)
    assert not w.observe(9.0, progressed=False, pending=False)      # idle: nothing to wait for
    assert not w.observe(13.9, progressed=False, pending=True)
    assert w.observe(14.0, progressed=False, pending=True)


def test_disabled_never_trips():
    w = Watchdog(timeout_s=0)
    assert not any(w.observe(t, progressed=False, pending=True) for t in range(0, 1000, 10))
