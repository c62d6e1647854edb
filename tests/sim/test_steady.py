"""The steady window (sim/steady.py): pressed, past the fill, before the drain; and the
optimum's fraction that run.py reports beside it."""

import numpy as np
import pytest
from sim_cases import TINY_MODEL, small_workload, tiny_machine

from pipemax_sglang.sim import SimConfig, simulate
from pipemax_sglang.sim.steady import steady_state


def _series(rows):
    names = ("end", "decode", "rows", "ctx", "tokens", "decided", "pressed", "finished")
    cols = list(zip(*rows))
    return {n: np.asarray(c) for n, c in zip(names, cols)}


def test_the_window_runs_from_a_tenth_finished_to_the_last_pressed_turn():
    # 10 requests. Turns out of the last stage at 1..8 s; a tenth (1 request) has finished
    # when the turn out at 3 s was decided; the last turn decided with a backlog is out at
    # 6 s. Window (3, 6]: turns out at 4, 5, 6 s: 30 + 40 + 50 tokens in 3 s = 40 tok/s.
    s = _series([(1.0, False, 5, 0, 5, 0.5, True, 0),        # prefill
                 (2.0, True, 10, 1000, 10, 1.5, True, 0),
                 (3.0, True, 20, 2000, 20, 2.5, True, 1),
                 (4.0, True, 30, 3000, 30, 3.5, True, 2),
                 (5.0, True, 40, 4000, 40, 4.5, True, 4),
                 (6.0, True, 50, 5000, 50, 5.5, True, 6),
                 (7.0, True, 8, 800, 8, 6.5, False, 8),
                 (8.0, True, 2, 200, 2, 7.5, False, 9)])
    links = [[(3.5, 4.5), (5.5, 7.0)], [(0.0, 3.2)]]     # busy 1.0 + 0.5 and 0.2 in (3, 6]
    st = steady_state(s, links, requests=10, makespan_s=8.0)
    assert (st.start_s, st.end_s) == (3.0, 6.0)
    assert st.tok_s == pytest.approx(120 / 3)
    assert st.rows == pytest.approx(40) and st.ctx_per_turn == pytest.approx(4000)
    assert st.mean_context == pytest.approx(100)
    assert st.link_util == pytest.approx(1.7 / (2 * 3))
    assert st.frac == pytest.approx(3 / 8)
    # never pressed after the start: no steady state
    s["pressed"] = np.array([True, True, False, False, False, False, False, False])
    assert steady_state(s, links, requests=10, makespan_s=8.0) is None


def test_a_pressed_run_reports_its_steady_window_and_its_fraction_of_the_optimum():
    work = small_workload(120)
    for policy in ("pp", "pipemax"):
        r = simulate(SimConfig(TINY_MODEL, tiny_machine(), work, policy=policy))
        assert r.steady is not None, policy
        assert 0 < r.steady["frac"] < 1
        assert r.steady["rows"] > 0 and r.steady["tok_s"] > 0
        opt = r.optimum
        assert opt["context"] > 0 and opt["bound"] in ("link", "row cap", "device", "no stream")
        assert opt["fraction"] == pytest.approx(r.steady["ctx_per_turn"] / opt["context"])
        # the device bounds what a turn holds: never much past X* (X* keeps 2C for streams)
        assert 0 < opt["fraction"] < 1.5
