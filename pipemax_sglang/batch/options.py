"""BatchOptions: the runner's own flags, validated once, frozen.

    -i IN.jsonl -o OUT.jsonl [--skip-invalid] [--summary-json F] [--progress-every S]
    [--max-in-flight N]

Every other flag belongs to PipeMax (--pipemax-*, config.py) or to SGLang (its ServerArgs
parser); from_cli takes the runner's out of argv and hands back the rest. None of these names
is an SGLang flag (a test checks that against SGLang's parser).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from pipemax_sglang.config import ConfigError

# Requests handed to the engine at once. SGLang queues what it cannot run yet, so this only
# needs to exceed what the engine keeps in flight (running rows, parked rows, its waiting
# queue's head); above that it buys nothing and costs the runner memory (bodies, prompt ids).
DEFAULT_MAX_IN_FLIGHT = 1024
# Without a terminal (logs, CI, pipes): one progress line this often.
DEFAULT_PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True)
class BatchOptions:
    input: str
    output: str
    skip_invalid: bool = False
    summary_json: str | None = None
    progress_every_s: float = DEFAULT_PROGRESS_EVERY_S
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT

    def __post_init__(self) -> None:
        if not (math.isfinite(self.progress_every_s) and self.progress_every_s > 0):
            raise ConfigError(f"--progress-every must be a positive number of seconds, got {self.progress_every_s}")
        if self.max_in_flight < 1:
            raise ConfigError(f"--max-in-flight must be at least 1, got {self.max_in_flight}")

    @classmethod
    def from_cli(cls, argv: list[str]) -> tuple["BatchOptions", list[str]]:
        """Take the runner's flags out of argv; return them and the rest (PipeMax's, SGLang's)."""
        parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
        add_cli_args(parser)
        try:
            ns, rest = parser.parse_known_args(argv)
        except argparse.ArgumentError as e:
            raise ConfigError(str(e)) from None
        missing = [flag for flag, value in (("-i/--input-file", ns.input), ("-o/--output-file", ns.output))
                   if value is None]
        if missing:
            raise ConfigError(f"the following arguments are required: {', '.join(missing)}")
        return cls(input=ns.input, output=ns.output, skip_invalid=ns.skip_invalid,
                   summary_json=ns.summary_json, progress_every_s=ns.progress_every_s,
                   max_in_flight=ns.max_in_flight), rest


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    """The runner's flags, for parsing and for --help."""
    g = parser.add_argument_group("Batch files")
    g.add_argument("-i", "--input-file", dest="input", default=None,
                   help="Input: OpenAI Batch request lines (JSONL) for /v1/chat/completions and /v1/completions.")
    g.add_argument("-o", "--output-file", dest="output", default=None,
                   help="Output: one result record per line, appended as each request completes. If it exists, "
                        "the custom_ids it holds are skipped: rerun the same command to finish an interrupted run.")
    g.add_argument("--skip-invalid", action="store_true",
                   help="Write invalid input lines as error records and run the rest (default: refuse the file, "
                        "naming each invalid line).")
    g.add_argument("--summary-json", dest="summary_json", default=None,
                   help="Also write the end-of-run summary to this file, as JSON.")
    g.add_argument("--progress-every", dest="progress_every_s", type=float, default=DEFAULT_PROGRESS_EVERY_S,
                   help="Seconds between progress lines when stderr is not a terminal "
                        f"(default {DEFAULT_PROGRESS_EVERY_S:g}; a terminal gets a progress bar).")
    g.add_argument("--max-in-flight", dest="max_in_flight", type=int, default=DEFAULT_MAX_IN_FLIGHT,
                   help=f"Requests handed to the engine at once (default {DEFAULT_MAX_IN_FLIGHT}); the input "
                        "file is streamed, never held in memory.")
