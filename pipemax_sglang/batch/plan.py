"""What a run has left to do: the input file measured against what the output already holds.

scan() reads the input once, before any engine starts, and counts; pending() streams the same
items again during the run, minus those already answered. Both skip exactly the same things
(the same predicate, `_done`), so the progress bar's total is what the run will write.

    line kind        in OUT already?     scan counts it as   pending() yields it
    valid request    custom_id answered  done                no
    valid request    no                  todo_requests       yes
    invalid line     line recorded       done                no
    invalid line     no                  open_invalid: refused, or todo_invalid with --skip-invalid
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

from pipemax_sglang.batch.requests import BatchFileError, BatchRequest, InvalidLine, read_requests
from pipemax_sglang.batch.results import Resume

EXAMPLES = 20   # invalid lines quoted in a refusal; the rest are counted


@dataclass(frozen=True)
class BatchPlan:
    input: str
    requests: int               # valid request lines in the input
    invalid: int                # invalid lines in the input
    open_invalid: int           # of those, the ones with no record yet (refused unless skip_invalid)
    examples: tuple[InvalidLine, ...]   # the first EXAMPLES open ones, for the refusal message
    done: int                   # lines (valid or invalid) whose record is already in the output
    todo_requests: int          # requests this run sends to the engine
    todo_invalid: int           # error records this run writes (0 without skip_invalid)
    foreign: int                # records in the output for custom_ids this input does not hold
    skip_invalid: bool

    @property
    def todo(self) -> int:
        """Records this run will write."""
        return self.todo_requests + self.todo_invalid

    @property
    def refused(self) -> bool:
        return self.open_invalid > 0 and not self.skip_invalid

    def refusal(self) -> str:
        """The message for a refused input: every example with its line number, then a count."""
        n = self.open_invalid
        lines = [f"{self.input}: {n} invalid line{'s' if n != 1 else ''} "
                 "(fix them, or pass --skip-invalid to write them as error records and run the rest):"]
        lines += [f"  line {x.line}: {x.reason}" for x in self.examples]
        if n > len(self.examples):
            lines.append(f"  ... and {n - len(self.examples)} more")
        return "\n".join(lines)

    def pending(self, resume: Resume) -> Iterator[BatchRequest | InvalidLine]:
        """The run's stream: the input's items that have no record yet, in file order."""
        for item in read_requests(self.input):
            if _done(item, resume):
                continue
            if isinstance(item, InvalidLine) and not self.skip_invalid:
                continue
            yield item


def scan(input_path: str | os.PathLike, resume: Resume, skip_invalid: bool) -> BatchPlan:
    requests = invalid = open_invalid = done = todo_requests = 0
    examples: list[InvalidLine] = []
    answered_here = 0
    for item in read_requests(input_path):
        finished = _done(item, resume)
        done += finished
        if isinstance(item, BatchRequest):
            requests += 1
            answered_here += finished
            todo_requests += not finished
        else:
            invalid += 1
            if not finished:
                open_invalid += 1
                if len(examples) < EXAMPLES:
                    examples.append(item)
    return BatchPlan(
        input=os.fspath(input_path), requests=requests, invalid=invalid, open_invalid=open_invalid,
        examples=tuple(examples), done=done, todo_requests=todo_requests,
        todo_invalid=open_invalid if skip_invalid else 0,
        foreign=len(resume.done_ids) - answered_here, skip_invalid=skip_invalid,
    )


def check_paths(input_path: str | os.PathLike, output_path: str | os.PathLike) -> None:
    """The output must be a different file from the input, in a directory that exists."""
    if not os.path.isfile(input_path):
        raise BatchFileError(f"input file {os.fspath(input_path)} does not exist")
    if os.path.exists(output_path) and os.path.samefile(input_path, output_path):
        raise BatchFileError("the output file is the input file: give -o another path")
    parent = os.path.dirname(os.path.abspath(output_path))
    if not os.path.isdir(parent):
        raise BatchFileError(f"the output file's directory {parent} does not exist")


def _done(item: BatchRequest | InvalidLine, resume: Resume) -> bool:
    if isinstance(item, BatchRequest):
        return item.custom_id in resume.done_ids
    return item.line in resume.done_lines
