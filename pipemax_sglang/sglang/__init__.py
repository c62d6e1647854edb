"""The adapter layer: the only part of pipemax_sglang that imports sglang.

Its entry modules (engine.py, server.py, plugin.py) check the SGLang pin (version.py) before
their first sglang import, so a wrong sglang fails with both versions named instead of with an
AttributeError deep inside SGLang. This __init__ imports nothing, so the pin itself can be read
and checked without importing sglang.
"""
