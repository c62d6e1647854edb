"""The benches' check for SGLang processes left by another run (benchmarks/bench_offline.py
stray_engines): a killed run's orphaned scheduler shares the cores with the next bench."""

import subprocess
import sys
import time

import pytest

from benchmarks.bench_offline import stray_engines

PR_SET_NAME = 15


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_process_named_like_an_sglang_scheduler_is_found_and_others_are_not():
    code = ("import ctypes, sys, time; ctypes.CDLL(None).prctl(%d, b'sglang::scheduler_PP1', 0, 0, 0); "
            "print('named', flush=True); time.sleep(60)" % PR_SET_NAME)
    plain = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    named = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert named.stdout.readline().strip() == "named"
        assert plain.stdout.readline().strip() == "up"
        found = stray_engines()
        assert named.pid in found
        assert plain.pid not in found
    finally:
        for p in (named, plain):
            p.kill()
            p.wait()
    deadline = time.monotonic() + 5
    while named.pid in stray_engines() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert named.pid not in stray_engines()
