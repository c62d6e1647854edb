"""Shared fixtures. Two tiers: `pytest -m "not integration"` runs in seconds with no engine;
the integration tier (tests/integration/, tests/load/) starts real SGLang processes (engines
shared per module where configs allow).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests.support, also inside spawned engine processes
    sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if {"integration", "load"} & set(item.nodeid.split("::")[0].split(os.sep)):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from pipemax_sglang.models import ensure_tiny_model

    return ensure_tiny_model()


def random_prompts(n: int, lo: int, hi: int, seed: int, vocab: int = 1024) -> list[list[int]]:
    """Seeded prompts of token ids (ids 0-3 are the special tokens: avoided)."""
    rng = random.Random(seed)
    return [[rng.randrange(4, vocab) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


GREEDY = {"temperature": 0.0, "ignore_eos": True}
