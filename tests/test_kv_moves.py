"""The bookkeeping of kv_moves.py that needs no engine: the index spans a micro-batch's copy is
built from, and the rule that what a park holds goes back by turn number (the same on every
stage), never before the copy that reads it has ended.
(The moves on the real stack: tests/integration/test_pipemax_parking.py.)"""

from __future__ import annotations

import pytest
import torch

from pipemax_sglang.sglang import kv_moves
from pipemax_sglang.sglang.kv_moves import DeferredFrees, HostCopy, Span, _flat_spans, whole


def test_flat_spans_list_every_position_of_every_row_in_order():
    rows, starts, ends = [7, 2, 5], [0, 3, 4], [3, 3, 6]     # the middle row copies nothing
    flat = _flat_spans(rows, starts, ends, width=10)
    assert flat.tolist() == [70, 71, 72, 54, 55]


@pytest.mark.parametrize("n", [1, 3, kv_moves._SLICE_ROWS + 1, 40])
def test_a_gather_of_spans_equals_per_row_slices_by_either_path(n):
    # up to _SLICE_ROWS rows the gather slices row by row, above it one flat index_select
    table = torch.arange(64 * 50, dtype=torch.int32).reshape(64, 50)
    rows = [(7 * i + 3) % 64 for i in range(n)]
    starts = [(5 * i) % 30 for i in range(n)]
    ends = [s + (i % 4) * 5 for i, s in enumerate(starts)]   # every fourth row: nothing
    expected = torch.cat([table[r, s:e] for r, s, e in zip(rows, starts, ends)]).to(torch.int64)
    got = kv_moves.gather_spans(table, rows, starts, ends)
    assert got.dtype == torch.int64 and torch.equal(got, expected)


@pytest.mark.parametrize("n", [1, 3, kv_moves._SLICE_ROWS + 1, 40])
def test_one_gather_of_several_ranges_of_the_same_rows_equals_a_gather_of_each(n):
    """A park reads its copy's ranges [known, L) and its frees' [P, L) of the same rows in one
    gather: each comes back whole and separate, by either path."""
    table = torch.arange(64 * 50, dtype=torch.int32).reshape(64, 50)
    rows = [(7 * i + 3) % 64 for i in range(n)]
    lens = [20 + (3 * i) % 25 for i in range(n)]
    known = [(5 * i) % 21 for i in range(n)]
    prefix = [0 if i % 3 else min(L, 16) for i, L in enumerate(lens)]
    got = kv_moves.gather_spans_each(table, rows, [(known, lens), (prefix, lens), (lens, lens)])
    assert len(got) == 3
    for part, starts in zip(got, (known, prefix, lens)):
        want = torch.cat([table[r, s:e] for r, s, e in zip(rows, starts, lens)]).to(torch.int64)
        assert part.dtype == torch.int64 and torch.equal(part, want)
    assert len(got[2]) == 0


