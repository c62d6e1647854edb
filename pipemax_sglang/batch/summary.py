"""The end of a run: what was answered, how fast, and what PipeMax moved; as text and as JSON.

PipeMax's figures come from its stages' status reports (one per pipeline stage). Parks and
rejoins are decisions: stage 0 makes them and every stage applies the same ones, so they are
stage 0's counts. Bytes are per stage (each stage moves the KV of its own layers over its own
link), so they are summed over the stages: the bytes that crossed host<->device links in all.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

from pipemax_sglang.batch.progress import TAG, Tally

_DECISIONS = ("parks", "rejoins", "recomputes", "parked_peak")
_PER_STAGE = ("h2d_bytes", "d2h_bytes", "prefetch_stall_s")


def pipemax_totals(stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run's PipeMax figures from the stages' reports; None when no stage reports (off)."""
    reports = [s.get("pipemax") or {} for s in stages]
    if not reports or not reports[0]:
        return None
    first = reports[0]
    out: dict[str, Any] = {"stages": len(reports)}
    out.update({k: first.get(k, 0) for k in _DECISIONS})
    out.update({k: sum(r.get(k, 0) for r in reports) for k in _PER_STAGE})
    return out


def parked_now(stages: list[dict[str, Any]]) -> int | None:
    """Requests parked in host memory at the moment (stage 0's count), None when PipeMax is off."""
    report = stages[0].get("pipemax") if stages else None
    return int(report.get("parked_now", 0)) if report else None


@dataclass(frozen=True)
class BatchSummary:
    input: str
    output: str
    outcome: str              # "complete", "interrupted by SIGINT", "engine failed: ..."
    requests_in_file: int     # valid request lines in the input
    invalid_lines: int
    already_done: int         # lines whose record an earlier run wrote
    ok: int                   # this run: answered with status 200
    failed: int               # this run: answered with an error status
    invalid_written: int      # this run: invalid lines written as error records
    left: int                 # lines still without a record (0 when complete)
    prompt_tokens: int
    output_tokens: int
    wall_s: float             # from the first request to the last record
    engine_start_s: float     # 0 when no engine was started (nothing left to do)
    pipemax: dict[str, Any] | None

    @classmethod
    def of_run(cls, *, input: str, output: str, outcome: str, plan_requests: int, plan_invalid: int,
               already_done: int, planned: int, tally: Tally, wall_s: float, engine_start_s: float,
               stages: list[dict[str, Any]]) -> "BatchSummary":
        return cls(input=input, output=output, outcome=outcome, requests_in_file=plan_requests,
                   invalid_lines=plan_invalid, already_done=already_done, ok=tally.ok, failed=tally.failed,
                   invalid_written=tally.invalid, left=planned - tally.done,
                   prompt_tokens=tally.prompt_tokens, output_tokens=tally.output_tokens, wall_s=wall_s,
                   engine_start_s=engine_start_s, pipemax=pipemax_totals(stages))

    @property
    def output_tok_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def total_tok_s(self) -> float:
        return (self.prompt_tokens + self.output_tokens) / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(output_tok_s=round(self.output_tok_s, 2), total_tok_s=round(self.total_tok_s, 2))
        return out

    def write_json(self, path: str | os.PathLike) -> None:
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)

    def text(self) -> str:
        lines = [f"{TAG}: {self.outcome}: {self.ok} ok, {self.failed} failed"
                 + (f", {self.invalid_written} invalid lines written as errors" if self.invalid_written else "")
                 + (f"; {self.already_done} already in {self.output}" if self.already_done else "")
                 + (f"; {self.left} left: run the same command again to finish" if self.left else "")]
        if not self.engine_start_s:
            lines.append(f"  results: {self.output}")
            return "\n".join(lines)
        lines.append(f"  tokens: {self.prompt_tokens} prompt, {self.output_tokens} output in {self.wall_s:.1f} s: "
                     f"{self.output_tok_s:.0f} output tok/s, {self.total_tok_s:.0f} total tok/s "
                     f"(engine start {self.engine_start_s:.1f} s)")
        p = self.pipemax
        if p is None:
            lines.append("  PipeMax: off (no stage reported)")
        else:
            lines.append(f"  PipeMax ({p['stages']} stage{'s' if p['stages'] != 1 else ''}): {p['parks']} parks, "
                         f"{p['rejoins']} rejoins, {p['recomputes']} recomputes, parked peak {p['parked_peak']}; "
                         f"H2D {_mb(p['h2d_bytes'])}, D2H {_mb(p['d2h_bytes'])}")
        lines.append(f"  results: {self.output} (join them to {self.input} by custom_id)")
        return "\n".join(lines)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"
