"""Scripted selector decisions with the arithmetic written out, and the exact solver
against brute force."""

import itertools
import random

import pytest
from hypothesis import given, settings
from selector_cases import selector_inputs

from pipemax_sglang.core import (
    SELECTORS,
    Candidate,
    HostNode,
    Resident,
    SelectorInput,
    SelectorParams,
    StepCost,
    feasible,
    objective,
    select_exact,
    select_greedy,
)

FREE = StepCost(0.0, 0.0, 0.0)          # no step-time effects: only value and constraints


def decision(cands, residents=(), budget=10**9, dev=10**9, rows=10**6, cost=FREE, **kw):
    return SelectorInput(tuple(cands), tuple(residents), budget_bytes=budget,
                         kv_bytes_per_token=1, device_tokens_free=dev, row_cap=rows, cost=cost,
                         **kw)


def test_story_a_shared_prefix_is_paid_once():
    sys_prompt = HostNode(7, 150)
    a = Candidate("a", 400, 200, (sys_prompt,))        # 150 shared + 50 own
    b = Candidate("b", 400, 200, (sys_prompt,))        # 150 shared + 50 own
    c = Candidate("c", 400, 180)                        # 180 own
    # budget 300 tokens: a + b = 150 + 50 + 50 = 250 fits; a + c = 380 does not.
    plan = select_greedy(decision([a, b, c], budget=300))
    assert plan.rejoin == ("a", "b") and plan.bytes == 250 and plan.host_tokens == 250
    # ... and the device counts the shared node once too: 250 host + 2 new tokens.
    assert plan.device_tokens == 252
    one = select_greedy(decision([a, b, c], budget=300, dev=251))
    assert len(one.rejoin) == 1                   # 250 + 2 > 251: only one fits
    assert select_exact(decision([a, b, c], budget=300)).rejoin == ("a", "b")


def test_story_an_aged_candidate_is_forced_in_first():
    big = Candidate("big", 900, 900, rounds_waited=4)
    small = [Candidate(f"s{i}", 100, 100) for i in range(10)]
    params = SelectorParams(force_after_rounds=4)
    # Budget 1000: by value per byte, ten small ones (10 rows) beat the big one (1 row)...
    patient = SelectorParams(force_after_rounds=5)
    plan = select_greedy(decision([big, *small], budget=1000, params=patient))
    assert "big" not in plan.rejoin and len(plan.rejoin) == 10
    # ...but once it has waited A = 4 rounds it goes first, and one small one fills up.
    plan = select_greedy(decision([big, *small], budget=1000, params=params))
    assert plan.forced == ("big",) and plan.rejoin == ("big", "s0")
    assert plan.bytes == 1000 and plan.utilisation == 1.0


def test_story_park_to_make_room_largest_context_first():
    residents = [Resident("r1", 300), Resident("r2", 900), Resident("r3", 500)]
    # No free device token: the three members need 3 for their next tokens. Parking r2
    # (largest context) frees 900 -> room for r1, r3 and a 600-token rejoin (+1 new token).
    cand = Candidate("c", 700, 600)
    plan = select_greedy(decision([cand], residents, dev=0))
    assert plan.park == ("r2",)
    assert plan.rejoin == ("c",) and plan.device_tokens == 600 + 3 <= 900
    # Row cap 2 with three members: park one even with memory to spare.
    assert select_greedy(decision([], residents, rows=2)).park == ("r2",)
    # Baselines park for room too, by the same rule.
    assert SELECTORS["fcfs"](decision([cand], residents, dev=0)).park == ("r2",)


def test_story_park_to_rebalance_a_micro_batch_that_idles_the_pipeline():
    # 4 stages, 4 micro-batches; the other three take 50 ms each. Ours holds three long
    # requests: t = 0.01 + 3e-5 * 6000 = 0.19 s. A cycle is max(0.15 + 0.19, 4 * 0.19) =
    # 0.76 s, of which 0.42 s idles the stages (bubble).
    cost = StepCost(0.01, 0.0, 3e-5)
    residents = [Resident("long1", 2500), Resident("long2", 2000), Resident("mid", 1500)]
    inp = decision([], residents, cost=cost, other_step_times=(0.05,) * 3,
                   other_rows=(40,) * 3, num_stages=4)
    plan = select_greedy(inp)
    # Parking long1 cuts t by 0.075 s and the bubble by 3 * 0.075 s; priced at the
    # pipeline's rate (123 rows / 0.76 s) that saves ~36 rows of work for the 1 row lost.
    assert plan.park[0] == "long1"
    assert plan.objective > objective(inp, (), ())
    assert plan.predicted_step_time < 0.19
    # Without the balance price (lambda = 0) nobody is parked.
    calm = decision([], residents, cost=cost, other_step_times=(0.05,) * 3, other_rows=(40,) * 3,
                    num_stages=4, params=SelectorParams(balance_weight=0.0))
    assert select_greedy(calm).park == ()


