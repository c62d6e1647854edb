"""A crashed SGLang child fails the test that owns the engine; pytest itself goes on."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.engine_process import EngineCrashed, EngineProcess


def test_killed_scheduler_surfaces_as_engine_crashed(tiny_model):
    eng = EngineProcess(model_path=tiny_model, max_total_tokens=2048, log_level="error")
    try:
        scheduler_pid = eng.status()["stages"][0]["pid"]
        assert scheduler_pid in eng.call("pids")
        os.kill(scheduler_pid, signal.SIGKILL)
        # SGLang's watchdog notices the dead child and tears the engine's process tree down;
        # the test sees EngineCrashed instead of pytest being killed with it.
        with pytest.raises(EngineCrashed):
            for _ in range(5):
                eng.generate(input_ids=[[5, 6, 7]], sampling_params={"max_new_tokens": 4})
                time.sleep(2)
    finally:
        eng.kill()
