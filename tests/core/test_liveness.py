"""Liveness of the decider, without SGLang: random pools, arrivals, device and host sizes, M
and stream modes, driven turn by turn through the stage model (sim/stage_model.py), which
applies every plan at the point a live stage would and keeps the books.

Properties:
  - everyone finishes: every request that fits the device arrives, runs and completes;
  - bounded waits: a request parked at turn t rejoins by t + M (A + N + 2L) turns, A the
    selector's forcing age in rounds, N the requests, L the longest output: A rounds until
    it is forced (and from then on admission stops, core/admission.py); at most N forced
    ahead of it, a round each; the room it waits for is held by residents, which leave
    within L cycles, and by the rows the forced ones ahead of it brought back, which also
    leave within L (over 3,000 random scenarios the worst wait was 0.84 of this bound; the
    first guess, M (A + N + L), was exceeded);
  - plans fit: no plan's rejoins take more than the device less its reserve and what stays;
  - the books: device tokens in use never exceed D, host tokens never exceed H, a request
    is in one place at a time (asserted by the model at every turn).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipemax_sglang.core.admission import FORCE_AFTER
from pipemax_sglang.core.decider import Decider, DeciderConfig
from pipemax_sglang.sim.stage_model import Req, StageModel

K = 1024            # KV bytes per token


@st.composite
def scenarios(draw):
    stages = draw(st.sampled_from([1, 2]))
    M = 1 if stages == 1 else stages + draw(st.integers(0, 2))
    D = draw(st.integers(200, 3000))
    H = draw(st.sampled_from([10**6, 3 * D, D, D // 2]))
    n = draw(st.integers(1, 40))
    reqs = []
    for i in range(n):
        out = draw(st.integers(1, 48))
        # fits the device alone: prompt, output and a token of growth within D - 5% - row slack
        prompt = draw(st.integers(4, max(4, min(300, D - D // 20 - out - 70))))
        reqs.append(Req(f"r{i}", prompt, out, arrival=i))
    arrivals = sorted(draw(st.lists(st.integers(0, 150), min_size=n, max_size=n)))
    return dict(
        stages=stages, M=M, D=D, H=H, reqs=reqs, arrivals=arrivals,
        row_cap=draw(st.integers(1, 64)),
        stream=draw(st.sampled_from(["auto", "always", "never"])),
        serialize=draw(st.booleans()),
        move_s=draw(st.sampled_from([None, 1e-5, 1e-3])),
        link=draw(st.sampled_from([None, 1e7, 1e9])),
    )


def _run(sc):
    decider = Decider(DeciderConfig(stream=sc["stream"]), K, sc["stages"], sc["link"],
                      moves_serialize=sc["serialize"])
    model = StageModel(decider, sc["M"], sc["D"], sc["H"], sc["row_cap"], move_s=sc["move_s"])
    reqs, arrivals = sc["reqs"], sc["arrivals"]
    longest = max(r.max_new for r in reqs)
    limit = arrivals[-1] + sc["M"] * sum(r.max_new + 2 for r in reqs) * 4 + 1000
    plans, k = [], 0
    while (k < len(reqs) or not model.done()) and model.turn < limit:
        while k < len(reqs) and arrivals[k] <= model.turn:
            model.add(reqs[k])
            k += 1
        rec = model.step()
        if rec.plan is not None and rec.plan.rejoin:
            plans.append(rec)
    return model, plans, longest


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_request_finishes_and_no_park_outlasts_the_bound(sc):
    model, _, longest = _run(sc)
    reqs = sc["reqs"]
    assert model.done(), (f"stuck at turn {model.turn}: waiting {len(model.waiting)}, parked "
                          f"{len(model.pool)}, rows {[len(x) for x in model.mbs]}, {model.counts}")
    assert len(model.finished) == len(reqs)
    assert all(r.out == r.max_new for r in reqs)
    bound = sc["M"] * (FORCE_AFTER + len(reqs) + 2 * longest)
    worst = max(reqs, key=lambda r: r.longest_wait)
    assert worst.longest_wait <= bound, (worst.rid, worst.longest_wait, bound, model.counts)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_no_plan_asks_for_more_device_room_than_exists(sc):
    model, plans, _ = _run(sc)
    for rec in plans:
        view = rec.view
        staying = sum(c + 1 for c in view.next_residents)
        asked = sum(rec.pool_kv[rid] + 1 for rid in rec.plan.rejoin)   # KV and a token each
        assert asked + staying <= view.device_tokens - model.decider.reserve(view), rec


def test_a_pressed_pipeline_parks_and_rejoins_in_the_model():
    # the liveness tests are not vacuous: under pressure the model does park and rejoin
    sc = dict(stages=2, M=4, D=600, H=10**6, row_cap=64, stream="always", serialize=False,
              move_s=None, link=None, arrivals=[0] * 12,
              reqs=[Req(f"r{i}", 60, 30, arrival=i) for i in range(12)])
    model, plans, _ = _run(sc)
    assert model.done() and model.counts["parks"] > 0 and model.counts["rejoins"] > 0
    assert plans
