"""The run's loop, with a fake engine: the input is pulled only when there is room, records
land in completion order, and a stop keeps every answer that had arrived."""

from __future__ import annotations

import asyncio

from pipemax_sglang.batch.feeder import Feeder
from pipemax_sglang.batch.progress import Tally
from pipemax_sglang.batch.requests import BatchRequest, InvalidLine

OK = {"usage": {"prompt_tokens": 2, "completion_tokens": 3}}


def _req(i: int) -> BatchRequest:
    return BatchRequest(i + 1, f"q{i}", "/v1/completions", {"prompt": "x"})


class FakeEngine:
    """Answers when the test releases a request; records how many were outstanding at most."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.out = 0
        self.peak = 0
        self.asked: list[str] = []

    async def answer(self, item: BatchRequest):
        self.asked.append(item.custom_id)
        self.out += 1
        self.peak = max(self.peak, self.out)
        gate = self.gates.setdefault(item.custom_id, asyncio.Event())
        try:
            await gate.wait()
        finally:
            self.out -= 1
        return (400, {"object": "error"}) if item.custom_id == "q3" else (200, OK)

    def release(self, *ids: str) -> None:
        for cid in ids:
            self.gates.setdefault(cid, asyncio.Event()).set()


class Pulled:
    """The input as a generator that counts how far it has been read."""

    def __init__(self, items) -> None:
        self.items, self.read = list(items), 0

    def __iter__(self):
        for item in self.items:
            self.read += 1
            yield item


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_the_bound_holds_records_follow_completion_and_invalid_lines_go_straight_out():
    async def story():
        engine, written = FakeEngine(), []
        items = Pulled([_req(0), _req(1), InvalidLine(3, None, "not valid JSON"), _req(2), _req(3), _req(4)])
        tally = Tally(total=6)

        class W:
            append = staticmethod(written.append)

        feeder = Feeder(items, engine.answer, W(), tally, max_in_flight=2)
        run = asyncio.ensure_future(feeder.run())
        await _settle()
        # two asked, the invalid line written at once, the feeder waits with line 4 in hand
        assert engine.asked == ["q0", "q1"] and items.read == 4
        assert [r["error"]["line"] for r in written] == [3]
        engine.release("q1")                  # q1 answers first: its record comes first
        await _settle()
        assert [r["custom_id"] for r in written[1:]] == ["q1"] and engine.asked == ["q0", "q1", "q2"]
        engine.release("q0")
        await _settle()
        assert [r["custom_id"] for r in written[1:]] == ["q1", "q0"]
        engine.release("q2", "q3", "q4")
        await run
        assert engine.peak == 2
        assert sorted(r["custom_id"] for r in written[1:]) == ["q0", "q1", "q2", "q3", "q4"]
        assert (tally.ok, tally.failed, tally.invalid, tally.done) == (4, 1, 1, 6)
        assert tally.output_tokens == 12

    asyncio.run(story())


def test_a_stop_cancels_what_is_out_and_keeps_what_has_arrived():
    async def story():
        engine, written = FakeEngine(), []

        class W:
            append = staticmethod(written.append)

        items = Pulled([_req(i) for i in range(10)])
        feeder = Feeder(items, engine.answer, W(), Tally(total=10), max_in_flight=3)
        run = asyncio.ensure_future(feeder.run())
        await _settle()
        engine.release("q0")
        await _settle()
        engine.release("q2")                  # q2's answer arrives ...
        feeder.stop("SIGTERM")                # ... in the same turn as the stop
        await run
        assert feeder.stopped_by == "SIGTERM"
        assert [r["custom_id"] for r in written] == ["q0", "q2"]
        assert engine.out == 0                # every other outstanding answer was cancelled
        assert items.read < 10                # the rest of the input was never read
        feeder.stop("SIGINT")                 # the first reason stays
        assert feeder.stopped_by == "SIGTERM"

    asyncio.run(story())
