"""The bookkeeping of kv_moves.py that needs no engine: the index spans a micro-batch's copy is
built from, and the rule that what a park holds goes back by turn number (the same on every
stage), never before the copy that reads it has ended.
(The moves on the real stack: tests/integration/test_pipemax_parking.py.)"""

from __future__ import annotations

import torch

from pipemax_sglang.sglang import kv_moves
from pipemax_sglang.sglang.kv_moves import DeferredFrees, HostCopy, _spans


def test_spans_list_every_position_of_every_row_in_order():
    rows, starts, ends = [7, 2, 5], [0, 3, 4], [3, 3, 6]     # the middle row copies nothing
    r, p = _spans(rows, starts, ends)
    assert list(zip(r.tolist(), p.tolist())) == [(7, 0), (7, 1), (7, 2), (5, 4), (5, 5)]


def test_spans_gather_what_a_per_row_slice_gathers():
    table = torch.arange(6 * 50).reshape(6, 50)
    rows, starts, ends = [4, 0, 3, 1], [10, 0, 49, 5], [20, 7, 50, 5]
    expected = torch.cat([table[r, s:e] for r, s, e in zip(rows, starts, ends)])
    assert torch.equal(table[_spans(rows, starts, ends)], expected)


def test_spans_of_nothing_are_empty():
    r, p = _spans([1, 2], [4, 0], [4, 0])
    assert len(r) == 0 and len(p) == 0


class FakeCopy:
    def __init__(self):
        self.finished = False
        self.waited = False

    def query(self):
        return self.finished

    def synchronize(self):
        self.waited = True
        self.finished = True


class FakeSched:
    """An allocator and a tree that record what they are given back."""

    def __init__(self):
        self.freed: list[int] = []
        self.unlocked: list[str] = []
        self.token_to_kv_pool_allocator = self
        self.tree_cache = self

    def free(self, idx):
        self.freed += idx.tolist()

    def unlock(self, lock):
        self.unlocked.append(lock)


def test_what_a_park_holds_goes_back_by_turn_after_its_copy():
    sched, frees, copy = FakeSched(), DeferredFrees(), FakeCopy()
    frees.add(5, copy, torch.tensor([3, 4, 5]))
    frees.add(5, copy, torch.empty(0, dtype=torch.int64), "prompt-lock")
    frees.add(3, None, torch.tensor([9]))             # no copy reads it
    copy.finished = True                              # done, but its turn has not come
    assert frees.reap(sched, upto_turn=4) == 1
    assert sched.freed == [9] and sched.unlocked == []
    copy.finished = False                             # its turn has come: wait for the copy
    assert frees.reap(sched, upto_turn=5) == 3
    assert copy.waited
    assert sorted(sched.freed) == [3, 4, 5, 9] and sched.unlocked == ["prompt-lock"]
    assert frees.items == []


def test_a_reap_of_everything_finishes_every_copy_first():
    sched, frees, copy = FakeSched(), DeferredFrees(), FakeCopy()
    frees.add(7, copy, torch.tensor([1, 2]), "lock")
    assert frees.reap(sched) == 2
    assert copy.waited and sched.freed == [1, 2] and sched.unlocked == ["lock"]


class FakeKV:
    def __init__(self, committed):
        self.kv_committed_len = committed


class FakeReq:
    def __init__(self, committed, ring=None):
        self.kv = FakeKV(committed)
        if ring is not None:
            self.pipemax_ring = ring


def test_a_second_park_copies_only_what_was_decoded_since_the_first():
    assert kv_moves.new_host_tokens(FakeReq(70)) == 70           # never parked: all of it
    ring = HostCopy([torch.arange(64), torch.arange(64, 70)], 70)
    assert kv_moves.new_host_tokens(FakeReq(73, ring)) == 3
    assert torch.equal(ring.indices(), torch.arange(70))