def test_story_filling_a_short_micro_batch_shrinks_the_bubble():
    # Others take 100 ms, ours is empty: adding rows up to 100 ms is free of bubble cost,
    # so the greedy takes every candidate that fits, short or long.
    cost = StepCost(0.02, 0.0, 1e-5)
    cands = [Candidate(f"c{i}", 1000 * (i + 1), 100) for i in range(5)]   # t adds 10..50 ms
    inp = decision(cands, cost=cost, other_step_times=(0.1, 0.1), other_rows=(50, 50),
                   num_stages=3)
    plan = select_greedy(inp)
    assert len(plan.rejoin) >= 3 and plan.objective == select_exact(inp).objective


def test_story_baselines_walk_their_own_order():
    cands = [Candidate("w", 500, 400, rounds_waited=1, arrival=3),
             Candidate("x", 500, 100, rounds_waited=0, arrival=2),
             Candidate("y", 500, 300, rounds_waited=5, arrival=1),
             Candidate("z", 500, 200, rounds_waited=2, arrival=0)]
    inp = decision(cands, budget=500)
    # fcfs: z(200) y(300) -> 500, full.          shortest: x(100) z(200) -> y(300)? 600 no;
    assert SELECTORS["fcfs"](inp).rejoin == ("y", "z")
    # shortest: x 100, z 200 (300), y 300 no (600), w 400 no -> x, z
    assert SELECTORS["shortest"](inp).rejoin == ("x", "z")
    # oldest: y 300 (rounds 5), z 200 (rounds 2) -> 500 full
    assert SELECTORS["oldest"](inp).rejoin == ("y", "z")
    assert SELECTORS["none"](inp).rejoin == ()
    # greedy maximises rows (+ ageing): x, z and... 100 + 200 = 300, + y = 600 > 500:
    # three rows never fit, so two rows with the most value: y (1 + 5/16) and z.
    assert SELECTORS["greedy"](inp).rejoin == ("y", "z")


def _brute_force(inp):
    """max J over every subset of the non-forced candidates, using only the reference
    definitions (objective, feasible) and the shared fixed part (park, forced)."""
    ref = select_greedy(inp)
    forced, park = ref.forced, ref.park
    free = [c.req_id for c in inp.candidates if c.req_id not in forced]
    best = -float("inf")
    for k in range(len(free) + 1):
        for extra in itertools.combinations(free, k):
            rejoin = tuple(sorted(forced + extra))
            if feasible(inp, rejoin, park):
                best = max(best, objective(inp, rejoin, park))
    return best


@settings(max_examples=120, deadline=None)
@given(selector_inputs(max_candidates=7))
def test_exact_solver_agrees_with_brute_force(inp):
    plan = select_exact(inp)
    assert plan.objective == pytest.approx(_brute_force(inp), rel=1e-9, abs=1e-9)
    assert feasible(inp, plan.rejoin, plan.park)


def test_exact_solver_refuses_large_inputs():
    cands = [Candidate(f"c{i:02d}", 10, 10) for i in range(30)]
    with pytest.raises(ValueError):
        select_exact(decision(cands))


def test_greedy_is_close_to_exact_on_seeded_small_instances():
    # The benchmark measures this on 1,000 instances; here a quick seeded sample.
    rng = random.Random(5)
    ratios = []
    for _ in range(60):
        cands = [Candidate(f"c{i}", rng.randint(50, 2000), 0) for i in range(rng.randint(4, 12))]
        cands = [c._replace(host_tokens=rng.randint(1, c.context_len),
                            rounds_waited=rng.randint(0, 15)) for c in cands]
        total = sum(c.host_tokens for c in cands)
        inp = decision(cands, [Resident(f"r{i}", rng.randint(50, 2000)) for i in range(6)],
                       budget=int(total * rng.uniform(0.2, 0.7)),
                       dev=int(total * rng.uniform(0.3, 1.0)),
                       rows=rng.randint(7, 16), cost=StepCost(0.02, 1e-4, 2e-6),
                       other_step_times=(0.03, 0.04, 0.05), other_rows=(30, 30, 30), num_stages=3)
        g, e = select_greedy(inp).objective, select_exact(inp).objective
        ratios.append(1.0 if e <= 0 else g / e)
    assert min(ratios) >= 0.9 and sum(ratios) / len(ratios) >= 0.99
