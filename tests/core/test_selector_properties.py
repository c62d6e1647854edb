"""Properties every selector keeps on random inputs (hypothesis)."""

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from selector_cases import selector_inputs

from pipemax_sglang.core import (
    SELECTORS,
    feasible,
    objective,
    plan_totals,
    select_exact,
    select_greedy,
)

SETTINGS = settings(max_examples=150, deadline=None)


@SETTINGS
@given(selector_inputs())
def test_every_plan_obeys_the_hard_constraints(inp):
    for name, select in SELECTORS.items():
        plan = select(inp)
        assert len(set(plan.rejoin)) == len(plan.rejoin), name          # each request once
        assert len(set(plan.park)) == len(plan.park), name
        assert set(plan.forced) <= set(plan.rejoin), name
        assert list(plan.rejoin) == sorted(plan.rejoin), name
        t = plan_totals(inp, plan.rejoin, plan.park)
        assert plan.bytes == inp.kv_bytes_per_token * t.host_tokens <= inp.budget_bytes, name
        assert plan.device_tokens == t.device_tokens <= t.device_cap, name
        assert plan.rows == t.rows <= inp.row_cap, name
        assert feasible(inp, plan.rejoin, plan.park), name
        ref = objective(inp, plan.rejoin, plan.park)
        assert abs(plan.objective - ref) <= 1e-9 * max(1.0, abs(ref)), name
        assert 0.0 <= plan.utilisation <= 1.0 + 1e-12


@SETTINGS
@given(selector_inputs(), st.randoms(use_true_random=False))
def test_equal_input_gives_an_identical_plan_whatever_the_order(inp, rnd):
    shuffled = list(inp.candidates)
    rnd.shuffle(shuffled)
    residents = list(inp.residents)
    rnd.shuffle(residents)
    other = dataclasses.replace(inp, candidates=tuple(shuffled), residents=tuple(residents))
    for name, select in SELECTORS.items():
        assert select(inp) == select(inp) == select(other), name


@SETTINGS
@given(selector_inputs())
def test_refinement_never_scores_below_its_greedy_start_nor_above_the_optimum(inp):
    start = select_greedy(inp, refine_plan=False)
    final = select_greedy(inp)
    best = select_exact(inp)
    assert final.objective >= start.objective
    assert final.objective <= best.objective + 1e-9 * max(1.0, abs(best.objective))
    # The fixed part (park rule, forced rejoins) is shared: same park set, same forced set.
    assert final.park == best.park and final.forced == best.forced


@SETTINGS
@given(selector_inputs())
def test_none_rejoins_nothing_and_the_head_of_the_forced_queue_is_served(inp):
    assert SELECTORS["none"](inp).rejoin == ()
    plan = select_greedy(inp)
    a = inp.params.force_after_rounds
    queue = sorted((c for c in inp.candidates if c.rounds_waited >= a),
                   key=lambda c: (-c.rounds_waited, c.arrival, c.req_id))
    everyone = tuple(r.req_id for r in inp.residents)
    # The first one in the queue that fits alone, once every member is parked, is served.
    head = next((c for c in queue if feasible(inp, (c.req_id,), everyone)), None)
    if head is not None:
        assert head.req_id in plan.forced
    assert set(plan.forced) <= {c.req_id for c in queue}


def test_random_larger_instances_stay_feasible_and_deterministic():
    # Beyond hypothesis' sizes: a few hundred candidates, exercising the partial sort.
    from selector_cases import COST

    from pipemax_sglang.core import Candidate, HostNode, Resident, SelectorInput
    rng = random.Random(11)
    nodes = [HostNode(i, rng.randint(32, 256)) for i in range(6)]
    for n in (300, 900):
        cands = []
        for i in range(n):
            ctx = rng.randint(64, 4000)
            ns = (rng.choice(nodes),) if rng.random() < 0.3 else ()
            host = max(rng.randint(0, ctx), sum(x.tokens for x in ns))
            cands.append(Candidate(f"q{rng.getrandbits(40):x}", max(ctx, host), host, ns,
                                   rng.randint(0, 20), i))
        inp = SelectorInput(tuple(cands), tuple(Resident(f"s{i}", 500) for i in range(40)),
                            budget_bytes=4096 * 60_000, kv_bytes_per_token=4096,
                            device_tokens_free=80_000, row_cap=160, cost=COST,
                            other_step_times=(0.05, 0.06, 0.04), other_rows=(60, 70, 50),
                            num_stages=4)
        plan = select_greedy(inp)
        assert feasible(inp, plan.rejoin, plan.park) and len(plan.rejoin) > 10
        rng.shuffle(cands)
        assert select_greedy(dataclasses.replace(inp, candidates=tuple(cands))) == plan
