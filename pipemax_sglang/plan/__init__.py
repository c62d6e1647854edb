"""The planner: PipeMax settings for a model on a server, chosen by simulation.

    python -m pipemax_sglang.plan --model llama-3-70b --gpu l40 --gpus 8 --host-gb 512

search.py    a staged search over the simulator (pp size, micro-batches, budget margin,
             row cap), every candidate scored on the same seeded workload
command.py   the launch command for the recommendation

Pure like the simulator it drives: no torch, no sglang.
"""

from .command import launch_command, model_path
from .search import Candidate, Plan, plan

__all__ = ["Candidate", "Plan", "launch_command", "model_path", "plan"]
