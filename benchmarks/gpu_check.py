"""What the host link really gives PipeMax on this GPU, and what moving KV costs compute.

    python benchmarks/gpu_check.py [--json PATH]      # on a CUDA GPU, about a minute
    python benchmarks/gpu_check.py --cpu-smoke        # tiny sizes on CPU: code paths only

Three measurements, one table (CUDA events, warm-up, median of repeats):
1. plain pinned copies, 1 GiB each way: the link's ceiling for H2D and D2H;
2. the KV transfer path PipeMax drives (torch only): scattered tokens of a page-first
   pinned host pool gathered into a pinned staging buffer, one H2D copy on a side stream,
   scattered into a layer-first device pool (and the reverse for D2H), as GB/s of KV moved;
3. a torch-only stack of decode-shaped transformer layers (bf16 GEMMs + SDPA) timed alone
   and while H2D and D2H copies run on side streams: the compute slowdown from overlap,
   and the bandwidth the copies still reach.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def timed(fn, device, reps: int, warmup: int = 3) -> float:
    """Median seconds of fn() over reps (CUDA events on GPU, perf_counter on CPU)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            out.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return statistics.median(out)


def plain_copies(device, nbytes: int, reps: int) -> tuple[float, float]:
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=device.type == "cuda").random_(0, 255)
    dev = torch.empty(nbytes, dtype=torch.uint8, device=device)
    h2d = timed(lambda: dev.copy_(host, non_blocking=True), device, reps)
    d2h = timed(lambda: host.copy_(dev, non_blocking=True), device, reps)
    return nbytes / h2d / 1e9, nbytes / d2h / 1e9


