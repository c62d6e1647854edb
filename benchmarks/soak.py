"""Does the server stay up and right under load, at every setting? The soak matrix.

    python benchmarks/soak.py [--quick] [--requests N] [--runs R] [--repro-only] [--json PATH]

Each point starts a real `python -m pipemax_sglang.launch_server` on loopback (the built-in
tiny model) and sends N concurrent clients mixing short and long prompts and outputs,
streaming and not, n = 2, clients that disconnect, aborts mid-decode and bad requests
(tests/support/load.py), R times, each time after the reported hang's load (128 greedy
text requests of 32 tokens). The matrix: pp 1 (one micro-batch) and pp 2 with M = P,
P + 1, P + 2; `--pipemax-stream` auto, always, never; the device KV pool at 1/2, 1/4 and
1/8 of what the load keeps in flight (the host tier holds all of it). --quick: seven
points (pp 1; pp 2 at each M with auto; always and never at M = 4; KV 1/4, and 1/8 for
M = 4 auto), one run, 128 requests. The default: the whole matrix, three runs, 256.

The reference is the same requests run alone, one at a time, on stock SGLang
(`--disable-pipemax`, pp 1, ample KV), computed once per run of this script.

Prints a line per point and a summary line; --json writes {requests, completed, failed,
p50_s, p99_s, identical, configs: [one entry per point with the same keys]}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tests.support.server_process import ServerProcess  # noqa: E402
from tests.support.soak import Point, point_record, run_point  # noqa: E402


def matrix(quick: bool) -> list[Point]:
    if quick:
        return [Point(1, 0, "auto", 0.25), Point(2, 0, "auto", 0.25), Point(2, 1, "auto", 0.25),
                Point(2, 2, "auto", 0.25), Point(2, 2, "always", 0.25), Point(2, 2, "never", 0.25),
                Point(2, 2, "auto", 0.125)]
    out = []
    for frac in (0.5, 0.25, 0.125):
        for stream in ("auto", "always", "never"):
            out.append(Point(1, 0, stream, frac))
            out += [Point(2, d, stream, frac) for d in (0, 1, 2)]
    return out


class StockReference:
    """Greedy tokens of each prompt run alone on stock SGLang (pp 1, ample KV), cached."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.cache: dict = {}

    def __call__(self, asks: dict) -> dict:
        todo = {p: n for p, n in asks.items() if len(self.cache.get(p, ())) < n}
        if todo:
            with ServerProcess(["--model-path", self.model, "--disable-pipemax", "--max-total-tokens",
                                "16384", "--log-level", "warning"]) as srv:
                for p, n in todo.items():
                    prompt = {"text": p} if isinstance(p, str) else {"input_ids": list(p)}
                    r = requests.post(srv.url + "/generate", json={**prompt, "sampling_params": {
                        "temperature": 0, "max_new_tokens": n, "ignore_eos": True}}, timeout=600)
                    r.raise_for_status()
                    self.cache[p] = r.json()["output_ids"]
        return {p: self.cache[p] for p in asks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--point", action="append", default=None,
                    help="run only this matrix point (repeatable), e.g. pp2-M4-auto-kv0.25")
    ap.add_argument("--repro-only", action="store_true",
                    help="only the reported hang's 128 text requests at each point (the issue's "
                         "acceptance: 128/128 at every point, three runs each), not the mixed load; "
                         "each server sized as for the mixed load")
    a = ap.parse_args(argv)
    n = a.requests or (128 if a.quick else 256)
    runs = a.runs or (1 if a.quick else 3)
    from pipemax_sglang.models import ensure_tiny_model

    model = ensure_tiny_model()
    reference = StockReference(model)
    records = []
    t0 = time.monotonic()
    points = matrix(a.quick)
    if a.point:
        unknown = set(a.point) - {p.name for p in points}
        if unknown:
            ap.error(f"no such point in the {'quick ' if a.quick else ''}matrix: {sorted(unknown)}; "
                     f"points: {[p.name for p in points]}")
        points = [p for p in points if p.name in a.point]
    for point in points:
        try:
            rec = point_record(run_point(model, point, n, a.seed, runs, reference, repro=True,
                                         mixed=not a.repro_only))
        except Exception as e:     # a point that cannot even run is a failure of that point
            rec = {"point": point.name, "requests": n * runs, "completed": 0,
                   "failed": {type(e).__name__: n * runs}, "identical": False, "error": str(e)[-2000:]}
        records.append(rec)
        print(f"soak {rec['point']}: completed {rec['completed']}/{rec['requests']}, failed "
              f"{rec['failed'] or 0}, identical {rec['identical']}, pools idle "
              f"{rec.get('pools_idle')}, p50 {rec.get('p50_s')} s, p99 {rec.get('p99_s')} s"
              + (f"; error: {rec['error'][-600:]}" if "error" in rec else ""), flush=True)
    total = {
        "requests": sum(r["requests"] for r in records),
        "completed": sum(r["completed"] for r in records),
        "failed": {k: sum(r["failed"].get(k, 0) for r in records)
                   for k in {k for r in records for k in r["failed"]}},
        "p50_s": max((r.get("p50_s") or 0) for r in records),
        "p99_s": max((r.get("p99_s") or 0) for r in records),
        "identical": all(r["identical"] for r in records),
        "pools_idle": all(r.get("pools_idle") for r in records),
        "wall_s": round(time.monotonic() - t0, 1),
        "requests_per_run": n, "runs": runs, "configs": records,
    }
    print(f"soak: {total['completed']}/{total['requests']} completed over {len(records)} points x "
          f"{runs} runs, failed {total['failed'] or 0}, identical {total['identical']}, pools idle "
          f"{total['pools_idle']}, worst p50 {total['p50_s']} s, p99 {total['p99_s']} s, "
          f"{total['wall_s']} s")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(total, indent=1))
    return 0 if total["completed"] == total["requests"] and total["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())

