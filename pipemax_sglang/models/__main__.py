"""`python -m pipemax_sglang.models [DIR]`: build the built-in tiny model, print its directory."""

import sys

from pipemax_sglang.models.tiny import ensure_tiny_model

print(ensure_tiny_model(sys.argv[1] if len(sys.argv) > 1 else None))