class KVMover:
    """The torch KV transfer path: gather on host into pinned staging, one bulk copy on a
    side stream, scatter on device. Pools: host page-first [S, L, 2, H, D] (a token's layers
    together, as SGLang's default HiCache layout); device layer-first [L, 2, T, H, D]."""

    def __init__(self, device, layers, heads, dim, host_tokens, dev_tokens, batch_tokens, dtype):
        pin = device.type == "cuda"
        self.device = device
        self.host = torch.randn(host_tokens, layers, 2, heads, dim, dtype=dtype).pin_memory() if pin else \
            torch.randn(host_tokens, layers, 2, heads, dim, dtype=dtype)
        self.dev = torch.zeros(layers, 2, dev_tokens, heads, dim, dtype=dtype, device=device)
        self.stage_h = torch.empty(batch_tokens, layers, 2, heads, dim, dtype=dtype, pin_memory=pin)
        self.stage_d = torch.empty(batch_tokens, layers, 2, heads, dim, dtype=dtype, device=device)
        self.stream = torch.cuda.Stream() if pin else None
        g = torch.Generator().manual_seed(0)
        self.hidx = torch.randperm(host_tokens, generator=g)[:batch_tokens]
        self.didx = torch.randperm(dev_tokens, generator=g)[:batch_tokens].to(device)
        self.nbytes = self.stage_h.numel() * self.stage_h.element_size()

    def load(self) -> None:                       # H2D: rejoin
        torch.index_select(self.host, 0, self.hidx, out=self.stage_h)
        ctx = torch.cuda.stream(self.stream) if self.stream else _null()
        with ctx:
            self.stage_d.copy_(self.stage_h, non_blocking=True)
            # [B, L, 2, H, D] -> [L, 2, B, H, D] scattered into token slots
            self.dev.index_copy_(2, self.didx, self.stage_d.permute(1, 2, 0, 3, 4))
        if self.stream:
            torch.cuda.current_stream().wait_stream(self.stream)

    def store(self) -> None:                      # D2H: park
        ctx = torch.cuda.stream(self.stream) if self.stream else _null()
        with ctx:
            self.stage_d.copy_(self.dev.index_select(2, self.didx).permute(2, 0, 1, 3, 4))
            self.stage_h.copy_(self.stage_d, non_blocking=True)
        if self.stream:
            self.stream.synchronize()
        self.host.index_copy_(0, self.hidx, self.stage_h)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def layer_stack(device, layers, batch, hidden, ffn, ctx, dtype):
    """Decode-shaped layers: QKV/O and MLP GEMMs on `batch` rows, SDPA over `ctx` keys."""
    heads = hidden // 128
    w = [(torch.randn(hidden, 3 * hidden, dtype=dtype, device=device) / hidden ** 0.5,
          torch.randn(hidden, hidden, dtype=dtype, device=device) / hidden ** 0.5,
          torch.randn(hidden, 2 * ffn, dtype=dtype, device=device) / hidden ** 0.5,
          torch.randn(ffn, hidden, dtype=dtype, device=device) / ffn ** 0.5) for _ in range(layers)]
    kv = torch.randn(2, batch, heads, ctx, hidden // heads, dtype=dtype, device=device)
    x0 = torch.randn(batch, hidden, dtype=dtype, device=device)

    def run():
        x = x0
        for wqkv, wo, wup, wdown in w:
            q = (x @ wqkv)[:, :hidden].view(batch, heads, 1, hidden // heads)
            a = torch.nn.functional.scaled_dot_product_attention(q, kv[0], kv[1])
            x = x + a.reshape(batch, hidden) @ wo
            g, u = (x @ wup).chunk(2, dim=-1)
            x = x + (torch.nn.functional.silu(g) * u) @ wdown
        return x

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-smoke", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not args.cpu_smoke and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA GPU here (use --cpu-smoke to exercise the code on CPU)")
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    small = args.cpu_smoke
    reps = 3 if small else 10
    dtype = torch.float32 if small else torch.bfloat16
    rows = []

    h2d, d2h = plain_copies(device, (1 << 20) if small else (1 << 30), reps)
    rows.append(("plain pinned copy", h2d, d2h, ""))

    # Llama-3-70B on 8 stages: 10 layers a stage, 8 KV heads of 128; 4,096 tokens per move
    mover = KVMover(device, layers=2 if small else 10, heads=2 if small else 8, dim=16 if small else 128,
                    host_tokens=512 if small else 65536, dev_tokens=512 if small else 32768,
                    batch_tokens=64 if small else 4096, dtype=dtype)
    t_load = timed(mover.load, device, reps)
    t_store = timed(mover.store, device, reps)
    rows.append(("KV mover (scattered tokens)", mover.nbytes / t_load / 1e9, mover.nbytes / t_store / 1e9,
                 f"{mover.nbytes / 1e6:.0f} MB a move"))

    run = layer_stack(device, 2 if small else 10, 8 if small else 64, 256 if small else 8192,
                      512 if small else 28672, 64 if small else 1024, dtype)
    alone = timed(run, device, reps)
    if device.type == "cuda":
        # copies long enough to cover the whole stack: the stack is timed on the compute
        # stream while both directions stream on their own streams
        big = 512 << 20
        hsrc = torch.empty(big, dtype=torch.uint8).pin_memory()
        ddst = torch.empty(big, dtype=torch.uint8, device=device)
        dsrc = torch.empty(big, dtype=torch.uint8, device=device)
        hdst = torch.empty(big, dtype=torch.uint8).pin_memory()
        s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
        times = []
        for i in range(reps + 3):
            torch.cuda.synchronize()
            with torch.cuda.stream(s1):
                ddst.copy_(hsrc, non_blocking=True)
            with torch.cuda.stream(s2):
                hdst.copy_(dsrc, non_blocking=True)
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            run()
            b.record()
            torch.cuda.synchronize()
            if i >= 3:
                times.append(a.elapsed_time(b) / 1e3)
        overlapped = statistics.median(times)
        extra = {"stack_alone_ms": alone * 1e3, "stack_with_copies_ms": overlapped * 1e3,
                 "compute_slowdown": overlapped / alone - 1.0}
        rows.append(("stack + copies (compute)", 0.0, 0.0,
                     f"{alone * 1e3:.2f} ms alone, {overlapped * 1e3:.2f} ms under copies"))
    else:
        extra = {"stack_alone_ms": alone * 1e3}

    print(f"{'measurement':<30} {'H2D GB/s':>9} {'D2H GB/s':>9}  note")
    for name, a, b, note in rows:
        print(f"{name:<30} {a:9.2f} {b:9.2f}  {note}")
    if "compute_slowdown" in extra:
        print(f"compute slowdown while both directions copy: {100 * extra['compute_slowdown']:.1f}%")
    record = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "rows": [{"name": n, "h2d_gbps": a, "d2h_gbps": b, "note": t} for n, a, b, t in rows], **extra}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
