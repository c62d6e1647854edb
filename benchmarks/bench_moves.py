"""What does a KV move cost the scheduler? Parks and rejoins on the real stack.

    python benchmarks/bench_moves.py [--quick] [--json PATH]

For n requests of L prompt tokens (n in 1, 16, 64, 256; L in 64, 512, 2,048; --quick: n in
1, 16, 64, L in 64, 512), a pipemax_sglang.Engine (pp 1, the built-in tiny model) decodes 16
tokens each with the device KV pool just above what they keep in flight (pressed: the
decider keeps 5% free) and
`--pipemax-stream always`: pressed turns park rows (one copy to host per group) and the
decider brings them back (one allocation, one copy back, one rebuilt decode batch per turn).
The stage times its own scheduler work per move (park: host slots, the copy's submission,
rows out of the batch, device slots and tree locks released once the copy read them; issue:
a match and lock of a prompt the device still holds, device slots, the copy back; rejoin:
rows, KV lengths, the decode batch, its merge) and reports it (`kv_move_s`, by phase); waits for a copy are apart (`copy_wait_s`). Each point
runs 1 + --repeat (3) batches on one engine: the first warms it (the first moves of a process
pay for lazy imports and first allocations, reported as `cold`), each later one is a sample;
a point's us_per_move is the samples' median, the other figures pool them. Prints a line per
point, and writes JSON: per point us_per_move, us_per_kv_mb (scheduler time per MB of KV
handed between the tiers), the phases, moves, how many requests a copy or a rejoin moved at
once, the rejoins' prompt tokens the device tree still held (relocked rather than loaded) and
the share of rejoined KV that crossed the link, a mean moving turn's moves and milliseconds,
and at n = 64 (the acceptance point) `us_per_move` and `us_per_kv_mb` at the top level,
beside the price fitted over the points (`move_turn_ms` a turn that moves, `move_us` a
move: core/move_price.py; the simulator's default, sim/machine.py).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.engine_process import EngineProcess  # noqa: E402

NEW = 16


_COUNTERS = ("parks", "rejoins", "recomputes", "kv_move_s", "kv_move_cpu_s", "copy_wait_s", "moved_kv_tokens", "h2d_bytes",
             "d2h_bytes", "park_copies", "rejoin_batches", "windows", "reused_prefix_tokens")


def _moves(after: dict, before: dict | None) -> dict:
    """The move counters of a stage's status, less those of an earlier report."""
    b = before or {}
    out = {k: after[k] - b.get(k, 0) for k in _COUNTERS}
    out["move_phase_s"] = {k: v - b.get("move_phase_s", {}).get(k, 0.0)
                           for k, v in after["move_phase_s"].items()}
    return out


def _loaded_fraction(p: dict, per_token: int) -> float | None:
    loaded = p["h2d_bytes"] / per_token
    return loaded / (loaded + p["reused_prefix_tokens"]) if loaded + p["reused_prefix_tokens"] else None


def _figures(p: dict, per_token: int) -> dict:
    moves = p["parks"] + p["rejoins"]
    turns = max(p["park_copies"], p["rejoin_batches"])   # each moving turn copies or rejoins
    kv_mb = p["moved_kv_tokens"] * per_token / 1e6
    return {
        "moves": moves, "parks": p["parks"], "rejoins": p["rejoins"], "recomputes": p["recomputes"],
        "kv_move_s": p["kv_move_s"], "phase_s": p["move_phase_s"], "copy_wait_s": p["copy_wait_s"],
        "us_per_move": 1e6 * p["kv_move_s"] / moves if moves else None,
        "us_per_kv_mb": 1e6 * p["kv_move_s"] / kv_mb if kv_mb else None,
        # the scheduler thread's CPU time in those moves: the rest of us_per_move waited for
        # a core (or the GIL) while copier threads, the forward and other processes ran
        "cpu_us_per_move": 1e6 * p["kv_move_cpu_s"] / moves if moves else None,
        "phase_us_per_move": {k: 1e6 * v / moves for k, v in p["move_phase_s"].items()} if moves else {},
        "kv_mb": kv_mb, "h2d_bytes": p["h2d_bytes"], "d2h_bytes": p["d2h_bytes"],
        # rejoins' prompt tokens the device tree still held (relocked, not loaded), and the
        # share of the rejoined KV that crossed the link
        "reused_prefix_tokens": p["reused_prefix_tokens"],
        "loaded_fraction": _loaded_fraction(p, per_token),
        # how many requests a batched step moved at once: per-batch costs over these
        "parks_per_copy": p["parks"] / p["park_copies"] if p["park_copies"] else None,
        "rejoins_per_batch": p["rejoins"] / p["rejoin_batches"] if p["rejoin_batches"] else None,
        "rejoins_per_load": p["rejoins"] / p["windows"] if p["windows"] else None,
        # turns that moved (a park copy or a rejoin batch each) and a mean one's moves and
        # scheduler seconds: one sample of the price per turn (core/move_price.py)
        "moving_turns": turns,
        "moves_per_turn": moves / turns if turns else None,
        "ms_per_turn": 1e3 * p["kv_move_s"] / turns if turns else None,
    }


