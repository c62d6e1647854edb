"""The objective and constraints, checked against hand arithmetic; input validation."""

from dataclasses import replace

import pytest

from pipemax_sglang.core import (
    Candidate,
    HostNode,
    Resident,
    SelectorInput,
    SelectorParams,
    StepCost,
    feasible,
    objective,
    plan_totals,
    select_greedy,
)


def test_objective_by_hand():
    # 2 stages; one other micro-batch: 50 ms, 10 rows. Ours: one member of 1,000 tokens.
    # t = 0.01 + 1e-5 * context:  t(R) = 0.02 s.
    # cycle = max(0.05 + 0.02, 2 * max(0.05, 0.02)) = 0.10 s   -> bubble B(R) = 0.03 s
    # rho = (1 + 10) rows / 0.10 s = 110 rows/s
    inp = SelectorInput(
        candidates=(Candidate("x", 4000, 100, rounds_waited=4),),
        residents=(Resident("m", 1000),), budget_bytes=1000, kv_bytes_per_token=1,
        device_tokens_free=10_000, row_cap=8, cost=StepCost(0.01, 0.0, 1e-5),
        other_step_times=(0.05,), other_rows=(10,), num_stages=2)
    # Rejoin x: t = 0.01 + 1e-5 * 5000 = 0.06 s -> B = 2 * 0.06 - (0.05 + 0.06) = 0.01 s.
    # J = v + eps * U - lambda * rho * dB
    #   = (1 + 4/16) + 0.05 * 100/1000 - 1 * 110 * (0.01 - 0.03) = 1.25 + 0.005 + 2.2
    assert objective(inp, ("x",)) == pytest.approx(3.455)
    assert objective(inp, ()) == 0.0                       # nothing changes: J = 0
    # Park m, rejoin nothing: t = 0 (no step) -> B = 2 * 0.05 - 0.05 = 0.05: worse by
    # 0.02 s of bubble (2.2 rows) on top of the row given up.
    assert objective(inp, (), ("m",)) == pytest.approx(-1.0 - 2.2)
    t = plan_totals(inp, ("x",), ("m",))
    assert (t.rows, t.sum_context, t.host_tokens, t.device_tokens, t.device_cap) == \
        (1, 4000, 100, 101, 11_000)
    assert select_greedy(inp).rejoin == ("x",)


def test_feasible_checks_every_hard_constraint():
    shared = HostNode(1, 50)
    inp = SelectorInput(
        candidates=(Candidate("a", 100, 80, (shared,)), Candidate("b", 100, 70, (shared,))),
        residents=(Resident("m", 10),), budget_bytes=2 * 100, kv_bytes_per_token=2,
        device_tokens_free=103, row_cap=3, cost=StepCost(0.0, 0.0, 0.0))
    # a + b: 30 + 20 own + 50 shared once = 100 tokens = 200 bytes; device 100 + 3 rows.
    assert feasible(inp, ("a", "b"))
    assert not feasible(inp, ("a", "a"))                        # twice
    assert not feasible(inp, ("zz",))                           # unknown
    assert not feasible(inp, ("a",), ("a",))                    # parks a non-member
    tight = replace(inp, device_tokens_free=102)
    assert not feasible(tight, ("a", "b"))                      # 103 device tokens needed
    assert feasible(tight, ("a", "b"), ("m",))                  # parking m frees 10, one row
    capped = replace(inp, row_cap=2)
    assert not feasible(capped, ("a", "b")) and feasible(capped, ("a", "b"), ("m",))
    poor = replace(inp, budget_bytes=199)
    assert not feasible(poor, ("a", "b"))


@pytest.mark.parametrize("cands, message", [
    ((Candidate("a", 10, 5), Candidate("a", 10, 5)), "twice"),
    ((Candidate("a", 10, 11),), "host_tokens"),
    ((Candidate("a", 10, 5, (HostNode(1, 6),)),), "host nodes"),
    ((Candidate("a", 10, 5, (HostNode(1, 2),)), Candidate("b", 10, 5, (HostNode(1, 3),))),
     "same for every candidate"),
    ((Candidate("a", 10, 5, (HostNode(1, 2), HostNode(1, 2))),), "twice"),
])
def test_invalid_candidates_are_rejected(cands, message):
    inp = SelectorInput(cands, (), 100, 1, 100, 4, StepCost(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match=message):
        select_greedy(inp)


def test_invalid_decisions_are_rejected():
    cost = StepCost(0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        SelectorInput((), (), -1, 1, 0, 1, cost)                       # negative budget
    with pytest.raises(ValueError):
        SelectorInput((), (), 1, 1, 0, 1, cost, other_step_times=(0.1,))   # rows missing
    with pytest.raises(ValueError):
        SelectorParams(force_after_rounds=0)
    both = SelectorInput((Candidate("a", 10, 5),), (Resident("a", 10),), 100, 1, 100, 4, cost)
    with pytest.raises(ValueError, match="both resident and candidate"):
        select_greedy(both)
