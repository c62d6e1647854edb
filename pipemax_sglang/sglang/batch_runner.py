"""The batch run on a live engine: start it, stream the pending lines through SGLang's OpenAI
endpoints (batch/feeder.py: at most N at a time, each record appended as it completes), shut
it down, print the summary.

    engine start ─┬─ feeder: read line, ask ──(N in flight: wait for one)── ... ─ drain
                  │          each answer: append record (whole line), tally it
                  └─ ticker: every TICK_S redraw progress (parked now from PipeMax's status files)

Everything runs on the Engine's own asyncio loop, in the main thread (the tokenizer manager's
loop), so records are written by one thread in completion order: no locks, no reordering
buffer; custom_id joins output to input.

Stopping. SIGINT (Ctrl-C) and SIGTERM stop at once: nothing new is sent, requests still in
flight are dropped (a later run sends them again), every completed one is already in the file.
SIGQUIT is SGLang's signal that a child process died; it ends the run the same way, as a
failure. The engine is then shut down (its process tree killed) and the summary printed. A
SIGKILL skips all of that and loses nothing written: the next run's recovery (batch/results.py)
handles the file.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import traceback
from typing import Iterator, NamedTuple

from pipemax_sglang import env
from pipemax_sglang.batch.feeder import Feeder
from pipemax_sglang.batch.options import BatchOptions
from pipemax_sglang.batch.plan import BatchPlan
from pipemax_sglang.batch.progress import TAG, Display, Tally, make_display
from pipemax_sglang.batch.requests import BatchRequest, InvalidLine
from pipemax_sglang.batch.results import Resume, ResultWriter
from pipemax_sglang.batch.signals import Interrupted, raise_on_signals
from pipemax_sglang.batch.summary import BatchSummary, parked_now
from pipemax_sglang.config import PipeMaxConfig
from pipemax_sglang.runtime.status import StatusBoard
from pipemax_sglang.sglang import compat, platform
from pipemax_sglang.sglang.engine import Engine
from pipemax_sglang.sglang.launch_args import server_args_from_cli
from pipemax_sglang.sglang.openai_endpoints import Answer, OpenAIEndpoints
from sglang.srt.utils import kill_process_tree

TICK_S = 0.5           # progress redraw period (a line display prints only every --progress-every)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)


class Outcome(NamedTuple):
    text: str           # the summary's first word(s): "complete", "interrupted by SIGINT", ...
    exit_code: int


class BatchRun:
    """One pass over the pending lines on a started engine: the Feeder (batch/feeder.py) with
    SGLang's endpoints as its answer, stop signals wired to it, and a progress ticker."""

    def __init__(self, engine: Engine, items: Iterator[BatchRequest | InvalidLine], writer: ResultWriter,
                 tally: Tally, display: Display, max_in_flight: int) -> None:
        self.engine = engine
        self.display = display
        self.tally = tally
        self.feeder = Feeder(items, self._answer, writer, tally, max_in_flight)
        self._endpoints: OpenAIEndpoints | None = None

    def run(self) -> Outcome:
        self.engine.loop.run_until_complete(self._main())
        stopped_by = self.feeder.stopped_by
        if stopped_by == signal.SIGQUIT:
            return Outcome("engine failed (an SGLang process exited; its error is above)", 1)
        if stopped_by is not None:
            return Outcome(f"interrupted by {signal.Signals(stopped_by).name}", 128 + stopped_by)
        return Outcome("complete", 0)

    def parked(self) -> int | None:
        return parked_now(StatusBoard.read(self.engine.pipemax_config.status_dir))

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        compat.start_tokenizer_loop(self.engine)   # its signal handlers first, ours over them
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.feeder.stop, sig)
        self._endpoints = OpenAIEndpoints(self.engine)
        ticker = loop.create_task(self._tick())
        self.tally.started = time.monotonic()
        try:
            await self.feeder.run()
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)

    async def _answer(self, item: BatchRequest) -> Answer:
        return await self._endpoints.answer(item.url, item.body)

    async def _tick(self) -> None:
        while True:
            self.display.show(self.tally, self.parked())
            await asyncio.sleep(TICK_S)


def note(message: str) -> None:
    print(f"{TAG}: {message}", file=sys.stderr, flush=True)


def run(options: BatchOptions, config: PipeMaxConfig, sglang_argv: list[str], plan: BatchPlan,
        resume: Resume) -> int:
    """Start the engine, answer the plan's pending lines, shut down, print the summary.
    Returns the exit code: 0 complete, 1 engine failure, 128 + signal when interrupted."""
    platform.check_platform(config)
    server_args = server_args_from_cli(config, sglang_argv)
    # SGLang's children ignore Ctrl-C (the terminal sends it to the whole process group); this
    # process stops them (plugin.py reads the variable in each child)
    os.environ[env.CHILD_SIGINT_VAR] = str(os.getpid())
    note(f"{plan.todo} to answer ({plan.done} already in {options.output}); starting SGLang "
         f"({server_args.model_path}, pp {server_args.pp_size}, tp {server_args.tp_size}) ...")
    t0 = time.monotonic()
    try:
        engine = Engine(server_args=server_args, **config.engine_kwargs())
    except (Interrupted, Exception) as e:
        kill_process_tree(os.getpid(), include_parent=False)   # what had started of it
        if isinstance(e, Interrupted):
            note(f"interrupted by {e.name} while the engine started; nothing was sent")
            return e.exit_code
        note(f"error: the engine did not start: {type(e).__name__}: {e}")
        return 1
    start_s = time.monotonic() - t0
    note(f"engine ready in {start_s:.1f} s")

    tally = Tally(total=plan.todo)
    stages: list[dict] = []
    wall_s = None        # first request to last record; set when the run loop returns
    try:
        display = make_display(sys.stderr, plan.todo, options.progress_every_s)
        with ResultWriter(options.output) as writer:
            batch = BatchRun(engine, plan.pending(resume), writer, tally, display, options.max_in_flight)
            outcome = batch.run()
        raise_on_signals()   # the loop's handlers are gone: shutdown must still be interruptible
        wall_s = tally.elapsed()
        # after a complete run, wait for every stage's final (idle) report
        final = outcome.exit_code == 0 and config.enabled
        stages = engine.pipemax_status(wait_idle_s=10.0 if final else 0.0)["stages"]
        display.close(tally, parked_now(stages))
    except Interrupted as e:
        outcome = Outcome(f"interrupted by {e.name}", e.exit_code)
    except Exception as e:   # the input vanished, the disk is full, ...: what is written stays
        if not isinstance(e, OSError):
            traceback.print_exc()
        outcome = Outcome(f"failed ({type(e).__name__}: {e})", 1)
    finally:
        engine.shutdown()
    if wall_s is None:
        wall_s = tally.elapsed()

    summary = BatchSummary.of_run(
        input=options.input, output=options.output, outcome=outcome.text, plan_requests=plan.requests,
        plan_invalid=plan.invalid, already_done=plan.done, planned=plan.todo, tally=tally, wall_s=wall_s,
        engine_start_s=start_s, stages=stages)
    print(summary.text(), flush=True)
    if options.summary_json:
        summary.write_json(options.summary_json)
    return outcome.exit_code
