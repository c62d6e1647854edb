"""PipeMax's pure policy core: numpy and the standard library only (no torch, no sglang;
tests/core/test_import_boundary.py enforces it). The same code runs in the live scheduler
and in the simulator.

    kv.py             KV bytes per token, per pipeline stage, from a model config
    hardware.py       hardware profiles (datasheet) and fitting one from measurements
    fitting.py        robust non-negative least squares used by the fits
    cost_model.py     step time t = a + b*rows + c*sum(context), online fit; transfer time
    budget.py         sliding-window prefetch budget: a link timeline per stage
    capacity.py       the most context a micro-batch can hold a turn (D, C, M, reserve, cap)
    selector_types.py Candidate, Resident, SelectorInput, Plan
    objective.py      what a plan is worth (J) and whether it is allowed: defined once
    frame.py          the shared problem set-up: columns, park rule, ageing (forced rejoins)
    selection.py      a partial plan (totals, shared-node holders) as the search sees it
    selector.py       the greedy selector: stage 1 (orders, first fit) and select_greedy
    refine.py         its stage 2: local refinement by swap moves
    baselines.py      FCFS / shortest / oldest / no-offload, and the SELECTORS registry
    exact.py          exact solver for small instances
"""

from .baselines import SELECTORS, select_fcfs, select_none, select_oldest, select_shortest
from .budget import (BudgetPolicy, Commitment, LinkTimeline, PipelineBudget, PrefetchBudget,
                     StageBudget, pipelined_nows)
from .capacity import TurnOptimum, turn_optimum
from .cost_model import (PREFIX_MATCH_S, StepCost, StepCostModel, TransferModel, fit_step_cost,
                         prefix_reuse_min_tokens, prior_step_cost)
from .exact import select_exact
from .hardware import (PROFILES, HardwareProfile, LinkFit, Measurements, StepSample,
                       TransferSample, fit_link, fit_profile)
from .kv import ModelKVConfig, kv_bytes_per_token, pp_layer_split, stage_kv_bytes_per_token
from .objective import feasible, objective, plan_totals
from .selector import select_greedy
from .selector_types import (Candidate, HostNode, Plan, Resident, SelectorInput,
                             SelectorParams)

__all__ = [
    "PREFIX_MATCH_S", "PROFILES", "SELECTORS", "BudgetPolicy", "Candidate", "Commitment", "HardwareProfile",
    "HostNode", "LinkFit", "LinkTimeline", "Measurements", "ModelKVConfig", "PipelineBudget",
    "Plan", "PrefetchBudget", "Resident", "SelectorInput", "SelectorParams", "StageBudget",
    "StepCost", "StepCostModel", "StepSample", "TransferModel", "TransferSample", "TurnOptimum",
    "feasible",
    "fit_link", "fit_profile", "fit_step_cost", "kv_bytes_per_token", "objective",
    "pipelined_nows", "plan_totals", "pp_layer_split", "prefix_reuse_min_tokens", "prior_step_cost",
    "select_exact",
    "select_fcfs", "select_greedy", "select_none", "select_oldest", "select_shortest",
    "stage_kv_bytes_per_token", "turn_optimum",
]
