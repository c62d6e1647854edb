"""The end of a run, as text and JSON: PipeMax's decisions from stage 0, bytes over all stages."""

from __future__ import annotations

import json

from pipemax_sglang.batch.progress import Tally
from pipemax_sglang.batch.summary import BatchSummary, parked_now, pipemax_totals

STAGES = [
    {"pp_rank": 0, "pipemax": {"parks": 61, "rejoins": 61, "recomputes": 0, "parked_peak": 21, "parked_now": 4,
                               "h2d_bytes": 500_000, "d2h_bytes": 60_000, "prefetch_stall_s": 0.25}},
    {"pp_rank": 1, "pipemax": {"parks": 61, "rejoins": 61, "recomputes": 0, "parked_peak": 21, "parked_now": 4,
                               "h2d_bytes": 400_000, "d2h_bytes": 40_000, "prefetch_stall_s": 0.5}},
]


def _summary(**over) -> BatchSummary:
    tally = Tally(total=64, started=0.0, ok=63, failed=1, prompt_tokens=4115, output_tokens=2753)
    kw = dict(input="in.jsonl", output="out.jsonl", outcome="complete", plan_requests=64, plan_invalid=0,
              already_done=0, planned=64, tally=tally, wall_s=24.6, engine_start_s=70.5, stages=STAGES)
    kw.update(over)
    return BatchSummary.of_run(**kw)


def test_pipemax_totals_take_decisions_from_stage_0_and_sum_bytes():
    totals = pipemax_totals(STAGES)
    assert totals == {"stages": 2, "parks": 61, "rejoins": 61, "recomputes": 0, "parked_peak": 21,
                      "h2d_bytes": 900_000, "d2h_bytes": 100_000, "prefetch_stall_s": 0.75}
    assert parked_now(STAGES) == 4


def test_without_pipemax_there_is_nothing_to_total():
    assert pipemax_totals([]) is None and parked_now([]) is None


def test_text_states_counts_tokens_rates_and_pipemax():
    text = _summary().text()
    first, tokens, pipemax, where = text.splitlines()
    assert first == "pipemax-run-batch: complete: 63 ok, 1 failed"
    assert "4115 prompt, 2753 output in 24.6 s: 112 output tok/s, 279 total tok/s (engine start 70.5 s)" in tokens
    assert "PipeMax (2 stages): 61 parks, 61 rejoins, 0 recomputes, parked peak 21; H2D 0.9 MB, D2H 0.1 MB" in pipemax
    assert "out.jsonl" in where and "custom_id" in where


def test_an_interrupted_run_says_what_is_left_and_how_to_finish():
    tally = Tally(total=64, started=0.0, ok=20)
    first = _summary(outcome="interrupted by SIGTERM", tally=tally, already_done=10).text().splitlines()[0]
    assert first == ("pipemax-run-batch: interrupted by SIGTERM: 20 ok, 0 failed; 10 already in out.jsonl; "
                     "44 left: run the same command again to finish")


def test_json_has_the_same_figures(tmp_path):
    path = tmp_path / "summary.json"
    _summary().write_json(path)
    doc = json.loads(path.read_text())
    assert (doc["ok"], doc["failed"], doc["left"], doc["output_tokens"]) == (63, 1, 0, 2753)
    assert doc["output_tok_s"] == round(2753 / 24.6, 2)
    assert doc["pipemax"]["parks"] == 61 and doc["pipemax"]["h2d_bytes"] == 900_000
    assert not (tmp_path / "summary.json.tmp").exists()
