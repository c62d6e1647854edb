"""Workloads: (prompt length, output length) per request, seeded or from a trace.

Offline batch inference: every request is there at time 0 and runs to its output length
(benchmarks set max_new_tokens = output length with ignore_eos, so the scheduler knows it).

`sharegpt_like` (the default) is a stand-in for ShareGPT, not the dataset: log-normal
prompt and output lengths filtered the way vLLM's benchmark samples ShareGPT (prompt and
output >= 4 tokens, prompt <= 1,024, prompt + output <= 2,048; TD-Pipe also keeps prompts
<= 1,024). Medians 180 / 150 tokens and spreads 1.0 / 0.9 give means of about 237 / 219
tokens after the filter (the prompt cap trims the tail), in the range reported for
ShareGPT under that filter. Assumed, not fitted: we do not have the dataset here.

Trace: a JSONL file, one request a line, {"prompt_len": int, "output_len": int} (also
accepted: input_len / prompt_tokens and output_tokens / max_new_tokens).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np


class Workload(NamedTuple):
    name: str
    prompt: np.ndarray     # [n] int64 prompt tokens
    output: np.ndarray     # [n] int64 output tokens (>= 1)

    @property
    def n(self) -> int:
        return int(self.prompt.size)

    @property
    def output_tokens(self) -> int:
        return int(self.output.sum())

    def describe(self) -> str:
        return (f"{self.name}: {self.n} requests, prompt mean {self.prompt.mean():.0f}, "
                f"output mean {self.output.mean():.0f} tokens")


def _check(name: str, prompt: np.ndarray, output: np.ndarray) -> Workload:
    prompt = np.asarray(prompt, dtype=np.int64)
    output = np.asarray(output, dtype=np.int64)
    if prompt.shape != output.shape or prompt.ndim != 1 or prompt.size == 0:
        raise ValueError("one prompt and one output length per request, at least one request")
    if (prompt < 1).any() or (output < 1).any():
        raise ValueError("prompt and output lengths must be >= 1")
    return Workload(name, prompt, output)


def sharegpt_like(n: int, seed: int = 0, prompt_median: float = 180.0,
                  output_median: float = 150.0, scale: float = 1.0) -> Workload:
    """Seeded ShareGPT-like lengths (module note). `scale` multiplies both lengths and the
    caps (context-length sweeps)."""
    rng = np.random.default_rng(seed)
    out_p, out_o = [], []
    cap_p, cap_t = int(1024 * scale), int(2048 * scale)
    while len(out_p) < n:
        m = 2 * (n - len(out_p)) + 16
        p = np.rint(rng.lognormal(np.log(prompt_median * scale), 1.0, m)).astype(np.int64)
        o = np.rint(rng.lognormal(np.log(output_median * scale), 0.9, m)).astype(np.int64)
        ok = (p >= 4) & (o >= 4) & (p <= cap_p) & (p + o <= cap_t)
        out_p.extend(p[ok].tolist())
        out_o.extend(o[ok].tolist())
    tag = f"sharegpt-like(seed={seed})" if scale == 1.0 else f"sharegpt-like(x{scale:g},seed={seed})"
    return _check(tag, np.array(out_p[:n]), np.array(out_o[:n]))


def fixed(n: int, prompt: int, output: int) -> Workload:
    return _check(f"fixed({prompt}/{output})", np.full(n, prompt), np.full(n, output))


_PROMPT_KEYS = ("prompt_len", "input_len", "prompt_tokens")
_OUTPUT_KEYS = ("output_len", "output_tokens", "max_new_tokens")


def load_jsonl(path: str | Path, limit: int | None = None) -> Workload:
    prompt, output = [], []
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        try:
            prompt.append(int(next(row[k] for k in _PROMPT_KEYS if k in row)))
            output.append(int(next(row[k] for k in _OUTPUT_KEYS if k in row)))
        except StopIteration:
            raise ValueError(f"{path}:{i + 1}: need one of {_PROMPT_KEYS} and one of "
                             f"{_OUTPUT_KEYS}") from None
        if limit is not None and len(prompt) >= limit:
            break
    return _check(f"trace({Path(path).name})", np.array(prompt), np.array(output))
