"""Hypothesis strategies and small builders for the selector tests (not a test module)."""

from hypothesis import strategies as st

from pipemax_sglang.core import (
    Candidate,
    HostNode,
    Resident,
    SelectorInput,
    SelectorParams,
    StepCost,
)

COST = StepCost(a=0.020, b=1e-4, c=5e-7)


@st.composite
def selector_inputs(draw, max_candidates: int = 10, max_residents: int = 6) -> SelectorInput:
    """Small random decisions: shared radix nodes, aged candidates, every constraint able
    to bind. Ids are random strings so that sorted order differs from creation order."""
    n = draw(st.integers(0, max_candidates))
    ids = draw(st.lists(st.text("abcdxyz", min_size=1, max_size=4), min_size=n, max_size=n,
                        unique=True))
    pool = [HostNode(100 + i, draw(st.integers(1, 64))) for i in range(draw(st.integers(0, 3)))]
    cands = []
    for rid in ids:
        ctx = draw(st.integers(1, 600))
        host = draw(st.integers(0, ctx))
        nodes, room = [], host
        for node in pool:
            if node.tokens <= room and draw(st.booleans()):
                nodes.append(node)
                room -= node.tokens
        cands.append(Candidate(rid, ctx, host, tuple(nodes), draw(st.integers(0, 24)),
                               draw(st.integers(0, 50))))
    residents = tuple(Resident(f"s:{i}", draw(st.integers(1, 600)),
                               draw(st.one_of(st.none(), st.integers(0, 1))))
                      for i in range(draw(st.integers(0, max_residents))))
    k = draw(st.sampled_from([1, 7, 4096]))
    total = sum(c.host_tokens for c in cands)
    others = draw(st.integers(0, 4))
    return SelectorInput(
        candidates=tuple(cands),
        residents=residents,
        budget_bytes=k * draw(st.integers(0, total + 10)),
        kv_bytes_per_token=k,
        device_tokens_free=draw(st.integers(0, total + 20)),
        row_cap=draw(st.integers(0, 14)),
        cost=draw(st.sampled_from([COST, StepCost(0.0, 0.0, 0.0), StepCost(0.01, 1e-3, 0.0)])),
        other_step_times=tuple(draw(st.floats(0.0, 0.2)) for _ in range(others)),
        other_rows=tuple(draw(st.integers(0, 16)) for _ in range(others)),
        num_stages=draw(st.integers(1, 8)),
        params=SelectorParams(force_after_rounds=draw(st.integers(1, 24))),
    )
