"""Progress without a terminal: a line when due by the clock (a fake one here), one at the end."""

from __future__ import annotations

import io

from pipemax_sglang.batch.progress import BarProgress, LineProgress, Tally, clock_time, make_display, progress_line


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_tally_counts_answers_tokens_and_failures():
    t = Tally(total=5, started=0.0)
    t.add_answer(200, {"usage": {"prompt_tokens": 10, "completion_tokens": 4}})
    t.add_answer(200, {"usage": {"prompt_tokens": 6, "completion_tokens": 2}})
    t.add_answer(400, {"object": "error"})
    t.add_invalid()
    assert (t.ok, t.failed, t.invalid, t.done) == (2, 1, 1, 4)
    assert (t.prompt_tokens, t.output_tokens) == (16, 6)
    assert t.output_rate(now=2.0) == 3.0


def test_line_progress_prints_when_due_and_once_more_at_the_end():
    clock, out = FakeClock(), io.StringIO()
    tally = Tally(total=200, started=clock.t)
    p = LineProgress(out, every_s=10.0, clock=clock)
    clock.t += 4
    tally.ok = 20
    p.show(tally, parked=3)
    assert out.getvalue() == ""                       # not due yet
    clock.t += 6
    p.show(tally, parked=3)
    clock.t += 1
    p.show(tally, parked=3)                           # printed a second ago: not again
    tally.ok = 200
    p.close(tally, parked=0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert lines[0].startswith("pipemax-run-batch: 20/200 requests (10%)")
    assert "parked 3" in lines[0] and "0:10 elapsed, eta 1:30" in lines[0]
    assert lines[1].startswith("pipemax-run-batch: 200/200 requests (100%)") and "eta" not in lines[1]


def test_progress_line_names_failures_and_leaves_out_parked_without_pipemax():
    tally = Tally(total=10, started=0.0, ok=4, failed=1, output_tokens=50)
    line = progress_line(tally, parked=None, now=5.0)
    assert "5/10 requests (50%)" in line and "1 failed, 0 invalid" in line
    assert "10 output tok/s" in line and "parked" not in line


def test_clock_time():
    assert (clock_time(31), clock_time(75.4), clock_time(3725)) == ("0:31", "1:15", "1:02:05")


def test_a_pipe_gets_lines_not_a_bar():
    assert isinstance(make_display(io.StringIO(), 10, 5.0), LineProgress)


def test_the_terminal_bar_draws_done_of_total_with_rate_and_parked_on_a_thread_lock():
    from tqdm import tqdm
    from tqdm.std import TqdmDefaultWriteLock

    out = io.StringIO()
    bar = BarProgress(out, total=3)
    # no multiprocessing semaphore for one bar: made beside SGLang's spawned processes, its
    # cleanup printed a resource-tracker traceback at exit
    assert not isinstance(tqdm.get_lock(), TqdmDefaultWriteLock)
    tally = Tally(total=3, started=0.0, ok=3, output_tokens=30)
    bar.close(tally, parked=2)
    assert "3/3" in out.getvalue() and "parked=2" in out.getvalue()
