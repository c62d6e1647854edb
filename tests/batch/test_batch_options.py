"""The runner's own flags: taken out of argv, the rest left for PipeMax and SGLang."""

from __future__ import annotations

import argparse

import pytest

from pipemax_sglang.batch.options import BatchOptions, add_cli_args
from pipemax_sglang.config import ConfigError


def test_runner_flags_are_taken_and_the_rest_left_in_order():
    opts, rest = BatchOptions.from_cli([
        "-i", "in.jsonl", "--model-path", "m", "--output-file=out.jsonl", "--pp-size", "2", "--skip-invalid",
        "--pipemax-selector", "fcfs", "--summary-json", "s.json", "--progress-every", "2.5", "--max-in-flight", "64",
    ])
    assert opts == BatchOptions(input="in.jsonl", output="out.jsonl", skip_invalid=True, summary_json="s.json",
                                progress_every_s=2.5, max_in_flight=64)
    assert rest == ["--model-path", "m", "--pp-size", "2", "--pipemax-selector", "fcfs"]


@pytest.mark.parametrize("argv, needle", [
    (["-o", "out.jsonl"], "required: -i/--input-file"),
    (["-i", "in.jsonl"], "required: -o/--output-file"),
    (["-i", "a", "-o", "b", "--max-in-flight", "0"], "--max-in-flight must be at least 1"),
    (["-i", "a", "-o", "b", "--progress-every", "0"], "--progress-every must be a positive"),
    (["-i", "a", "-o", "b", "--max-in-flight", "many"], "invalid int value"),
])
def test_bad_runner_flags_are_one_line(argv, needle):
    with pytest.raises(ConfigError, match=needle):
        BatchOptions.from_cli(argv)


def test_no_runner_flag_is_also_an_sglang_flag():
    from sglang.srt.server_args import ServerArgs

    def flags(add) -> set[str]:
        parser = argparse.ArgumentParser(add_help=False)
        add(parser)
        return {s for a in parser._actions for s in a.option_strings}

    assert flags(add_cli_args) & flags(ServerArgs.add_cli_args) == set()
