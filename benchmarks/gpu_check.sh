#!/usr/bin/env bash
# One prepared GPU check (under 8 minutes on an H200-class GPU): pinned H2D/D2H bandwidth,
# PipeMax's KV transfer path, and the compute slowdown while transfers overlap a
# transformer stack. Needs only python3 with CUDA torch (no sglang). Writes JSON to $OUT
# when set (the device tool), else to bench-results/.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench-results}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,pcie.link.gen.current,pcie.link.width.current --format=csv || true
timeout 480 python3 benchmarks/gpu_check.py --json "$out/gpu_check.json"
