"""`python -m pipemax_sglang.run_batch -i IN.jsonl -o OUT.jsonl --model-path M [flags]`: an
offline batch, OpenAI Batch files in and out, on pipemax_sglang.Engine in this process.

Takes every `python -m pipemax_sglang.launch_server` flag (SGLang's and --pipemax-*), plus the
runner's own (batch/options.py). Also installed as the `pipemax-run-batch` command.

Before anything slow happens (milliseconds; SGLang not yet imported): the runner's and
PipeMax's flags are checked, the output file of an earlier run is recovered (a torn last line
cut off) and the input is read once: invalid lines are refused with their line numbers (exit 2)
unless --skip-invalid. Only then is SGLang imported, its flags parsed and the engine started.

Exit codes: 0 every line has its record (some may be error answers: the summary counts them);
1 the engine failed; 2 bad flags or a refused file; 128 + signal number when interrupted
(130 Ctrl-C, 143 SIGTERM). Rerun the same command after any interruption: it finishes the rest.

The console: a progress bar (or a line every --progress-every s without a terminal), then the
summary on stdout. SGLang logs at --log-level error unless told otherwise, and Python warnings
(SGLang's and torch's, at import, in every process) are silenced unless --log-level debug.
"""

from __future__ import annotations

import sys

from pipemax_sglang import env
from pipemax_sglang.batch import plan as batch_plan
from pipemax_sglang.batch import results
from pipemax_sglang.batch.options import BatchOptions, add_cli_args
from pipemax_sglang.batch.progress import Tally
from pipemax_sglang.batch.requests import BatchFileError
from pipemax_sglang.batch.signals import Interrupted, raise_on_signals
from pipemax_sglang.batch.summary import BatchSummary
from pipemax_sglang.config import ConfigError, PipeMaxConfig
from pipemax_sglang.config import add_cli_args as add_pipemax_cli_args
from pipemax_sglang.sglang.platform import PlatformError, argv_values

PROG = "pipemax-run-batch"
DEFAULT_LOG_LEVEL = "error"


def _print_help() -> None:
    import argparse

    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].replace("\n", " "))
    add_cli_args(parser)
    ServerArgs.add_cli_args(parser)
    add_pipemax_cli_args(parser)
    parser.print_help()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from pipemax_sglang.sglang.version import SGLangVersionError, check_sglang_version

    raise_on_signals()
    try:
        check_sglang_version()
        if "-h" in argv or "--help" in argv:
            _print_help()
            return 0
        options, rest = BatchOptions.from_cli(argv)
        config, sglang_argv = PipeMaxConfig.from_cli(rest)
        log_level = argv_values(sglang_argv).get("log_level")
        if log_level is None:
            sglang_argv += ["--log-level", DEFAULT_LOG_LEVEL]
        if log_level != "debug":
            env.silence_python_warnings()   # before the first sglang / torch import
        batch_plan.check_paths(options.input, options.output)
        resume = results.recover(options.output)
        if resume.torn_bytes:
            print(f"{PROG}: dropped a torn last line ({resume.torn_bytes} bytes) from {options.output}",
                  file=sys.stderr)
        plan = batch_plan.scan(options.input, resume, options.skip_invalid)
        if plan.refused:
            print(f"{PROG}: error: {plan.refusal()}", file=sys.stderr)
            return 2
        if plan.foreign:
            print(f"{PROG}: warning: {options.output} holds {plan.foreign} records whose custom_id is not in "
                  f"{options.input}: is it this input's output file?", file=sys.stderr)
        if plan.todo == 0:
            return _nothing_to_do(options, plan)
        from pipemax_sglang.sglang import batch_runner

        # from here on, run() reports its own interruptions and failures in its summary
        return batch_runner.run(options, config, sglang_argv, plan, resume)
    except (ConfigError, BatchFileError, SGLangVersionError, PlatformError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:   # before the engine started (reading files, importing SGLang)
        print(f"{PROG}: interrupted by {e.name} before the engine started; nothing was sent", file=sys.stderr)
        return e.exit_code


def _nothing_to_do(options: BatchOptions, plan: batch_plan.BatchPlan) -> int:
    summary = BatchSummary.of_run(
        input=options.input, output=options.output, outcome="complete (nothing left to do)",
        plan_requests=plan.requests, plan_invalid=plan.invalid, already_done=plan.done, planned=0,
        tally=Tally(total=0), wall_s=0.0, engine_start_s=0.0, stages=[])
    print(summary.text(), flush=True)
    if options.summary_json:
        summary.write_json(options.summary_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
