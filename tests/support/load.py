"""A mixed concurrent load against a real server, and its verdict (tests/load/, benchmarks/soak.py).

    items    = make_load(n, seed)                     # what the clients will do
    outcomes = run_load(url, items)                    # all at once, one thread each
    report   = judge(items, outcomes, reference)       # completed, failed by status, identical

The mix, like a server's real traffic: short and long prompts and outputs; plain and
streaming /generate; n = 2 (parallel samples sharing a prefix); clients that disconnect
mid-stream; requests aborted mid-decode (/abort_request by rid); a few bad requests, each
of which must get a 4xx. Every good request must get 200 with the greedy tokens of the
same request run alone (`reference`: prompt -> tokens; greedy continuations are prefixes
of longer ones, so one reference per prompt at the longest length serves every length).
make_repro_load() is the reported hang's load: 128 greedy text requests of 32 tokens.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

GOOD = ("plain", "stream", "n2")
MIX = (("plain", 55), ("stream", 15), ("n2", 8), ("disconnect", 6), ("abort", 8), ("bad", 8))
BAD_BODIES = (
    {"input_ids": [5, 99_999], "sampling_params": {"max_new_tokens": 4}},          # out of vocab
    {"input_ids": [5, 6], "sampling_params": {"max_new_tokens": -1}},
    {"input_ids": [5, 6], "sampling_params": {"max_new_tokens": 4, "temperature": -1}},
    {"input_ids": [5, 6], "sampling_params": {"max_new_tokens": 4, "top_p": 2}},
    {"sampling_params": {"max_new_tokens": 4}},                                     # no prompt
    {"input_ids": "not ids", "sampling_params": {"max_new_tokens": 4}},
    {"input_ids": [5] * 5000, "sampling_params": {"max_new_tokens": 4}},            # too long
)


@dataclass(frozen=True)
class LoadItem:
    i: int
    kind: str                        # plain | stream | n2 | disconnect | abort | bad
    prompt: tuple[int, ...]
    max_new: int
    bad_body: dict | None = None
    text: str | None = None          # a text prompt instead of token ids (then `prompt` is ())

    @property
    def key(self):
        """What the reference is keyed by: the text, or the token ids."""
        return self.text if self.text is not None else self.prompt

    @property
    def rid(self) -> str:
        # fixed width: SGLang aborts by rid prefix, and "load-3" would abort "load-30"
        return f"load-{self.i:06d}"

    @property
    def kv_tokens(self) -> int:
        """KV this request keeps in flight at its end (bad ones: none)."""
        if self.kind == "bad":
            return 0
        prompt = len(self.prompt) if self.text is None else len(self.text) // 3   # ~3 chars a token
        return (prompt + self.max_new) * (2 if self.kind == "n2" else 1)


@dataclass
class Outcome:
    i: int
    kind: str
    status: int | str                # HTTP status, or the exception's name
    output_ids: list | None = None   # tokens (n2: one list per sample)
    finish: list = field(default_factory=list)   # finish reason type(s)
    latency_s: float = 0.0


def make_load(n: int, seed: int, vocab: int = 1024) -> list[LoadItem]:
    rng = random.Random(seed)
    kinds = [k for k, w in MIX for _ in range(w)]
    items = []
    for i in range(n):
        kind = kinds[rng.randrange(len(kinds))] if i >= len(MIX) else MIX[i][0]   # one of each
        long_prompt, long_out = rng.random() < 0.4, rng.random() < 0.4
        plen = rng.randint(120, 320) if long_prompt else rng.randint(8, 48)
        prompt = tuple(rng.randrange(4, vocab) for _ in range(plen))
        max_new = rng.randint(32, 80) if long_out else rng.randint(4, 24)
        if kind in ("disconnect", "abort"):
            max_new = max(max_new, 48)       # still decoding when the client leaves or aborts
        bad = BAD_BODIES[rng.randrange(len(BAD_BODIES))] if kind == "bad" else None
        items.append(LoadItem(i, kind, prompt, max_new, bad))
    return items


def make_repro_load(n: int = 128) -> list[LoadItem]:
    """The load of the reported hang: n concurrent greedy text requests, 32 tokens each."""
    return [LoadItem(i, "plain", (), 32, text=f"request {i}: " + "alpha beta gamma " * (1 + i % 20))
            for i in range(n)]


def in_flight_tokens(items: list[LoadItem]) -> int:
    return sum(it.kv_tokens for it in items)


def _body(it: LoadItem, stream: bool = False) -> dict:
    params = {"temperature": 0, "max_new_tokens": it.max_new, "ignore_eos": True}
    if it.kind == "n2":
        params["n"] = 2
    prompt = {"text": it.text} if it.text is not None else {"input_ids": list(it.prompt)}
    return {**prompt, "sampling_params": params, "rid": it.rid, "stream": stream}


def _one(url: str, it: LoadItem, timeout: float) -> Outcome:
    start = time.monotonic()
    out = Outcome(it.i, it.kind, "?")
    try:
        if it.kind == "bad":
            r = requests.post(url + "/generate", json=it.bad_body, timeout=timeout)
            out.status = r.status_code
        elif it.kind in ("stream", "disconnect"):
            with requests.post(url + "/generate", json=_body(it, stream=True), stream=True,
                               timeout=timeout) as r:
                out.status = r.status_code
                last, seen = None, 0
                for line in r.iter_lines():
                    if not line.startswith(b"data: {"):
                        continue
                    last = json.loads(line[6:])
                    seen += 1
                    if it.kind == "disconnect" and seen >= 2:
                        break                       # the client goes away mid-stream
                if last is not None:
                    out.output_ids = last.get("output_ids")
                    reason = (last.get("meta_info") or {}).get("finish_reason") or {}
                    out.finish = [reason.get("type")]
        else:
            if it.kind == "abort":
                threading.Timer(0.3 + 0.01 * (it.i % 150), _abort, (url, it.rid)).start()
            r = requests.post(url + "/generate", json=_body(it), timeout=timeout)
            out.status = r.status_code
            if r.status_code == 200:
                body = r.json()
                outs = body if isinstance(body, list) else [body]
                out.output_ids = [o["output_ids"] for o in outs] if it.kind == "n2" else outs[0]["output_ids"]
                out.finish = [(o["meta_info"].get("finish_reason") or {}).get("type") for o in outs]
    except requests.RequestException as e:
        out.status = type(e).__name__
    out.latency_s = time.monotonic() - start
    return out


def _abort(url: str, rid: str) -> None:
    try:
        requests.post(url + "/abort_request", json={"rid": rid}, timeout=30)
    except requests.RequestException:
        pass


def run_load(url: str, items: list[LoadItem], timeout: float = 600.0) -> list[Outcome]:
    """Every item at once, one client thread each."""
    with ThreadPoolExecutor(max_workers=len(items)) as ex:
        return list(ex.map(lambda it: _one(url, it, timeout), items))


def reference_asks(items: list[LoadItem]) -> dict:
    """Prompt (LoadItem.key) -> the longest output any item but the bad ones asks of it."""
    out: dict = {}
    for it in items:
        if it.kind != "bad":
            out[it.key] = max(out.get(it.key, 0), it.max_new)
    return out


def judge(items: list[LoadItem], outcomes: list[Outcome], reference: dict) -> dict:
    """The verdict. `reference`: prompt -> greedy tokens (at least as long as any ask).

    completed: good requests with 200 and all their tokens; failed: the good ones that did
    not, by status; identical: every completed good request equals the reference (and so
    do aborted requests that finished before their abort arrived, and the tokens a
    disconnected stream received); bad_4xx: every bad request got a 4xx."""
    good = [(it, o) for it, o in zip(items, outcomes) if it.kind in GOOD]
    failed: Counter = Counter()
    completed, mismatched, lat = 0, [], []
    for it, o in good:
        want = list(reference[it.key][: it.max_new])
        got = o.output_ids if it.kind != "n2" else None
        whole = (o.status == 200 and o.output_ids is not None
                 and all(f == "length" for f in o.finish) and (
                     o.output_ids == [want, want] if it.kind == "n2" else got == want))
        if o.status == 200 and o.output_ids is not None and all(f == "length" for f in o.finish):
            completed += 1
            lat.append(o.latency_s)
            if not whole:
                mismatched.append(it.i)
        else:
            failed[str(o.status) if o.status != 200 else "incomplete"] += 1
    partial_ok = True
    for it, o in zip(items, outcomes):
        if it.kind in ("abort", "disconnect") and o.output_ids:
            want = list(reference[it.key][: len(o.output_ids)])
            partial_ok &= o.output_ids == want
    bad = [o for it, o in zip(items, outcomes) if it.kind == "bad"]
    lat.sort()
    return {
        "requests": len(items),
        "good": len(good),
        "completed": completed,
        "failed": dict(failed),
        "identical": not mismatched and partial_ok and completed == len(good),
        "mismatched": mismatched[:20],
        "bad": len(bad),
        "bad_4xx": sum(1 for o in bad if isinstance(o.status, int) and 400 <= o.status < 500),
        "aborted": sum(1 for it, o in zip(items, outcomes)
                       if it.kind == "abort" and "abort" in o.finish),
        "p50_s": round(statistics.median(lat), 3) if lat else None,
        "p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3) if lat else None,
    }


def status(url: str) -> dict:
    return requests.get(url + "/pipemax/status", timeout=30).json()


def idle_pools(url: str, timeout: float = 180.0) -> list[dict]:
    """Wait until every stage is idle with nothing parked or prefetching, flush the cache
    (SGLang refuses while any request is in flight, so a refusal is retried), and return
    each stage's report once a scheduler turn has published the flushed pools. Raises
    TimeoutError with the stages' state if that never happens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stages = status(url)["stages"]
        quiet = all(s["idle"] and s["pipemax"].get("parked", 0) == 0
                    and s["pipemax"].get("prefetching", 0) == 0 for s in stages)
        if quiet and requests.post(url + "/flush_cache", timeout=60).status_code == 200:
            break
        time.sleep(0.5)
    else:
        brief = [{k: s.get(k) for k in ("pp_rank", "idle", "pools")}
                 | {k: s["pipemax"].get(k) for k in ("parked", "prefetching", "parked_rids", "turn")}
                 for s in status(url)["stages"]]
        raise TimeoutError(f"never idle and flushable: {brief}")
    requests.get(url + "/health", timeout=30)
    time.sleep(1.0)
    return status(url)["stages"]


def pools(stages: list[dict]) -> list[dict]:
    return [s["pools"] for s in stages]
