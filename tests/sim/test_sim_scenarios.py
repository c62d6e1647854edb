"""Scripted scenarios whose timelines are worked out by hand (arithmetic in the comments),
and the cost arithmetic of performance-model.md checked number by number."""

import numpy as np
import pytest
from sim_cases import MS, flat_layout, link_machine, run, workload

from pipemax_sglang.core import PROFILES
from pipemax_sglang.sim import Machine, load_model
from pipemax_sglang.sim.costs import DoesNotFit, pcie_ceiling, pp_layout, tp_layout
from pipemax_sglang.sim.recompute import RecomputeScheduler
from pipemax_sglang.sim.turn import DECODE, Turn


def test_one_micro_batch_carries_everything_through_two_stages():
    # P = M = 2, every step 10 ms on each stage, no hop time. Two requests, prompt 10,
    # output 3. Turn 0 (mb 0) prefills both (chunk 4096); turn 1 (mb 1) has nothing.
    #   stage 0: t0 [0,10]   t2 [20,30] (waits for t0's output at 20)   t4 [40,50]
    #   stage 1: t0 [10,20]  t2 [30,40]                                  t4 [50,60]
    # tokens: 2 from the prefill, 2 from t2, 2 from t4 = 6 in 60 ms = 100 tok/s. Empty:
    # t1, t3, t5 (mb 1) and t6, decided as t4 leaves stage 0, when nothing is left to run.
    w = workload([10, 10], [3, 3])
    lay = flat_layout(2, 10 * MS, capacity=1000)
    eng, st = run(lay, RecomputeScheduler(lay, w, 2, 4096, 1 << 30), M=2)
    assert st.tokens_out == 6
    assert st.makespan_s == pytest.approx(60 * MS)
    assert st.turns == {"decode": 2, "prefill": 1, "empty": 4}
    starts = [(s, k, round(t / MS, 6)) for ev, s, k, t in eng.trace
              if ev == "start" and k in (0, 2, 4)]
    assert starts == [(0, 0, 0), (1, 0, 10), (0, 2, 20), (1, 2, 30), (0, 4, 40), (1, 4, 50)]


def test_two_micro_batches_keep_both_stages_busy():
    # Same stages; four requests, prompt 10, output 3, chunk 20: turn 0 admits r0 r1, turn 1
    # admits r2 r3. Each turn waits for its micro-batch's previous output (2 stages ahead):
    #   stage 0: t0 [0,10] t1 [10,20] t2 [20,30] t3 [30,40] t4 [40,50] t5 [50,60]
    #   stage 1:           t0 [10,20] t1 [20,30] t2 [30,40] t3 [40,50] t4 [50,60] t5 [60,70]
    # 12 tokens in 70 ms = 171.4 tok/s; both stages busy from 10 ms to 60 ms.
    w = workload([10] * 4, [3] * 4)
    lay = flat_layout(2, 10 * MS, capacity=1000)
    eng, st = run(lay, RecomputeScheduler(lay, w, 2, 20, 1 << 30), M=2)
    assert st.tokens_out == 12
    assert st.makespan_s == pytest.approx(70 * MS)
    assert st.stage_busy_s == pytest.approx((60 * MS, 60 * MS))
    assert 12 / st.makespan_s == pytest.approx(171.43, rel=1e-3)


def test_a_decode_that_runs_out_of_memory_retracts_as_sglang_does():
    # One stage, one micro-batch, 22 device tokens; three running requests:
    #   r0: prompt 5, 3 tokens out (kv 7)   r1: prompt 6, 1 out (kv 6)   r2: prompt 8, 1 out (kv 8)
    # used = 21; a decode needs 3 more slots: 24 > 22. SGLang keeps (outputs, -prompt)
    # largest first and always retracts at least one: r2 goes first (1 output, longer
    # prompt than r1); then 13 + 2 = 15 <= 22 fits. r2's 8 tokens are freed and it waits
    # to be prefilled again over prompt + 1 generated = 9 tokens (a recompute).
    w = workload([5, 6, 8], [10, 10, 10])
    lay = flat_layout(1, 10 * MS, capacity=22)
    sched = RecomputeScheduler(lay, w, 1, 4096, 1 << 30)
    sched.waiting.clear()
    book = sched.book
    book.gen[:] = [3, 1, 1]
    book.kv[:] = [7, 6, 8]
    book.where[:] = 1
    sched.running[0] = [0, 1, 2]
    sched.used = 21
    turn = sched.decide(5, 0.0, Turn(1, 0, "empty", (), (0.0,)))
    assert turn.kind == DECODE and turn.reqs == (0, 1)
    assert turn.effects.free == 8 and turn.effects.reserve == 2
    assert sched.waiting == [2] and book.prefill_len(2) == 9
    # new_token_ratio after a retraction: (decoded + 20 * n) / (max_new + 1) = (4 + 40) / 21
    assert sched.ratio == pytest.approx(min(1.0, 44 / 21))


