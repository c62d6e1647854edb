"""OverlapMeter (runtime/overlap.py): load time that ran beside a forward."""

from pipemax_sglang.runtime.overlap import OverlapMeter


def test_a_load_during_a_forward_counts_and_one_between_forwards_does_not():
    m = OverlapMeter()
    m.forward(0.0, 1.0)
    m.forward(2.0, 3.0)
    m.loads([(0.5, 1.5)])            # half beside the first forward
    m.loads([(1.2, 1.8)])            # in the gap: a turn that waited for it
    assert m.load_s == 1.6 and abs(m.overlap_s - 0.5) < 1e-12
    m.loads([(1.9, 3.1)])            # spans the second forward
    assert abs(m.overlap_s - 1.5) < 1e-12
    assert abs(m.fraction - 1.5 / 2.8) < 1e-12


def test_no_loads_no_fraction():
    assert OverlapMeter().fraction is None