def point(model: str, n: int, L: int, seed: int = 0, repeat: int = 3) -> dict:
    """1 + `repeat` batches of n prompts on one engine: the first warms it (its first moves pay
    for lazy imports and first allocations, a fixed cost a server pays once; reported as
    `cold`), each later one is a sample, the difference of the stage's counters across it.
    The point's figures pool the samples (every measured move); `us_per_move` is the median
    of the samples' own: on a shared 2-core host one batch in a few costs up to 1.5x the
    others for the same work (its CPU time grows with it), and one such batch must not set
    the point."""
    rng = random.Random(seed + 1000 * n + L)
    batches = [[[rng.randrange(4, 1024) for _ in range(L)] for _ in range(n)] for _ in range(1 + repeat)]
    inflight = n * (L + NEW)
    device = int(1.02 * inflight) + 2     # everything fits; the 5% reserve makes it pressed
    params = {"temperature": 0, "max_new_tokens": NEW, "ignore_eos": True}
    with EngineProcess(model_path=model, max_total_tokens=device, log_level="error",
                       pipemax_stream="always", pipemax_host_kv_tokens=4 * inflight + 4096) as eng:
        eng.generate(input_ids=batches[0], sampling_params=params)
        cold = before = eng.status()["stages"][0]["pipemax"]
        samples = []
        for batch in batches[1:]:
            eng.generate(input_ids=batch, sampling_params=params)
            st = eng.status()["stages"][0]
            samples.append(_moves(st["pipemax"], before))
            before = st["pipemax"]
    per_token = int(st["kv_bytes_per_token"])
    pooled = _figures(_moves(st["pipemax"], cold), per_token)
    each = [_figures(s, per_token)["us_per_move"] for s in samples]
    each = [u for u in each if u is not None]
    return {"requests": n, "prompt_tokens": L, "device_tokens": device, "kv_bytes_per_token": per_token,
            **pooled, "us_per_move_pooled": pooled["us_per_move"],
            "us_per_move": statistics.median(each) if each else None, "us_per_move_samples": each,
            "cold": _figures(_moves(cold, None), per_token)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--repeat", type=int, default=3, help="measured batches a point (median)")
    a = ap.parse_args(argv)
    from pipemax_sglang.core.move_price import fit_move_price
    from pipemax_sglang.models import ensure_tiny_model

    from benchmarks.bench_offline import warn_strays

    strays = warn_strays("bench_moves")
    model = ensure_tiny_model()
    grid = [(n, L) for n in ((1, 16, 64) if a.quick else (1, 16, 64, 256))
            for L in ((64, 512) if a.quick else (64, 512, 2048))]
    rows = []
    for n, L in grid:
        r = point(model, n, L, repeat=max(1, a.repeat))
        rows.append(r)
        phases = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["phase_us_per_move"].items()))
        print(f"bench_moves n={n:4d} L={L:5d}: {r['moves']:6d} moves, "
              f"{r['us_per_move'] or 0:8.1f} us/move (samples {', '.join(f'{u:.0f}' for u in r['us_per_move_samples'])}; "
              f"pooled: {phases}), "
              f"{r['us_per_kv_mb'] or 0:9.1f} us/KV MB, {r['parks_per_copy'] or 0:.1f} parks a copy, "
              f"{r['rejoins_per_batch'] or 0:.1f} rejoins a batch, "
              f"{r['moves_per_turn'] or 0:.1f} moves in {r['ms_per_turn'] or 0:.2f} ms a turn, "
              f"{100 * (r['loaded_fraction'] or 0):.0f}% of rejoined KV loaded, recomputes {r['recomputes']} "
              f"(cold: {r['cold']['us_per_move'] or 0:.1f} us/move)", flush=True)
    at64 = [r for r in rows if r["requests"] == 64 and r["us_per_move"] is not None]
    # the price of moves over the points: a mean turn of each (their batch sizes differ, so
    # the share a turn pays whatever its size separates from each move's)
    turns = tuple((r["moves_per_turn"], r["ms_per_turn"] / 1e3) for r in rows if r["moves_per_turn"])
    price = fit_move_price(turns) if len(turns) >= 2 else None
    out = {
        "us_per_move": max(r["us_per_move"] for r in at64) if at64 else None,
        "us_per_kv_mb": max(r["us_per_kv_mb"] for r in at64) if at64 else None,
        "move_turn_ms": 1e3 * price.turn_s if price else None,
        "move_us": 1e6 * price.move_s if price else None,
        "points": rows,
        "stray_engine_pids": strays,
    }
    print(f"bench_moves: at 64 requests {out['us_per_move']:.1f} us per move (worst L), "
          f"{out['us_per_kv_mb']:.1f} us per KV MB")
    if price:
        print(f"bench_moves: the price fitted over the points: {1e3 * price.turn_s:.2f} ms a turn that "
              f"moves + {1e6 * price.move_s:.1f} us a move")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
