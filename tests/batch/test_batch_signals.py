"""Outside the run loop a stop signal unwinds the stack as Interrupted (so the engine is shut
down and the summary printed), with the shell's exit code for that signal."""

from __future__ import annotations

import os
import signal
import time

import pytest

from pipemax_sglang.batch.signals import Interrupted, raise_on_signals


@pytest.fixture
def restore_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGQUIT, 131)])
def test_a_stop_signal_raises_interrupted_with_its_exit_code(restore_handlers, sig, code):
    raise_on_signals()
    with pytest.raises(Interrupted) as caught:
        os.kill(os.getpid(), sig)
        time.sleep(30)               # never completes: the handler raises as soon as it runs
    assert caught.value.signum == sig and caught.value.exit_code == code
    assert caught.value.name == signal.Signals(sig).name
    assert not isinstance(caught.value, Exception)   # no `except Exception` swallows it