def test_ceiling_matches_the_worked_example():
    # Llama-70B fp16, kv_tok 320 KiB, 8 GPUs at 25 GB/s: 1,192 / 596 / 298 tok/s at
    # L = 512 / 1,024 / 2,048 (performance-model.md).
    kv = load_model("llama-3-70b").kv_bytes_per_token
    assert kv == 327680
    got = [pcie_ceiling(8, 25e9, L, kv) for L in (512, 1024, 2048)]
    assert np.round(got) == pytest.approx([1192, 596, 298])
    # A switch shared by 4 GPUs divides each GPU's sustained rate by 4.
    shared = Machine.named("l40", gpus_per_switch=4)
    assert shared.pcie_bytes_per_s() == pytest.approx(25e9 / 4)


def test_pp_stage_costs_are_the_roofline_terms():
    # Llama-3-70B on 8x RTX 4090, stage 3 (10 layers, no embedding, no head):
    #   layer params 855.6 M -> weights 10 * 855.6e6 * 2 B = 17.11 GB
    #   a = 17.11e9 / 1008e9 + 0.5 ms = 17.48 ms;  b = 2 * 8.556e9 / 165.2e12 = 103.6 us
    #   c = k_s / BW = 40,960 / 1008e9 = 40.6 ns;  KV room (24 - 17.11 - 1.5) GB / 40,960 B
    m = load_model("llama-3-70b")
    lay = pp_layout(m, Machine.named("rtx4090"), 8)
    st = lay.stages[3]
    assert m.layer_params == 855_654_400
    assert st.weight_bytes == 10 * 855_654_400 * 2
    assert st.step.a == pytest.approx(17.1131e9 / 1008e9 + 0.5e-3, rel=1e-4)
    assert st.step.b == pytest.approx(2 * 8.556544e9 / 165.2e12, rel=1e-6)
    assert st.step.c == pytest.approx(40960 / 1008e9)
    assert st.capacity_tokens == int((24e9 - 17.1130880e9 - 1.5e9) // 40960)
    # Stage 0 holds the embedding and stage 7 the head: less KV room; the pipeline's is theirs.
    assert lay.capacity_tokens == min(s.capacity_tokens for s in lay.stages) < st.capacity_tokens


def test_tp_step_pays_two_ring_all_reduces_a_layer():
    # Llama-3-70B, TP 8 on RTX 4090: 160 all-reduces a step, each 2*7 hops of 4 us latency
    # (8.96 ms a step) and 2*7/8 * rows * 8192 * 2 B over 25 GB/s (183.5 us a row).
    m = load_model("llama-3-70b")
    st = tp_layout(m, Machine.named("rtx4090"), 8).stages[0]
    read = (80 * m.layer_params + m.head_params) / 8
    assert st.step.a == pytest.approx(read * 2 / 1008e9 + 0.5e-3 + 160 * 14 * 4e-6)
    assert st.step.b == pytest.approx(2 * read / 165.2e12 + 160 * 14 / 8 * 8192 * 2 / 25e9)
    assert st.kv_bytes == 40960            # 8 KV heads over 8 GPUs: one each


def test_a_model_that_does_not_fit_says_so():
    with pytest.raises(DoesNotFit):
        pp_layout(load_model("llama-3-70b"), Machine.named("rtx4090"), 2)
    assert PROFILES["l20"].hbm_gb == 48.0
    assert link_machine().policy_transfer_model().h2d_bytes_per_s == pytest.approx(25e9)
