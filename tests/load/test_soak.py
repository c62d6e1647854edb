"""The server under load (integration tier): real `launch_server` processes on loopback, 128
concurrent clients mixing short and long prompts and outputs, streaming and not, n = 2,
clients that disconnect, aborts mid-decode and bad requests, at points of the matrix that
used to hang or fail (M = P + 2 with the device at a quarter or an eighth of what is in
flight). The full matrix (pp 1 and 2, M = P .. P + 2, every stream mode, KV 1/2, 1/4,
1/8, three runs each) is `benchmarks/soak.py`.

Every point: every good request gets 200 with the greedy tokens of the same request run
alone (Hugging Face greedy, which tests/integration/test_engine_parity.py shows equal to
stock SGLang), every bad one a 4xx, the pools return to their idle state, a fresh request
is served, and PipeMax parked requests (the point is not vacuous)."""

from __future__ import annotations

import pytest

from tests.support.reference import hf_greedy
from tests.support.soak import Point, run_point

POINTS = [
    Point(pp=2, depth=2, stream="auto", frac=0.25),      # the reported hang
    Point(pp=2, depth=2, stream="always", frac=0.125),   # the reported 500s, tighter
    Point(pp=1, depth=0, stream="always", frac=0.25),
]


def hf_reference(model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)

    def ids(p):   # a text prompt as SGLang's tokenizer manager encodes it
        return tok(p)["input_ids"] if isinstance(p, str) else list(p)

    def ref(asks: dict) -> dict:
        return {p: hf_greedy(model, [ids(p)], n)[0] for p, n in asks.items()}
    return ref


@pytest.mark.parametrize("point", POINTS, ids=lambda p: p.name)
def test_every_good_request_completes_identically_and_the_server_returns_to_idle(tiny_model, point):
    # the reported hang's own 128 text requests first (at the point that hung), then the mix
    rec = run_point(tiny_model, point, n=128, seed=1, runs=1, reference=hf_reference(tiny_model),
                    repro=point == POINTS[0])
    for run in rec["runs"]:
        assert run["failed"] == {} and run["completed"] == run["good"] > 0, run
        assert run["identical"], run["mismatched"]
        assert run["pools_idle"], (run["pools"], rec)
        assert run["fresh_ok"]
    mixed = rec["runs"][-1]
    assert mixed["bad_4xx"] == mixed["bad"] > 0, mixed
    assert sum(s["parks"] for s in mixed["stages"]) > 0, mixed["stages"]
    # under aborts and 128 clients too, no load found its park's copy still writing
    assert [s["late_park_copies"] for s in mixed["stages"]] == [0] * len(mixed["stages"]), mixed["stages"]
    assert rec["server_log_errors"] == [], rec["server_log_errors"]
