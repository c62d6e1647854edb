"""Invariants every policy must keep, on a tiny GPU that the workload overflows (the offload
policies park and stream), with a link each and with four GPUs behind one switch:

    conservation   every request finishes; tokens out = tokens asked, counted where the
                   last stage makes them
    capacity       no stage's KV ever exceeds its HBM; host KV never exceeds host memory
    links          one transfer on a link at a time (a shared uplink included)
    order          no stage starts a turn before that turn's prefetch has landed on it
    determinism    the same configuration gives the same result, field for field
"""

from dataclasses import replace

import pytest
from sim_cases import TINY_MODEL, small_workload, tiny_machine

from pipemax_sglang.sim import POLICIES, SimConfig, simulate
from pipemax_sglang.sim.run import build

CASES = [(p, k) for p in POLICIES for k in (1, 4) if not (p == "tp" and k == 4)]
WORK = small_workload()


def _config(policy: str, per_switch: int) -> SimConfig:
    return SimConfig(TINY_MODEL, tiny_machine(per_switch=per_switch), WORK, policy=policy,
                     record=True)


@pytest.fixture(scope="module")
def runs():
    out = {}
    for policy, k in CASES:
        eng, sched = build(_config(policy, k))
        out[policy, k] = (eng, sched, eng.run())
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-switch{c[1]}")
def test_every_request_finishes_with_the_tokens_it_asked_for(runs, case):
    eng, sched, st = runs[case]
    assert sched.done()
    assert (sched.book.gen == sched.book.out).all()
    assert st.tokens_out == int(WORK.output.sum())


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-switch{c[1]}")
def test_device_and_host_capacity_are_never_exceeded(runs, case):
    eng, sched, st = runs[case]
    assert st.ledger_violations == 0
    assert all(led.peak <= led.capacity for led in eng.ledgers)
    if case[0] in ("pp-offload-fcfs", "pipemax"):
        assert sched.m["max_host_tokens"] <= sched.H
        assert st.h2d_bytes > 0, "the workload overflows HBM: offload must stream"


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-switch{c[1]}")
def test_links_are_never_overcommitted(runs, case):
    eng, _, _ = runs[case]
    if case[0] != "tp":
        assert len(eng.h2d_links) == eng.P // case[1]      # one uplink per switch
    for link in eng.h2d_links + eng.d2h_links:
        spans = link.intervals
        assert spans == sorted(spans)
        for (s0, e0, b0), (s1, _, _) in zip(spans, spans[1:]):
            assert s1 >= e0 - 1e-12, f"{link.name}: a transfer starts before the last ended"
        assert sum(b for _, _, b in spans) == link.bytes_moved


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-switch{c[1]}")
def test_no_turn_starts_before_its_prefetch_landed(runs, case):
    eng, _, _ = runs[case]
    landed = {(s, k): t for ev, s, k, t in eng.trace if ev == "landed"}
    starts = [(s, k, t) for ev, s, k, t in eng.trace if ev == "start"]
    assert starts
    for s, k, t in starts:
        if (s, k) in landed:
            assert t >= landed[s, k]


@pytest.mark.parametrize("policy", ["pp", "pipemax"])
def test_the_same_seed_gives_the_same_result(policy):
    a = simulate(_config(policy, 1)).to_dict()
    b = simulate(_config(policy, 1)).to_dict()
    for d in (a, b):
        d.pop("sim_wall_s")
        d.pop("selector_s")
    assert a == b


def test_offload_with_no_memory_pressure_is_stock_pp():
    """Nothing to offload: PipeMax with M = P admits, runs and finishes exactly as stock
    SGLang does (same turns, same makespan) and moves nothing over H2D."""
    big = tiny_machine()
    big = replace(big, profile=replace(big.profile, hbm_gb=4.0))
    pp = simulate(SimConfig(TINY_MODEL, big, WORK, policy="pp"))
    pm = simulate(SimConfig(TINY_MODEL, big, WORK, policy="pipemax", micro_batches=8))
    assert pm.h2d_gb == 0.0 and pm.rejoined == 0
    assert pm.makespan_s == pytest.approx(pp.makespan_s, rel=1e-12)
    assert pm.turns == pp.turns


def test_every_byte_loaded_is_a_planned_rejoin():
    """H2D bytes on all links = P x the KV of the rejoins the plans asked for and the device
    took (k_s equal on every stage); never more than the plans' bytes."""
    eng, sched = build(_config("pipemax", 1))
    eng.run()
    assert len(set(eng.kv)) == 1
    moved = sum(x.bytes_moved for x in eng.h2d_links)
    assert moved > 0
    assert moved == eng.P * sched.m["loaded_tokens"] * eng.kv[0]
    assert sched.m["loaded_tokens"] * eng.kv[0] <= sched.m["plan_bytes"]
