"""Should a user with 8 PCIe GPUs run PipeMax, or something else? (the simulator's projection)

For every hardware profile {rtx4090, l20, l40} x model {Llama-2-13B, Qwen2.5-32B,
Llama-3-70B}, the planner (pipemax_sglang/plan/search.py) searches PipeMax's settings and
the baselines a user would pick instead, each at its best setting: tensor parallel, the
hybrids tp 4 x pp 2 and tp 2 x pp 4, stock pipeline parallel, and pipeline parallel with
TD-Pipe's scheduling (prefill and decode phases, work stealing; no offload; its output
lengths known exactly, its best case). One row per grid point:
which wins and by how much, whole run and steady state, and PipeMax's steady context a turn
against the capacity optimum X* (core/capacity.py) with the link's utilisation. A grid
point is "pressed" when PipeMax's steady window (requests queued or parked: the device
cannot hold what is in flight) is at least a fifth of its run; where it is not, PipeMax
has little to do and its X* fraction is not meaningful (null).

The workload is an offline job: ShareGPT-like lengths with TD-Pipe's filter (prompt <=
1,024, prompt + output <= 2,048), 5,000 requests by default, all there at t = 0; --quick
runs 1,500 (every grid point still reaches a steady window: `steady frac` in the JSON) and
only the first setting of each family. Host memory 256 GB (less the planner's 8 GB OS
reserve).

    python benchmarks/projection.py [--quick] [--json F] [--out DIR] [--requests N] [--jobs J]
                                    [--only GPU/MODEL ...] [--move-us US] [--move-turn-us US]

--move-turn-us and --move-us set the scheduler's CPU price of moves: per turn that moves at
all, and per park or rejoin (default: our measurement on these hosts, sim/machine.py; a
flat price per move is --move-turn-us 0): the price decides whether streaming pays at all.

Writes DIR/projection.md (the table), DIR/projection.json (rows and every run) and
DIR/projection.png (throughput by family, a panel per GPU, PipeMax's ratio to the best
baseline over its bar). --json F also writes the rows alone to F. Seeded: the same
arguments give the same numbers. Runs take minutes (--quick) to hours (full) on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipemax_sglang.plan.search import BASELINES, plan  # noqa: E402
from pipemax_sglang.sim import Machine, load_model, sharegpt_like  # noqa: E402
from pipemax_sglang.sim.__main__ import move_price_fields  # noqa: E402
from pipemax_sglang.sim.costs import DoesNotFit  # noqa: E402

GPUS = ("rtx4090", "l20", "l40")
MODELS = ("llama-2-13b", "qwen2.5-32b", "llama-3-70b")
LABEL = {"tp": "TP", "tp4xpp2": "tp4 x pp2", "tp2xpp4": "tp2 x pp4", "pp": "stock PP",
         "td-pipe": "TD-Pipe", "pipemax": "PipeMax"}
QUICK_REQUESTS, FULL_REQUESTS = 1500, 5000
PRESSED_FRAC = 0.2      # a steady window of at least this share of PipeMax's run: "pressed"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _point(job: tuple) -> dict:
    gpu, model, host_gb, n, seed, quick, extra = job
    t0 = time.perf_counter()
    work = sharegpt_like(n, seed)
    try:
        pl = plan(load_model(model), Machine.named(gpu, host_mem_gb=host_gb, **extra), work, quick=quick)
    except DoesNotFit as e:
        return {"gpu": gpu, "model": model, "does_not_fit": str(e)}
    pm = pl.best
    r = pm.result
    bb = pl.best_baseline
    fam = dict(pl.baselines, pipemax=pm)
    steady = {k: c.result.steady_tok_s for k, c in fam.items()}
    st = r.steady or {}
    row = {
        "gpu": gpu, "model": model,
        "tp": fam["tp"].tok_s if "tp" in fam else None,
        "tp4xpp2": fam["tp4xpp2"].tok_s if "tp4xpp2" in fam else None,
        "tp2xpp4": fam["tp2xpp4"].tok_s if "tp2xpp4" in fam else None,
        "pp": fam["pp"].tok_s if "pp" in fam else None,
        "td-pipe": fam["td-pipe"].tok_s if "td-pipe" in fam else None,
        "pipemax": pm.tok_s,
        "best_baseline": bb.family if bb else None,
        "best_baseline_tok_s": bb.tok_s if bb else None,
        "pipemax_vs_pp": _ratio(pm.tok_s, fam["pp"].tok_s if "pp" in fam else None),
        "pipemax_vs_best": _ratio(pm.tok_s, bb.tok_s if bb else None),
        "optimum_fraction": r.optimum_fraction if r.steady else None,
        "link_util": st.get("link_util", r.link_util),
        "pressed": bool(r.steady and r.steady["frac"] >= PRESSED_FRAC),
        "winner": pl.winner.family,
        "settings": {k: c.setting() for k, c in fam.items()},
        "steady_tok_s": steady,
        "steady_pipemax_vs_pp": _ratio(steady.get("pipemax"), steady.get("pp")),
        "steady_pipemax_vs_best": _ratio(steady.get("pipemax"),
                                         max((v for k, v in steady.items() if k != "pipemax" and v),
                                             default=None)),
        "steady_frac": {k: (c.result.steady or {}).get("frac") for k, c in fam.items()},
        "optimum": r.optimum,
        "pipemax_ctx_per_turn": st.get("ctx_per_turn"),
        "pipemax_cpu_wait_frac": r.cpu_wait_frac,
        "pipemax_link_util_whole_run": r.link_util,
        "runs": [dict(family=c.family, stage=c.stage, setting=c.setting(), **c.result.to_dict())
                 for c in pl.tried],
        "wall_s": time.perf_counter() - t0,
    }
    return row


def _f(x: float | None, fmt: str) -> str:
    return format(x, fmt) if x is not None else "-"


def _table(rows: list[dict], n: int, host_gb: float) -> str:
    out = [f"Output tokens/s, whole 8-GPU server, {n} ShareGPT-like requests (TD-Pipe's filter), "
           f"host {host_gb:g} GB. Each family at its best setting (planner search); ratios are "
           "PipeMax over stock PP and over the best baseline, whole run, then steady state. "
           "X* fraction: PipeMax's steady context a turn over the capacity optimum (- : no "
           "steady window; * : window under a fifth of the run, memory barely pressed); link: "
           "its steady H2D utilisation.", "",
           "| GPU | model | TP | tp4 x pp2 | tp2 x pp4 | stock PP | TD-Pipe | PipeMax | best baseline | "
           "PipeMax/PP | PipeMax/best | steady /PP | steady /best | X* fraction | link |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "does_not_fit" in r:
            out.append(f"| {r['gpu']} | {r['model']} | does not fit |" + " |" * 13)
            continue
        cells = [_f(r.get(k), ".0f") for k in ("tp", "tp4xpp2", "tp2xpp4", "pp", "td-pipe", "pipemax")]
        out.append(f"| {r['gpu']} | {r['model']} | " + " | ".join(cells) + " | "
                   + " | ".join([LABEL.get(r["best_baseline"], "-"),
                                 _f(r["pipemax_vs_pp"], ".2f") + "x", _f(r["pipemax_vs_best"], ".2f") + "x",
                                 _f(r["steady_pipemax_vs_pp"], ".2f") + "x",
                                 _f(r["steady_pipemax_vs_best"], ".2f") + "x",
                                 _f(r["optimum_fraction"], ".2f") + ("" if r["pressed"] or r["optimum_fraction"] is None else "*"),
                                 _f(r["link_util"], ".0%")]) + " |")
    return "\n".join(out) + "\n"


def _plot(rows: list[dict], path: Path, n: int) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return False
    fams = BASELINES + ("pipemax",)
    colours = {"tp": "#9e9e9e", "tp4xpp2": "#bdbdbd", "tp2xpp4": "#d6d6d6", "pp": "#6baed6",
               "td-pipe": "#3182bd", "pipemax": "#e6550d"}
    fig, axes = plt.subplots(1, len(GPUS), figsize=(6 * len(GPUS), 4.6), squeeze=False)
    width = 0.13
    for ax, gpu in zip(axes[0], GPUS):
        pts = [r for r in rows if r["gpu"] == gpu]
        for i, r in enumerate(pts):
            for j, f in enumerate(fams):
                v = r.get(f) or 0.0
                x = i + (j - (len(fams) - 1) / 2) * width
                ax.bar(x, v, width, color=colours[f], edgecolor="black" if f == "pipemax" else "none",
                       label=LABEL[f] if i == 0 else None)
                if f == "pipemax" and r.get("pipemax_vs_best"):
                    ax.annotate(f"{r['pipemax_vs_best']:.2f}x\nof best", (x, v), ha="center", va="bottom",
                                fontsize=8, xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(range(len(pts)), [r["model"] for r in pts])
        ax.set_title(f"8x {gpu}")
        ax.set_ylabel("output tokens/s (whole run)")
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.15)
    axes[0][0].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"PipeMax against the baselines a user would pick, each at its best setting "
                 f"({n} ShareGPT-like requests; label: PipeMax over the best baseline)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-results/projection")
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_REQUESTS} requests, first setting of each family")
    ap.add_argument("--requests", type=int, default=None,
                    help=f"default {FULL_REQUESTS} (quick: {QUICK_REQUESTS})")
    ap.add_argument("--host-gb", type=float, default=256.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--move-us", type=float, default=None,
                    help="the scheduler's time per park or rejoin, us (default: sim/machine.py's, "
                         "our measurement)")
    ap.add_argument("--move-turn-us", type=float, default=None,
                    help="... and per turn that moves at all, us (default: sim/machine.py's)")
    ap.add_argument("--json", default=None, help="also write the rows alone here")
    ap.add_argument("--only", action="append", default=None, metavar="GPU/MODEL",
                    help="run only these grid points (repeatable), e.g. rtx4090/llama-3-70b")
    a = ap.parse_args()
    n = a.requests or (QUICK_REQUESTS if a.quick else FULL_REQUESTS)
    points = [(g, m) for g in GPUS for m in MODELS]
    if a.only:
        want = {tuple(x.split("/", 1)) for x in a.only}
        unknown = want - set(points)
        if unknown:
            ap.error(f"not on the grid: {', '.join('/'.join(u) for u in sorted(unknown))}")
        points = [p for p in points if p in want]
    try:
        extra = move_price_fields(a.move_us, a.move_turn_us)
    except ValueError as e:
        ap.error(str(e))
    jobs = [(g, m, a.host_gb, n, a.seed, a.quick, extra) for g, m in points]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = []
    with ProcessPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        for r in pool.map(_point, jobs):
            rows.append(r)
            if "does_not_fit" in r:
                print(f"{r['gpu']:8s} {r['model']:12s} does not fit: {r['does_not_fit']}", flush=True)
                continue
            print(f"{r['gpu']:8s} {r['model']:12s} PipeMax {r['pipemax']:7.1f} tok/s "
                  f"({r['settings']['pipemax']}): {_f(r['pipemax_vs_pp'], '.2f')}x stock PP, "
                  f"{_f(r['pipemax_vs_best'], '.2f')}x best baseline {r['best_baseline']} "
                  f"({r['settings'].get(r['best_baseline'], '-')}); steady {_f(r['steady_pipemax_vs_pp'], '.2f')}x / "
                  f"{_f(r['steady_pipemax_vs_best'], '.2f')}x; X* fraction {_f(r['optimum_fraction'], '.2f')}"
                  f"{'' if r['pressed'] else ' (not pressed)'}, "
                  f"link {r['link_util']:.0%}  [{r['wall_s']:.0f}s]", flush=True)
    wall = time.perf_counter() - t0
    table = _table(rows, n, a.host_gb)
    print(table)
    ok = [r for r in rows if "does_not_fit" not in r]
    worst = min(ok, key=lambda r: r["pipemax_vs_pp"] or 0.0, default=None)
    if worst is not None:
        ahead = sum((r["pipemax_vs_best"] or 0.0) > 1.005 for r in ok)
        tied = sum(abs((r["pipemax_vs_best"] or 0.0) - 1.0) <= 0.005 for r in ok)
        print(f"lowest PipeMax/stock PP: {worst['pipemax_vs_pp']:.2f}x ({worst['gpu']}/{worst['model']}); "
              f"PipeMax ahead of the best baseline at {ahead} of {len(ok)} grid points, level "
              f"(within 0.5%: the same setting, nothing streamed) at {tied}")
    (out / "projection.md").write_text(table)
    keys = ("gpu", "model", "tp", "pp", "pipemax", "best_baseline", "pipemax_vs_pp",
            "pipemax_vs_best", "optimum_fraction", "link_util", "pressed")
    record = {"benchmark": "projection", "requests": n, "quick": a.quick, "seed": a.seed,
              "move_price": asdict(replace(Machine.named(GPUS[0]), **extra).move_price),
              "host_gb": a.host_gb, "wall_s": wall, "jobs": a.jobs,
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
              "rows": [{k: r.get(k) for k in keys} | {x: r[x] for x in r if x not in keys}
                       for r in rows]}
    (out / "projection.json").write_text(json.dumps(record, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(
            [{k: r.get(k) for k in keys + ("tp4xpp2", "tp2xpp4", "td-pipe", "best_baseline_tok_s", "winner",
                                           "steady_tok_s", "steady_pipemax_vs_pp",
                                           "steady_pipemax_vs_best", "settings")}
             for r in rows], indent=1))
    plotted = _plot(ok, out / "projection.png", n)
    print(f"grid of {len(jobs)} points in {wall:.0f}s; wrote {out}/projection.md, projection.json"
          + (", projection.png" if plotted else "") + (f", {a.json}" if a.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