@pytest.mark.parametrize("n", [1, 3, kv_moves._SLICE_ROWS + 1, 40])
def test_a_gather_of_spans_concatenates_them_in_order_by_every_path(n):
    """Spans of a few bases (a micro-batch's parks and loads of a few turns), some empty, some
    continuing the one before: one view, a few slices, or one index_select, the same values."""
    bases = [torch.arange(100 * b, 100 * b + 60) for b in range(3)]
    spans = []
    for i in range(n):
        b = bases[(i // 2) % 3]
        start = (7 * i) % 40
        spans.append(Span(b, start, start + (i % 5)))            # every fifth: nothing
        if i % 3 == 0:
            spans.append(Span(b, start + (i % 5), start + (i % 5) + 2))    # continues it
    expected = [int(sp.base[j]) for sp in spans for j in range(sp.start, sp.end)]
    assert kv_moves.gather(spans).tolist() == expected


def test_host_copy_past_a_prefix_lists_the_rest_of_its_spans():
    ring = HostCopy([whole(torch.arange(4)), Span(torch.arange(10, 20), 2, 5), whole(torch.arange(30, 32))], 9)
    assert ring.indices().tolist() == [0, 1, 2, 3, 12, 13, 14, 30, 31]
    assert kv_moves.gather(ring.past(5)).tolist() == [13, 14, 30, 31]
    assert kv_moves.gather(ring.past(4)).tolist() == [12, 13, 14, 30, 31]
    assert ring.past(9) == []


def test_spans_of_nothing_are_empty():
    assert len(_flat_spans([1, 2], [4, 0], [4, 0], width=8)) == 0
    table = torch.zeros((4, 8), dtype=torch.int32)
    assert len(kv_moves.gather_spans(table, [1, 2], [4, 0], [4, 0])) == 0
    many = list(range(kv_moves._SLICE_ROWS + 1))
    assert len(kv_moves.gather_spans(torch.zeros((16, 8)), many, [3] * len(many), [3] * len(many))) == 0


class FakeRowPool:
    """SGLang's ReqToTokenPool's table and write (memory_pool.py: req_to_token[indices] = v)."""

    def __init__(self):
        self.req_to_token = torch.full((32, 40), -1, dtype=torch.int32)

    def write(self, indices, values):
        self.req_to_token[indices] = values


@pytest.mark.parametrize("n", [2, kv_moves._SLICE_ROWS + 3])
def test_rejoined_rows_map_their_positions_to_their_new_slots_and_touch_nothing_else(n):
    pool = FakeRowPool()
    rows = [(5 * i + 1) % 32 for i in range(n)]
    lens = [3 + (7 * i) % 30 for i in range(n)]
    slots = [torch.arange(1000 * (i + 1), 1000 * (i + 1) + n_, dtype=torch.int64) for i, n_ in enumerate(lens)]
    kv_moves.write_rows(pool, rows, torch.cat(slots), lens)
    expected = torch.full((32, 40), -1, dtype=torch.int32)
    for r, s, n_ in zip(rows, slots, lens):
        expected[r, :n_] = s.to(torch.int32)
    assert torch.equal(pool.req_to_token, expected)


class FakeCopy:
    def __init__(self):
        self.finished = False
        self.waited = False

    def query(self):
        return self.finished

    def synchronize(self):
        self.waited = True
        self.finished = True
        self.syncs = getattr(self, "syncs", 0) + 1


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
    assert frees.due(4) and not frees.due(2)
    assert frees.reap(sched, upto_turn=4)[0] == 1
    assert sched.freed == [9] and sched.unlocked == []
    copy.finished = False                             # its turn has come: wait for the copy
    assert frees.reap(sched, upto_turn=5)[0] == 3
    assert copy.waited
    assert sorted(sched.freed) == [3, 4, 5, 9] and sched.unlocked == ["prompt-lock"]
    assert frees.items == []


def test_a_parks_entries_wait_for_their_one_copy_once():
    sched, frees, copy = FakeSched(), DeferredFrees(), FakeCopy()
    frees.add(2, copy, torch.tensor([1, 2, 3]))
    for lock in ("a", "b", "c"):                      # each parked request's prompt lock
        frees.add(2, copy, torch.empty(0, dtype=torch.int64), lock)
    freed, waited = frees.reap(sched)
    assert copy.syncs == 1 and freed == 3 and waited >= 0.0
    assert sched.unlocked == ["a", "b", "c"] and frees.items == []


def test_a_copy_that_failed_leaves_its_entries_to_reap():
    class Failed(FakeCopy):
        def synchronize(self):
            raise RuntimeError("copier failed")

    sched, frees = FakeSched(), DeferredFrees()
    frees.add(1, Failed(), torch.tensor([4, 5]), "lock")
    with pytest.raises(RuntimeError):
        frees.reap(sched)
    assert len(frees.items) == 1 and sched.freed == [] and sched.unlocked == []


def test_a_reap_of_everything_finishes_every_copy_first():
    sched, frees, copy = FakeSched(), DeferredFrees(), FakeCopy()
    frees.add(7, copy, torch.tensor([1, 2]), "lock")
    assert frees.reap(sched)[0] == 2
    assert copy.waited and sched.freed == [1, 2] and sched.unlocked == ["lock"]


class FakeKV:
    def __init__(self, committed):
        self.kv_committed_len = committed


class FakeReq:
    def __init__(self, committed, ring=None):
        self.rid = "r"
        self.kv = FakeKV(committed)
        if ring is not None:
            self.pipemax_ring = ring


def test_a_second_park_copies_only_what_was_decoded_since_the_first():
    assert kv_moves.new_host_tokens(FakeReq(70)) == 70           # never parked: all of it
    ring = HostCopy([whole(torch.arange(64)), Span(torch.arange(60, 70), 4, 10)], 70)
    assert kv_moves.new_host_tokens(FakeReq(73, ring)) == 3
    assert torch.equal(ring.indices(), torch.arange(70))


def test_a_load_copies_each_host_copy_in_token_order_and_leaves_it_one_chunk(monkeypatch):
    """load_many: one copy of every request's host slots past its reused prefix, in order, to
    its new device slots; a request's chunks (one per park) become one, the same slots."""
    from pipemax_sglang.sglang import compat
    from pipemax_sglang.sglang.kv_moves import ParkedReq, Prefetch

    copies = []
    monkeypatch.setattr(compat, "copy_to_device",
                        lambda sched, h, d: copies.append((h.clone(), d.clone())) or "the-copy")
    a = FakeReq(6, HostCopy([whole(torch.arange(0, 4)), Span(torch.arange(8, 14), 2, 4)], 6))
    b = FakeReq(3, HostCopy([whole(torch.arange(20, 22)), whole(torch.tensor([22]))], 3))
    pa = Prefetch(ParkedReq(a, 6, 0, 0), 1, whole(torch.arange(100, 106)))
    pb = Prefetch(ParkedReq(b, 3, 0, 1), 1, whole(torch.tensor([200, 201])),   # its first token reused
                  prefix=torch.tensor([500]))
    assert kv_moves.load_many([pa, pb], sched=None) == "the-copy"
    (host, dev), = copies
    assert pa.load_tokens == 6 and pb.load_tokens == 2
    assert host.tolist() == [0, 1, 2, 3, 10, 11, 21, 22]
    assert dev.tolist() == [100, 101, 102, 103, 104, 105, 200, 201]
    assert pa.load == pb.load == "the-copy"
    assert len(a.pipemax_ring.chunks) == 1 and a.pipemax_ring.indices().tolist() == [0, 1, 2, 3, 10, 11]
    assert b.pipemax_ring.indices().tolist() == [20, 21, 22]        # its prefix's slot stays
    assert kv_moves.load_many([pa, pb], sched=None) is None        # issued once


def test_the_park_copies_a_load_would_read_before_they_finish_are_named_once_each():
    """The turn order puts every park's copy before a load of what it wrote (kv_moves'
    invariants); before a load the stage asks which park copies are still writing what it
    reads (each once, however many requests it wrote for), waits for those, and counts them.
    A host copy's writer is asked once: a later load of it names nothing."""
    from pipemax_sglang.sglang.kv_moves import ParkedReq, Prefetch

    late_park, done_park = FakeCopy(), FakeCopy()
    done_park.finished = True
    a = FakeReq(4, HostCopy([whole(torch.arange(0, 4))], 4, writer=late_park))
    b = FakeReq(2, HostCopy([whole(torch.arange(10, 12))], 2, writer=late_park))
    c = FakeReq(3, HostCopy([whole(torch.arange(20, 23))], 3, writer=done_park))
    d = FakeReq(2, HostCopy([whole(torch.arange(30, 32))], 2))         # parked with nothing new
    pfs = [Prefetch(ParkedReq(r, r.kv.kv_committed_len, 0, i), 1, whole(torch.arange(100 * i, 100 * i + 4)))
           for i, r in enumerate((a, b, c, d))]
    # prefetches load_many would not load (issued already, or nothing to load) keep theirs
    issued = FakeReq(2, HostCopy([whole(torch.arange(40, 42))], 2, writer=FakeCopy()))
    empty = FakeReq(2, HostCopy([whole(torch.arange(50, 52))], 2, writer=FakeCopy()))
    skipped = [Prefetch(ParkedReq(issued, 2, 0, 8), 1, whole(torch.arange(800, 802)), load="a-load"),
               Prefetch(ParkedReq(empty, 2, 0, 9), 1)]
    assert kv_moves.unwritten(pfs + skipped) == [late_park]
    assert not late_park.waited                          # named, not waited for: the caller does
    assert all(r.pipemax_ring.writer is None for r in (a, b, c, d))
    assert issued.pipemax_ring.writer is not None and empty.pipemax_ring.writer is not None
    assert kv_moves.unwritten(pfs) == []


def test_a_park_leaves_its_copy_as_the_writer_of_the_host_slots_it_fills(monkeypatch):
    """park_many: each parked request's host copy names the copy that fills its new slots."""
    from pipemax_sglang.sglang import compat

    class Req(FakeReq):
        def __init__(self, committed, row, ring=None):
            super().__init__(committed, ring)
            self.kv.kv_allocated_len = committed
            self.kv.req_pool_idx = row
            self.kv.cache_protected_len = 0
            self.lock = None

    class Sched:
        class req_to_token_pool:
            req_to_token = torch.arange(4 * 16, dtype=torch.int32).view(4, 16)

    fresh, reparked = Req(5, 1), Req(3, 2, HostCopy([whole(torch.arange(40, 43))], 3))
    copies = []
    monkeypatch.setattr(compat, "host_alloc", lambda sched, n: torch.arange(200, 200 + n))
    monkeypatch.setattr(compat, "copy_to_host", lambda sched, h, d: copies.append((h, d)) or "the-park-copy")
    out = kv_moves.park_many([fresh, reparked], Sched, DeferredFrees(), turn=3)
    assert out == [(5, 5, 0), (3, 0, 0)] and len(copies) == 1
    assert fresh.pipemax_ring.writer == "the-park-copy"
    assert reparked.pipemax_ring.writer is None          # nothing of it was copied
