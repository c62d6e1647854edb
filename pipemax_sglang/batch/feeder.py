"""The run's loop: pending lines go to an async `answer` function, at most N at a time, and
each record is appended the moment its answer arrives.

    items ──> [invalid line: its error record, at once]
          ──> [request: wait while N are out] ──> answer(request) ··· (N at once) ··· record

Pure asyncio: `answer` is SGLang's OpenAI endpoints in the runner (sglang/batch_runner.py) and
a fake in tests, so the bound and the stop rules are tested without an engine.

Invariants:
- at most max_in_flight answers are outstanding; the input is pulled one line at a time, only
  when there is room, so memory holds N requests, never the file;
- records are appended by this one coroutine, in completion order, each once;
- stop() ends the run at its next await: requests not yet answered are cancelled (a later run
  sends them again); answers that had already arrived are still written.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Iterable, Protocol

from pipemax_sglang.batch.progress import Tally
from pipemax_sglang.batch.requests import BatchRequest, InvalidLine
from pipemax_sglang.batch.results import answered_record, invalid_record

Answer = tuple[int, dict[str, Any]]          # (status code, JSON body)
AnswerFn = Callable[[BatchRequest], Awaitable[Answer]]
YIELD_EVERY = 256   # lines fed between yields to the loop when none has to wait (invalid lines)


class Writer(Protocol):
    def append(self, record: dict[str, Any]) -> None: ...


class Feeder:
    def __init__(self, items: Iterable[BatchRequest | InvalidLine], answer: AnswerFn, writer: Writer,
                 tally: Tally, max_in_flight: int) -> None:
        self.items = items
        self.answer = answer
        self.writer = writer
        self.tally = tally
        self.max_in_flight = max_in_flight
        self.stopped_by: Any = None          # what stop() was given (a signal number in the runner)
        self._task: asyncio.Task | None = None

    def stop(self, reason: Any) -> None:
        """End the run (safe to call from a signal handler on the loop; the first reason wins)."""
        if self.stopped_by is None:
            self.stopped_by = reason
            if self._task is not None:
                self._task.cancel()

    async def run(self) -> None:
        """Until every item has its record, or stop(); returns normally either way."""
        self._task = asyncio.current_task()
        pending: set[asyncio.Task] = set()
        try:
            if self.stopped_by is None:
                await self._feed(pending)
        except asyncio.CancelledError:
            if self.stopped_by is None:
                raise
        finally:
            for task in pending:
                if task.done() and not task.cancelled() and task.exception() is None:
                    self._record(*task.result())   # arrived while we were stopping: keep it
                else:
                    task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self._task = None

    async def _feed(self, pending: set[asyncio.Task]) -> None:
        fed = 0
        for item in self.items:
            if isinstance(item, InvalidLine):
                self.writer.append(invalid_record(item))
                self.tally.add_invalid()
            else:
                while len(pending) >= self.max_in_flight:
                    await self._collect(pending)
                pending.add(asyncio.ensure_future(self._ask(item)))
            fed += 1
            if fed % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        while pending:
            await self._collect(pending)

    async def _collect(self, pending: set[asyncio.Task]) -> None:
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            pending.discard(task)
            self._record(*task.result())

    async def _ask(self, item: BatchRequest) -> tuple[BatchRequest, Answer]:
        return item, await self.answer(item)

    def _record(self, item: BatchRequest, answer: Answer) -> None:
        status, body = answer
        self.writer.append(answered_record(item.custom_id, status, body))
        self.tally.add_answer(status, body)
