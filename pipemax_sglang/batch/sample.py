"""A seeded sample input file: chat and completions requests, greedy, mixed lengths.

`make demo` runs the batch runner on one; tests build theirs the same way. Prompts are Python
vocabulary (the built-in tiny model's tokenizer was trained on Python source), a few words to a
few hundred, long-tailed like real prompt sets. Every request is greedy (temperature 0), so a
run's texts are reproducible and comparable with the server's; the built-in model, with random
weights, would emit EOS within a few tokens, so `ignore_eos` holds each request to its
max_tokens unless the caller asks for some EOS-ended ones (eos_every).
"""

from __future__ import annotations

import json
import keyword
import os
import random
from typing import Any, Iterator

WORDS = tuple(keyword.kwlist) + (
    "self", "print", "len", "range", "dict", "list", "tuple", "str", "int", "None", "os", "sys",
    "path", "open", "read", "write", "json", "value", "key", "items", "append", "return", "data",
    "file", "line", "name", "args", "kwargs", "error", "result", "parser", "config", "time",
)
SYSTEM = "You write Python."


def sample_lines(n: int, seed: int = 0, max_tokens: tuple[int, int] = (8, 64),
                 eos_every: int = 0) -> Iterator[dict[str, Any]]:
    """`n` request lines (dicts): two in three chat, one in three completions.

    max_tokens is drawn uniformly from the inclusive range; with eos_every = k > 0, every k-th
    request may stop at EOS (ignore_eos false), the rest run to max_tokens.
    """
    rng = random.Random(seed)
    for i in range(n):
        words = min(300, max(3, int(rng.lognormvariate(3.0, 0.8))))
        text = " ".join(rng.choice(WORDS) for _ in range(words))
        body: dict[str, Any] = {"max_tokens": rng.randint(*max_tokens), "temperature": 0,
                                "ignore_eos": not (eos_every and i % eos_every == 0)}
        if i % 3 == 2:
            url = "/v1/completions"
            body["prompt"] = text
        else:
            url = "/v1/chat/completions"
            body["messages"] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
        yield {"custom_id": f"req-{i:06d}", "method": "POST", "url": url, "body": body}


def write_sample(path: str | os.PathLike, n: int, **kwargs: Any) -> None:
    with open(path, "w") as f:
        for line in sample_lines(n, **kwargs):
            f.write(json.dumps(line) + "\n")
