"""One decider: a live run's decisions, replayed through the simulator's decider, are the same.

The fixtures are stage 0's decision logs (core/decision_log.py) from live CPU runs of the
real SGLang stack with --pipemax-record-batches, recorded by
tests/integration/test_pipemax_parking.py (which also replays its own fresh recording):
  decisions-pp2-tiny.jsonl.gz           the tiny model, pp 2, M = 4, device KV at 1/4 of
                                        what is in flight, --pipemax-stream auto
  decisions-pp2-tiny-link20mb.jsonl.gz  the same at --pipemax-stream always with the link
                                        emulated at 20 MB/s (the budget binds)
Re-recorded when the decider's plans change (a replay of an older recording gives the
plans this code makes, not the ones recorded). decisions-pp2-tiny-older-view.jsonl.gz is
such an older recording (its views lack the move price's turn share): kept to show that a
log of an older format still reads.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import replace

import pytest

from pipemax_sglang.core import decision_log
from pipemax_sglang.core.decider import Decider
from pipemax_sglang.sim import pipemax as sim_pipemax
from pipemax_sglang.sim.replay import replay

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
LOGS = ["decisions-pp2-tiny.jsonl.gz", "decisions-pp2-tiny-link20mb.jsonl.gz"]
OLDER_VIEW_LOG = "decisions-pp2-tiny-older-view.jsonl.gz"


def test_the_simulator_decides_with_the_core_decider():
    assert sim_pipemax.Decider is Decider


@pytest.mark.parametrize("name", LOGS)
def test_replayed_plans_equal_the_live_plans(name):
    recorded, replayed = replay(os.path.join(FIXTURES, name))
    moving = [p for p in recorded if p.park or p.rejoin]
    assert len(moving) >= 20, "the recording holds too few decisions that move anything"
    assert replayed == recorded


def test_the_replay_notices_a_different_state(tmp_path):
    """A replay that cannot differ proves nothing: give the decider a smaller device at one
    moving decision (and keep the rest) and its plans change."""
    rows = decision_log.read(os.path.join(FIXTURES, LOGS[1]))
    i = next(j for j, r in enumerate(rows) if r["call"] == "decide" and r["plan"]["rejoin"])
    rows[i]["view"]["device_tokens"] = 0
    path = str(tmp_path / "changed.jsonl.gz")
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    recorded, replayed = replay(path)
    assert replayed != recorded


def test_a_log_without_init_is_refused(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"call": "observe", "rows": 1, "sum_context": 8, "seconds": 0.1}) + "\n")
    with pytest.raises(ValueError, match="before the decider's init"):
        replay(str(path))


def test_views_and_plans_survive_the_round_trip():
    rows = decision_log.read(os.path.join(FIXTURES, OLDER_VIEW_LOG))
    d = next(r for r in rows if r["call"] == "decide" and r["plan"]["park"])
    view = decision_log.view_of(d["view"])
    plan = decision_log.plan_of(d["plan"])
    out = json.loads(decision_log.decide_line(view, decision_log.pool_of(d["pool"]),
                                              d["planned"], plan))
    # a field newer than the log comes back at its default: the move price's turn share
    assert set(out["view"]) - set(d["view"]) == {"move_turn_s"}
    assert out["view"].pop("move_turn_s") == 0.0
    assert out == d
    # a view of this code, with the fitted move price's turn share, round-trips whole
    priced = replace(view, move_s=47e-6, move_turn_s=4.1e-3)
    line = json.loads(decision_log.decide_line(priced, [], {}, plan))
    assert decision_log.view_of(line["view"]) == priced
    assert replace(plan) == plan and isinstance(plan.park, tuple)
