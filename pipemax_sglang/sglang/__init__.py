"""The adapter layer: the only part of pipemax_sglang that imports sglang.

Importing it checks the SGLang pin first (version.py), so a wrong sglang fails with both
versions named instead of with an AttributeError deep inside SGLang.
"""

from pipemax_sglang.sglang.version import SGLANG_PIN, check_sglang_version

check_sglang_version()

__all__ = ["SGLANG_PIN"]
