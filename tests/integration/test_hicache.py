"""SGLang's hierarchical cache on CPU, through pipemax_sglang: KV written to host memory, evicted
from a small device pool, and loaded back on a later hit, with tokens unchanged.

Both SGLang's default host layout (`kernel` I/O, `page_first`) and `direct`/`layer_first` run
on CPU through pipemax_sglang's torch transfer path (pipemax_sglang/sglang/cpu_backend.py).
"""

from __future__ import annotations

import pytest

from tests.conftest import GREEDY, random_prompts
from tests.support.engine_process import EngineProcess
from tests.support.reference import hf_greedy

# 6 prompts of 100-140 tokens fill most of a 1,024-token device pool: sending B after A
# evicts A's prefixes to host; re-sending A must hit host memory.
A = random_prompts(6, 100, 140, seed=2)
B = random_prompts(6, 100, 140, seed=3)
NEW = 8


@pytest.mark.parametrize("layout", [
    {},  # SGLang's defaults: hicache_io_backend=kernel, hicache_mem_layout=page_first
    {"hicache_io_backend": "direct", "hicache_mem_layout": "layer_first"},
], ids=["default-kernel-page_first", "direct-layer_first"])
def test_resent_prompts_come_back_from_host_with_reference_tokens(tiny_model, layout):
    sp = {**GREEDY, "max_new_tokens": NEW}
    # stock SGLang (LRU eviction): this is about HiCache's own host tier running on CPU
    with EngineProcess(model_path=tiny_model, max_total_tokens=1024, enable_hierarchical_cache=True,
                       hicache_ratio=8, log_level="error", disable_pipemax=True, **layout) as eng:
        first = eng.generate(input_ids=A, sampling_params=sp)
        eng.generate(input_ids=B, sampling_params=sp)
        again = eng.generate(input_ids=A, sampling_params=sp)
        info = eng.call("server_info")

    for key, value in layout.items():
        assert info[key] == value
    host_hits = [(o["meta_info"].get("cached_tokens_details") or {}).get("host", 0) for o in again]
    assert sum(host_hits) > 0, f"no host hits: {host_hits}"
    assert all(h > 0 for h in host_hits), host_hits
    ref = hf_greedy(tiny_model, A, NEW)
    assert [o["output_ids"] for o in first] == ref
    assert [o["output_ids"] for o in again] == ref
