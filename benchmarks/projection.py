"""What would PipeMax do on the 4-8 PCIe-GPU servers we do not have? (the simulator)

One question: throughput of PipeMax against the modelled baselines (tensor parallel over
PCIe, pipeline parallel with recompute, pipeline parallel with offload and an FCFS
selector) on 8-GPU hardware profiles, and what prefetch added against the PCIe ceiling
dT_max = P * BW_pcie / (L * kv_tok) of docs/performance-model.md.

Grid: hardware {rtx4090, l20, l40} x model {Llama-2-13B, Qwen2.5-32B, Llama-3-70B} x
workload (ShareGPT-like, seeded) x policy, at --host-gb of host memory; then a sweep of
host memory for Llama-3-70B on each GPU (offload policies; tp and pp do not use it).
One line per run; writes projection.md (the table), projection.json (every result) and
projection.png (throughput against host memory, a panel per GPU, a line per policy).

    python benchmarks/projection.py [--quick] [--out DIR] [--requests N] [--jobs J]

Runs are independent: --jobs runs them in parallel processes (default 2, the cores we
have). Seeded: the same arguments give the same numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipemax_sglang.sim import Machine, SimConfig, load_model, sharegpt_like, simulate  # noqa: E402
from pipemax_sglang.sim.costs import DoesNotFit  # noqa: E402

GPUS = ("rtx4090", "l20", "l40")
MODELS = ("llama-2-13b", "qwen2.5-32b", "llama-3-70b")
POLICIES = ("tp", "pp", "pp-offload-fcfs", "pipemax")
OFFLOAD = ("pp-offload-fcfs", "pipemax")
SWEEP_MODEL = "llama-3-70b"


def _run(job: tuple) -> dict:
    gpu, model, policy, host_gb, n, seed = job
    cfg = SimConfig(load_model(model), Machine.named(gpu, host_mem_gb=host_gb),
                    sharegpt_like(n, seed), policy=policy)
    try:
        return simulate(cfg).to_dict()
    except DoesNotFit as e:
        return {"gpu": gpu, "model": model, "policy": policy, "host_gb": host_gb,
                "does_not_fit": str(e)}


def _key(d: dict) -> tuple:
    return d.get("gpu"), d.get("model"), d.get("policy"), d.get("host_gb")


def _table(rows: list[dict], host_gb: float) -> str:
    by = {_key(r): r for r in rows}
    ran = next(r for r in rows if "workload" in r)
    out = [f"Output tokens/s, whole 8-GPU server, host {host_gb:g} GB, {ran['workload']}, "
           f"{ran['requests']} requests. gain/dT_max: PipeMax's gain over pp as a fraction "
           "of the PCIe ceiling; streamed/dT_max: output tokens of rows loaded from host, per "
           "second, over the ceiling.", "",
           "| GPU | model | tp | pp | pp+offload FCFS | PipeMax | PipeMax/pp | dT_max | "
           "gain/dT_max | streamed/dT_max | link util |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for gpu in GPUS:
        for model in MODELS:
            cells = [by.get((gpu, model, p, host_gb), {}) for p in POLICIES]
            tok = [c.get("tok_s") for c in cells]
            fmt = [f"{t:.0f}" if t is not None else "n/f" for t in tok]
            pm, pp = cells[3], cells[1]
            if pm.get("tok_s") and pp.get("tok_s"):
                ceil = pm["ceiling_tok_s"]
                extra = [f"{pm['tok_s'] / pp['tok_s']:.2f}x", f"{ceil:.0f}",
                         f"{(pm['tok_s'] - pp['tok_s']) / ceil:.0%}",
                         f"{pm['ceiling_fraction']:.0%}", f"{pm['link_util']:.0%}"]
            else:
                extra = ["-"] * 5
            out.append(f"| {gpu} | {model} | " + " | ".join(fmt + extra) + " |")
    return "\n".join(out) + "\n"


def _plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return False
    fig, axes = plt.subplots(1, len(GPUS), figsize=(5 * len(GPUS), 4), squeeze=False)
    for ax, gpu in zip(axes[0], GPUS):
        for pol in POLICIES:
            pts = sorted((r["host_gb"], r["tok_s"]) for r in rows
                         if r.get("gpu") == gpu and r.get("model") == SWEEP_MODEL
                         and r.get("policy") == pol and "tok_s" in r)
            if pts:
                xs, ys = zip(*pts)
                if pol not in OFFLOAD and len(xs) == 1:   # host memory does not matter
                    xs_all = sorted({r["host_gb"] for r in rows if r.get("gpu") == gpu})
                    xs, ys = xs_all, [ys[0]] * len(xs_all)
                ax.plot(xs, ys, marker="o", label=pol)
        ax.set_title(f"{SWEEP_MODEL}, 8x {gpu}")
        ax.set_xlabel("host memory (GB)")
        ax.set_ylabel("output tokens/s")
        ax.set_xscale("log", base=2)
        ticks = sorted({r["host_gb"] for r in rows if r.get("gpu") == gpu})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-results/projection")
    ap.add_argument("--quick", action="store_true", help="800 requests, smaller sweep")
    ap.add_argument("--requests", type=int, default=None, help="default 2000 (quick: 800)")
    ap.add_argument("--host-gb", type=float, default=256.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    n = a.requests or (800 if a.quick else 2000)
    sweep = (512.0,) if a.quick else (128.0, 512.0)
    jobs = [(g, m, p, a.host_gb, n, a.seed) for g in GPUS for m in MODELS for p in POLICIES]
    jobs += [(g, SWEEP_MODEL, p, h, n, a.seed) for g in GPUS for p in OFFLOAD for h in sweep]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = []
    with ProcessPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        for job, r in zip(jobs, pool.map(_run, jobs)):
            rows.append(r)
            if "tok_s" in r:
                print(f"{r['policy']:16s} {r['gpu']:8s} {r['model']:12s} host {r['host_gb']:5.0f}GB "
                      f"{r['tok_s']:8.1f} tok/s  rows/turn {r['mean_rows']:6.1f}  L {r['mean_context']:4.0f}"
                      + (f"  streamed {r['streamed_tok_s']:7.1f} = {r['ceiling_fraction']:4.0%} of "
                         f"dT_max {r['ceiling_tok_s']:.0f}" if r["policy"] in OFFLOAD else "")
                      + f"  [{r['sim_wall_s']:.1f}s]", flush=True)
            else:
                print(f"{job[2]:16s} {job[0]:8s} {job[1]:12s} does not fit: {r['does_not_fit']}")
    wall = time.perf_counter() - t0
    table = _table(rows, a.host_gb)
    print(table)
    (out / "projection.md").write_text(table)
    record = {"benchmark": "projection", "requests": n, "seed": a.seed, "host_gb": a.host_gb,
              "sweep_host_gb": sweep, "wall_s": wall, "jobs": a.jobs,
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
              "results": rows}
    (out / "projection.json").write_text(json.dumps(record, indent=1))
    plotted = _plot(rows, out / "projection.png")
    print(f"grid of {len(jobs)} runs in {wall:.0f}s; wrote {out}/projection.md, projection.json"
          + (", projection.png" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
