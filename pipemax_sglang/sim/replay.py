"""Replay a live run's decisions through the simulator's decider (the conformance check).

The simulator's PipeMax (pipemax.py) and the live stage 0 (sglang/stage.py) call the same
core Decider. This replays what a live stage 0 recorded (core/decision_log.py: its Decider's
construction, every decide with its view, pool and planned set, every observe_step) through
a Decider built by the simulator's own constructor, and returns the live plans and the
replayed ones side by side: equal lists mean the simulator would have made the live run's
decisions given the live run's state.
"""

from __future__ import annotations

from pipemax_sglang.core.decider import Decider, TurnPlan
from pipemax_sglang.core import decision_log as log


def replay(path: str) -> tuple[list[TurnPlan], list[TurnPlan]]:
    """(recorded plans, replayed plans), in decision order."""
    recorded: list[TurnPlan] = []
    replayed: list[TurnPlan] = []
    decider: Decider | None = None
    for rec in log.read(path):
        call = rec["call"]
        if call == "init":       # a stage restarts its decider only with a new process
            decider = Decider(log.config_of(rec["config"]), rec["kv_bytes_per_token"],
                              rec["num_stages"], rec["link_bytes_per_s"],
                              moves_serialize=rec["moves_serialize"])
        elif decider is None:
            raise ValueError(f"{path}: a {call} before the decider's init line")
        elif call == "observe":
            decider.observe_step(rec["rows"], rec["sum_context"], rec["seconds"])
        elif call == "loaded":
            decider.loaded(rec["turn"], rec["loaded_tokens"], rec["now"])
        elif call == "decide":
            recorded.append(log.plan_of(rec["plan"]))
            replayed.append(decider.decide(log.view_of(rec["view"]), log.pool_of(rec["pool"]),
                                           log.planned_of(rec["planned"])))
        else:
            raise ValueError(f"{path}: unknown call {call!r}")
    return recorded, replayed
