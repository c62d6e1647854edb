"""Scripted scenarios whose timelines are worked out by hand (arithmetic in the comments),
and the cost arithmetic of performance-model.md checked number by number."""

from dataclasses import replace

import numpy as np
import pytest
from sim_cases import MS, flat_layout, link_machine, run, workload

from pipemax_sglang.core import PROFILES
from pipemax_sglang.sim import Machine, load_model
from pipemax_sglang.sim.costs import DoesNotFit, layout, pcie_ceiling, pp_layout, tp_layout
from pipemax_sglang.sim.recompute import RecomputeScheduler
from pipemax_sglang.sim.turn import DECODE, Effects, Turn


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


def test_pp_stage_costs_are_the_calibrated_step():
    # Llama-3-70B on 8x RTX 4090, stage 3 (10 layers, no embedding, no head):
    #   layer params 855.6 M -> weights W = 10 * 855.6e6 * 2 B = 17.11 GB, N = 8.556 G params
    #   64 rows: t_m = W / (e_gemm 1008e9), t_c = 2 N 64 / (e_tc 165.2e12), overlapped by the
    #   fitted p-norm; attention reads k_s = 40,960 B a context token at the GEMV efficiency;
    #   plus the 0.5 ms overhead. KV room (24 - 17.11 - 1.5) GB / 40,960 B.
    m = load_model("llama-3-70b")
    mach = Machine.named("rtx4090")
    k = mach.kernels
    lay = pp_layout(m, mach, 8)
    st = lay.stages[3]
    assert m.layer_params == 855_654_400
    assert st.weight_bytes == 10 * 855_654_400 * 2
    w, n = 10 * 855_654_400 * 2, 10 * 855_654_400
    tm = w / (k.gemm_hbm * 1008e9)
    tc = 2 * n * 64 / (k.tensor * 165.2e12)
    p = k.overlap_p
    kv = 40960 / (k.gemv_hbm * 1008e9)
    assert st.decode_time(64, 1000) == pytest.approx(0.5e-3 + (tm ** p + tc ** p) ** (1 / p) + 1000 * kv)
    assert max(tm, tc) < st.decode_time(64, 0) - 0.5e-3 < tm + tc      # overlapped, not summed
    # <= 16 rows stream the weights at the GEMV efficiency
    assert st.decode_time(1, 0) == pytest.approx(0.5e-3 + w / (k.gemv_hbm * 1008e9), rel=1e-3)
    assert st.capacity_tokens == int((24e9 - 17.1130880e9 - 1.5e9) // 40960)
    # the policy's line a + b rows + c ctx stays within 10% of the step over 16-256 rows
    for rows in (16, 32, 64, 128, 256):
        assert st.step.predict(rows, 0) == pytest.approx(st.decode_time(rows, 0), rel=0.1)
    assert st.step.c == pytest.approx(kv)
    # Stage 0 holds the embedding and stage 7 the head: less KV room; the pipeline's is theirs.
    assert lay.capacity_tokens == min(s.capacity_tokens for s in lay.stages) < st.capacity_tokens


def test_tp_step_pays_the_fitted_all_reduces_and_the_logits_gather():
    # Llama-3-70B, TP 8 on RTX 4090: 160 all-reduces a step, each 2*7 ring steps of the
    # fitted hop latency and 2*7/8 * rows * 8192 * 2 B over the fitted bus bandwidth; the last
    # stage gathers the vocab-parallel logits: half a ring of rows * 128,256 * 2 B.
    m = load_model("llama-3-70b")
    mach = Machine.named("rtx4090")
    ar = mach.allreduce
    f = tp_layout(m, mach, 8).stages[0].forward
    assert f.fixed_s == pytest.approx(0.5e-3 + 160 * 14 * ar.hop_s + 7 * ar.hop_s)
    assert f.comm_s_per_row == pytest.approx(160 * 14 / 8 * 8192 * 2 / ar.bus_bytes_per_s)
    assert f.gather_s_per_row == pytest.approx(7 / 8 * 128256 * 2 / ar.bus_bytes_per_s)
    assert tp_layout(m, mach, 8).stages[0].kv_bytes == 40960     # 8 KV heads over 8 GPUs
    # a 4 x 2 hybrid: each stage's all-reduces span its 4 GPUs; only the last gathers logits
    hy = layout(m, mach, 4, 2)
    assert [s.forward.gather_s_per_row > 0 for s in hy.stages] == [False, True]
    assert hy.stages[0].forward.comm_s_per_row == pytest.approx(
        80 * 6 / 4 * 8192 * 2 / ar.bus_bytes_per_s)
    assert hy.stages[0].kv_bytes == 2 * 40 * 2 * 128 * 2      # 40 layers, 2 KV heads a GPU


def test_a_model_that_does_not_fit_says_so():
    with pytest.raises(DoesNotFit):
        pp_layout(load_model("llama-3-70b"), Machine.named("rtx4090"), 2)
    assert PROFILES["l20"].hbm_gb == 48.0
    assert link_machine().policy_transfer_model().h2d_bytes_per_s == pytest.approx(25e9)


class _Scripted:
    """A scheduler that runs turns 0..n-1, one request each, with the given moves."""

    def __init__(self, moves: list[int], times: tuple[float, ...]) -> None:
        self.moves, self.times, self.n = moves, times, 0

    def decide(self, k, now, prev):
        if k >= len(self.moves):
            return Turn(k, k % 2, "empty", (), (0.0,) * len(self.times))
        self.n += 1
        t = Turn(k, k % 2, DECODE, (k,), self.times, rows=1, sum_ctx=1)
        t.moves = self.moves[k]
        return t

    def done(self):
        return self.n >= len(self.moves)

    def backlog(self):
        return 0

    def finished(self):
        return self.n


def test_the_schedulers_moves_delay_a_launch_only_past_the_turn_they_overlap():
    # P = M = 2, 10 ms a step. Turn 2 is decided when turn 0 leaves stage 0 (10 ms) and its
    # decision made 30 moves at 0.5 ms (and no price a turn): stage 0's CPU works from 10 to
    # 25 ms while the GPU
    # runs turn 1 (10-20), so the GPU waits 5 ms:
    #   stage 0: t0 [0,10] t1 [10,20] (idle) t2 [25,35] t3 [35,45]
    #   stage 1: t0 [10,20] t1 [20,30] t2 [35,45] t3 [45,55]
    # Stage 1 launched t1 at 20 and does t2's moves by 35, when t2 arrives: no wait there.
    lay = flat_layout(2, 10 * MS, capacity=1000)
    mach = replace(link_machine(gpus=2), move_s=0.5 * MS, move_turn_s=0.0)
    eng, st = run(lay, _Scripted([0, 0, 30, 0], (10 * MS, 10 * MS)), M=2, machine=mach)
    starts = sorted((s, k, round(t / MS, 6)) for ev, s, k, t in eng.trace if ev == "start")
    assert starts == [(0, 0, 0), (0, 1, 10), (0, 2, 25), (0, 3, 35),
                      (1, 0, 10), (1, 1, 20), (1, 2, 35), (1, 3, 45)]
    assert st.makespan_s == pytest.approx(55 * MS)
    assert st.cpu_wait_s == pytest.approx((5 * MS, 0.0))
    assert st.moves == 30
    # 20 moves (10 ms) fit beside turn 1: nothing waits
    eng, st = run(lay, _Scripted([0, 0, 20, 0], (10 * MS, 10 * MS)), M=2, machine=mach)
    assert st.makespan_s == pytest.approx(50 * MS) and st.cpu_wait_s == (0.0, 0.0)
    # ... unless the turn that moves pays 3 ms more on top: the GPU waits those 3 ms
    eng, st = run(lay, _Scripted([0, 0, 20, 0], (10 * MS, 10 * MS)), M=2,
                  machine=replace(mach, move_turn_s=3 * MS))
    assert st.makespan_s == pytest.approx(53 * MS)
    assert st.cpu_wait_s == pytest.approx((3 * MS, 0.0))


def test_on_a_cpu_host_the_moves_add_to_the_turn():
    # moves_serialize: turn 2's 20 moves (10 ms) start when stage 0 is done with turn 1
    # (20 ms), so it launches at 30: what fitted beside turn 1 on a GPU now costs 10 ms
    lay = flat_layout(2, 10 * MS, capacity=1000)
    mach = replace(link_machine(gpus=2), move_s=0.5 * MS, move_turn_s=0.0, moves_serialize=True)
    eng, st = run(lay, _Scripted([0, 0, 20, 0], (10 * MS, 10 * MS)), M=2, machine=mach)
    starts = sorted((s, k, round(t / MS, 6)) for ev, s, k, t in eng.trace if ev == "start" and s == 0)
    assert starts == [(0, 0, 0), (0, 1, 10), (0, 2, 30), (0, 3, 40)]
    assert st.makespan_s == pytest.approx(60 * MS)


def test_td_pipe_splits_the_decode_evenly_over_the_micro_batches():
    # P = M = 2, 10 ms a step, ample memory, 8 requests of prompt 10, output 5. Stock SGLang
    # prefills all 8 in micro-batch 0 (one chunk) and decodes them there every other turn,
    # micro-batch 1 empty. TD-Pipe prefills them in turn 0 too (8 x 10 tokens < its 192),
    # then its decode turns take total // P = 4 each from the ready queue: 4 + 4 rows.
    from pipemax_sglang.sim.tdpipe import TDPipeScheduler
    w = workload([10] * 8, [5] * 8)
    lay = flat_layout(2, 10 * MS, capacity=10_000)
    eng, st = run(lay, RecomputeScheduler(lay, w, 2, 4096, 1 << 30), M=2)
    eng2, st2 = run(lay, TDPipeScheduler(lay, w, 2, 1 << 30), M=2)
    assert st.tokens_out == st2.tokens_out == 40
    rows = [r for r, d in zip(st2.series["rows"], st2.series["decode"]) if d]
    assert rows == [4] * 8                         # 4 decode tokens each, in 8 turns of 4
    stock_rows = [r for r, d in zip(st.series["rows"], st.series["decode"]) if d]
    assert stock_rows == [8] * 4
    # A step that does not grow with rows gains nothing from the split: stock's empty turns
    # pass in no time, so it runs turns 0, 2, 4, 6, 8 back to back, 100 ms; TD-Pipe's 4-row
    # turns 2-9 follow turn 0's output at 20 ms, one a slot: 110 ms.
    assert st.makespan_s == pytest.approx(100 * MS) and st2.makespan_s == pytest.approx(110 * MS)


class _Loading(_Scripted):
    """Turns of one row each; from turn 2 on, each loads `ring` tokens for itself, and every
    turn reserves a resident token when it starts (so a load waits for the turn before it to
    have reserved: engine._reserved_before)."""

    def __init__(self, n: int, ring: int, times: tuple[float, ...]) -> None:
        super().__init__([0] * n, times)
        self.ring = ring

    def decide(self, k, now, prev):
        t = super().decide(k, now, prev)
        if t.kind == DECODE:
            t.effects = Effects(reserve=1)
            if k >= 2:
                t.ring = t.h2d = self.ring
        return t


def test_a_load_starts_beside_the_forward_of_the_turn_before_its_own():
    # P = M = 2, 10 ms a step, no hop; from turn 2 on each turn loads 5,000 tokens of
    # 1,000 B at 1 GB/s (5 ms) on every stage. A load is queued when the turn M before it
    # leaves the stage and may start once the turn before it has started there (reserved):
    #   stage 0: t1 [10,20], t2's load [10,15], t2 [20,30], t3's load [20,25], t3 [30,40] ...
    #   stage 1: t1 [20,30] (started on arrival), t2's load [20,25], t2 [30,40] ... t5 [60,70]
    # A load that waited for the next event on its link instead went when the turn before it
    # ended on stage 1 ([30,35]: t2 [35,45]): 80 ms, stage 1 stalled 10 ms.
    lay = flat_layout(2, 10 * MS, capacity=100_000)
    eng, st = run(lay, _Loading(6, 5_000, (10 * MS, 10 * MS)), M=2, machine=link_machine(gbps=1.0, gpus=2))
    events = sorted((s, k, ev, round(t / MS, 6)) for ev, s, k, t in eng.trace if s == 1 and k >= 1)
    assert events[:5] == [(1, 1, "start", 20), (1, 2, "landed", 25), (1, 2, "start", 30),
                          (1, 3, "landed", 35), (1, 3, "start", 40)]
    assert st.makespan_s == pytest.approx(70 * MS)
    assert st.stage_stall_s == (0.0, 0.0)
