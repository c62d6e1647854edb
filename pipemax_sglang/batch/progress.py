"""The tally of a run, and the two ways it is shown while the run goes on.

    terminal (stderr is a TTY)   a tqdm bar: requests done / total, output tok/s, parked now
    anything else (logs, CI)     one plain line every --progress-every seconds, and a last one

The runner adds each record to the Tally as it is written, and calls show() from a ticker
every fraction of a second; the display decides what to draw. Nothing here blocks the run:
show() is a few string operations, and `parked` is read by the caller from PipeMax's status
files (None where PipeMax is off).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, TextIO

TAG = "pipemax-run-batch"


@dataclass
class Tally:
    """The records this run has written. `total` is what it set out to write (plan.todo)."""
    total: int
    ok: int = 0                # answered with status 200
    failed: int = 0            # answered with an error status (the endpoint's 4xx / 5xx)
    invalid: int = 0           # invalid input lines written as error records
    prompt_tokens: int = 0
    output_tokens: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.invalid

    def add_answer(self, status_code: int, body: dict[str, Any]) -> None:
        if status_code == 200:
            self.ok += 1
            usage = body.get("usage") or {}
            self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.output_tokens += int(usage.get("completion_tokens") or 0)
        else:
            self.failed += 1

    def add_invalid(self) -> None:
        self.invalid += 1

    def elapsed(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.started

    def output_rate(self, now: float | None = None) -> float:
        t = self.elapsed(now)
        return self.output_tokens / t if t > 0 else 0.0


class Display(Protocol):
    def show(self, tally: Tally, parked: int | None) -> None: ...
    def close(self, tally: Tally, parked: int | None) -> None: ...


class LineProgress:
    """A plain line every `every_s` seconds of the clock, and one more on close; no "\\r"."""

    def __init__(self, stream: TextIO, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.every_s = every_s
        self.clock = clock
        self._last = clock()

    def show(self, tally: Tally, parked: int | None) -> None:
        now = self.clock()
        if now - self._last >= self.every_s:
            self._last = now
            self._print(tally, parked, now)

    def close(self, tally: Tally, parked: int | None) -> None:
        self._print(tally, parked, self.clock())

    def _print(self, tally: Tally, parked: int | None, now: float) -> None:
        print(progress_line(tally, parked, now), file=self.stream, flush=True)


def progress_line(tally: Tally, parked: int | None, now: float) -> str:
    """`pipemax-run-batch: 120/200 requests (60%), 1 failed, 412 output tok/s, parked 8, 0:31 elapsed, eta 0:21`"""
    pct = 100.0 * tally.done / tally.total if tally.total else 100.0
    elapsed = tally.elapsed(now)
    parts = [f"{TAG}: {tally.done}/{tally.total} requests ({pct:.0f}%)"]
    if tally.failed or tally.invalid:
        parts.append(f"{tally.failed} failed, {tally.invalid} invalid")
    parts.append(f"{tally.output_rate(now):.0f} output tok/s")
    if parked is not None:
        parts.append(f"parked {parked}")
    eta = ""
    if 0 < tally.done < tally.total:
        eta = f", eta {clock_time(elapsed * (tally.total - tally.done) / tally.done)}"
    parts.append(f"{clock_time(elapsed)} elapsed{eta}")
    return ", ".join(parts)


def clock_time(seconds: float) -> str:
    """3725.2 -> '1:02:05'; 31 -> '0:31'."""
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class BarProgress:
    """tqdm's bar on a terminal: requests done of total, with output tok/s and parked now."""

    def __init__(self, stream: TextIO, total: int) -> None:
        from tqdm import tqdm

        # tqdm's default write lock includes a multiprocessing lock, a named semaphore; made in
        # this process after SGLang set the "spawn" start method and started its processes, its
        # cleanup at exit made the resource tracker print a KeyError traceback (seen on every
        # terminal run). One bar in one process needs only a thread lock.
        tqdm.set_lock(threading.RLock())
        self._bar = tqdm(total=total, unit="req", desc=TAG, file=stream, dynamic_ncols=True, smoothing=0.1)

    def show(self, tally: Tally, parked: int | None) -> None:
        self._bar.n = tally.done
        post = {"out tok/s": f"{tally.output_rate():.0f}"}
        if parked is not None:
            post["parked"] = parked
        if tally.failed or tally.invalid:
            post["failed"] = tally.failed + tally.invalid
        self._bar.set_postfix(post, refresh=False)
        self._bar.refresh()

    def close(self, tally: Tally, parked: int | None) -> None:
        self.show(tally, parked)
        self._bar.close()


def make_display(stream: TextIO, total: int, every_s: float) -> Display:
    isatty = getattr(stream, "isatty", None)
    return BarProgress(stream, total) if isatty and isatty() else LineProgress(stream, every_s)
