"""One soak point: a real `launch_server` with PipeMax at one setting, the mixed load run
against it `runs` times, and after each run the pools back at their idle state and a fresh
request served with the reference tokens. Shared by tests/load/ and benchmarks/soak.py."""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests

from tests.support.load import (idle_pools, in_flight_tokens, judge, make_load, make_repro_load,
                                pools, reference_asks, run_load, status)
from tests.support.server_process import ServerProcess


@dataclass(frozen=True)
class Point:
    pp: int
    depth: int                 # pp_async_batch_depth: M = pp + depth (pp 1: one micro-batch)
    stream: str                # --pipemax-stream
    frac: float                # device KV pool as a fraction of what the load keeps in flight

    @property
    def M(self) -> int:
        return self.pp + self.depth if self.pp > 1 else 1

    @property
    def name(self) -> str:
        return f"pp{self.pp}-M{self.M}-{self.stream}-kv{self.frac:g}"


def server_args(model: str, point: Point, inflight: int, biggest: int) -> list[str]:
    device = max(int(inflight * point.frac), 2 * biggest)
    args = ["--model-path", model, "--max-total-tokens", str(device), "--log-level", "warning",
            "--pp-size", str(point.pp), "--pipemax-stream", point.stream,
            # a host tier that holds everything in flight: PipeMax's place to wait
            "--pipemax-host-kv-tokens", str(2 * inflight)]
    if point.pp > 1:
        args += ["--pp-async-batch-depth", str(point.depth)]
    return args


def run_point(model: str, point: Point, n: int, seed: int, runs: int, reference,
              repro: bool = False, mixed: bool = True) -> dict:
    """`reference(asks: dict[prompt, max_new]) -> dict[prompt, tokens]` (prompt: token ids
    or text). Each run sends the mixed load of n requests and, with `repro`, first the
    reported hang's 128 text requests."""
    items = make_load(n, seed)
    loads = ([("repro", make_repro_load())] if repro else []) + ([("mixed", items)] if mixed else [])
    if not loads:
        raise ValueError("a soak point needs the repro load, the mixed load or both")
    inflight = in_flight_tokens(items)
    biggest = max(len(it.prompt) + it.max_new for it in items if it.kind != "bad")
    asks = {(5, 6, 7, 8): 6}
    for _, load in loads:
        asks |= reference_asks(load)
    ref = reference(asks)
    out = {"point": point.name, "pp": point.pp, "M": point.M, "stream": point.stream,
           "kv_fraction": point.frac, "inflight_tokens": inflight, "runs": []}
    with ServerProcess(server_args(model, point, inflight, biggest)) as srv:
        idle = pools(idle_pools(srv.url))
        for r, (name, load) in ((r, x) for r in range(runs) for x in loads):
            t0 = time.monotonic()
            outcomes = run_load(srv.url, load)
            wall = time.monotonic() - t0
            verdict = judge(load, outcomes, ref)
            verdict["load"] = name
            stages = idle_pools(srv.url)
            verdict["wall_s"] = round(wall, 2)
            verdict["pools_idle"] = pools(stages) == idle
            fresh = requests.post(srv.url + "/generate", json={"input_ids": [5, 6, 7, 8], "sampling_params": {
                "temperature": 0, "max_new_tokens": 6, "ignore_eos": True}}, timeout=120)
            verdict["fresh_ok"] = fresh.status_code == 200 and fresh.json()["output_ids"] == list(ref[(5, 6, 7, 8)][:6])
            verdict["stages"] = [{k: s["pipemax"].get(k) for k in (
                "parks", "rejoins", "recomputes", "handed_back", "stock", "host_full_skips",
                "aborted_parked", "aborted_prefetching", "late_park_copies")} for s in stages]
            verdict["pools"] = pools(stages)
            out["runs"].append(verdict)
        out["server_log_errors"] = [line for line in srv.tail(100000).splitlines()
                                    if "Traceback" in line or "aborted last request" in line][:10]
    return out


def summarize(points: list[dict]) -> dict:
    """The whole matrix in one record: the keys benchmarks/soak.py promises."""
    runs = [r for p in points for r in p["runs"]]
    failed: dict = {}
    for r in runs:
        for k, v in r["failed"].items():
            failed[k] = failed.get(k, 0) + v
    lat50 = [r["p50_s"] for r in runs if r["p50_s"] is not None]
    lat99 = [r["p99_s"] for r in runs if r["p99_s"] is not None]
    return {
        "requests": sum(r["good"] for r in runs),
        "completed": sum(r["completed"] for r in runs),
        "failed": failed,
        "p50_s": max(lat50) if lat50 else None,
        "p99_s": max(lat99) if lat99 else None,
        "identical": all(r["identical"] for r in runs),
        "pools_idle": all(r["pools_idle"] and r["fresh_ok"] for r in runs),
        "bad_4xx": all(r["bad_4xx"] == r["bad"] for r in runs),
    }


def point_record(p: dict) -> dict:
    """One matrix point with the summary's keys."""
    return {**{k: p[k] for k in ("point", "pp", "M", "stream", "kv_fraction", "inflight_tokens")},
            **summarize([p]), "wall_s": [r["wall_s"] for r in p["runs"]],
            "stages": p["runs"][-1]["stages"], "server_log_errors": p["server_log_errors"]}


__all__ = ["Point", "point_record", "run_point", "status", "summarize"]
