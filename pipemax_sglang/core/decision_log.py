"""A decider's calls as JSON lines: what the live stage 0 records, what a replay reads.

One line per call, in call order, so a fresh Decider fed the same lines is in the same
state at every decision (its only state is the step-cost fit from `observe_step` and the
link timeline its own decisions advance and `loaded` reconciles):

    {"call": "init",    "config": {...}, "kv_bytes_per_token", "num_stages",
                        "link_bytes_per_s", "moves_serialize"}
    {"call": "decide",  "view": {...TurnView}, "pool": [[rid, kv_len, rounds, arrival]...],
                        "planned": {rid: target turn...}, "plan": {...TurnPlan}}
    {"call": "observe", "rows", "sum_context", "seconds"}
    {"call": "loaded",  "turn", "loaded_tokens", "now"}

Floats survive the round trip exactly (json writes repr). Written by sglang/stage.py with
--pipemax-record-batches; replayed by sim/replay.py (the conformance test).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, fields
from typing import Any, Iterable, Mapping

from .decider import Decider, DeciderConfig, PoolEntry, TurnPlan, TurnView


def init_line(decider: Decider) -> str:
    """The arguments the decider was built with."""
    return json.dumps({"call": "init", "config": asdict(decider.config),
                       "kv_bytes_per_token": decider.k, "num_stages": decider.num_stages,
                       "link_bytes_per_s": decider.link_bytes_per_s,
                       "moves_serialize": decider.moves_serialize})


def decide_line(view: TurnView, pool: Iterable[PoolEntry],
                planned: Iterable[str] | Mapping[str, int], plan: TurnPlan) -> str:
    """`planned` as the decider got it: rid -> target turn (a JSON object), or bare ids (a
    list: logs from before targets were known)."""
    ids = (dict(sorted(planned.items())) if isinstance(planned, Mapping) else sorted(planned))
    return json.dumps({"call": "decide", "view": asdict(view),
                       "pool": [[p.rid, p.kv_len, p.rounds_waited, p.arrival] for p in pool],
                       "planned": ids, "plan": asdict(plan)})


def planned_of(v: dict | list) -> dict[str, int] | set[str]:
    return dict(v) if isinstance(v, dict) else set(v)


def observe_line(rows: int, sum_context: int, seconds: float) -> str:
    return json.dumps({"call": "observe", "rows": rows, "sum_context": sum_context,
                       "seconds": seconds})


def loaded_line(turn: int, loaded_tokens: int, now: float) -> str:
    return json.dumps({"call": "loaded", "turn": turn, "loaded_tokens": loaded_tokens, "now": now})


def _tuples(cls, d: dict[str, Any]):
    """A frozen dataclass from its asdict(): JSON lists back to the tuples it holds."""
    kw = {}
    for f in fields(cls):
        if f.name not in d:         # a field newer than the log: its default
            continue
        v = d[f.name]
        kw[f.name] = tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
    return cls(**kw)


def view_of(d: dict) -> TurnView:
    return _tuples(TurnView, d)


def plan_of(d: dict) -> TurnPlan:
    return _tuples(TurnPlan, d)


def pool_of(rows: list) -> list[PoolEntry]:
    return [PoolEntry(str(r), int(k), int(w), int(a)) for r, k, w, a in rows]


def config_of(d: dict) -> DeciderConfig:
    return DeciderConfig(**d)


def read(path: str) -> list[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]
