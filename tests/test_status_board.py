"""StatusBoard: each scheduler process's report, written whole and read back in stage order."""

from pipemax_sglang.runtime.status import StatusBoard


def test_reports_read_back_in_stage_order_with_their_contents(tmp_path):
    later = StatusBoard(str(tmp_path), pp_rank=1, tp_rank=0)
    first = StatusBoard(str(tmp_path), pp_rank=0, tp_rank=1)
    later.publish({"pp_rank": 1, "tp_rank": 0, "pipemax": {"parks": 3, "steps": [1.5, 2.5]}})
    first.publish({"pp_rank": 0, "tp_rank": 1, "pipemax": {"parks": 0}})
    docs = StatusBoard.read(str(tmp_path))
    assert [(d["pp_rank"], d["tp_rank"]) for d in docs] == [(0, 1), (1, 0)]
    assert docs[1]["pipemax"] == {"parks": 3, "steps": [1.5, 2.5]}


def test_a_new_report_replaces_the_last_and_leaves_no_temporary_file(tmp_path):
    board = StatusBoard(str(tmp_path), pp_rank=0, tp_rank=0)
    board.publish({"pp_rank": 0, "tp_rank": 0, "turn": 1})
    board.publish({"pp_rank": 0, "tp_rank": 0, "turn": 2})
    assert [d["turn"] for d in StatusBoard.read(str(tmp_path))] == [2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage-pp0-tp0.json"]


def test_no_directory_reads_as_no_reports(tmp_path):
    assert StatusBoard.read(str(tmp_path / "missing")) == []
    assert StatusBoard.read(None) == []
