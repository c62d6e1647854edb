"""What a run has left to do: a story of a run, its kill, and its resume, on files alone."""

from __future__ import annotations

import json

import pytest

from pipemax_sglang.batch import plan as batch_plan
from pipemax_sglang.batch.requests import BatchFileError, BatchRequest, InvalidLine
from pipemax_sglang.batch.results import ResultWriter, answered_record, encode, invalid_record, recover
from pipemax_sglang.batch.sample import sample_lines

BODY = {"usage": {"prompt_tokens": 1, "completion_tokens": 1}}


def _write_input(path, lines) -> None:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))


def test_a_fresh_valid_file_is_all_to_do(tmp_path):
    src = tmp_path / "in.jsonl"
    _write_input(src, sample_lines(10))
    plan = batch_plan.scan(src, recover(tmp_path / "out.jsonl"), skip_invalid=False)
    assert (plan.requests, plan.invalid, plan.done, plan.todo) == (10, 0, 0, 10)
    assert not plan.refused
    assert [x.custom_id for x in plan.pending(recover(tmp_path / "out.jsonl"))] == [f"req-{i:06d}" for i in range(10)]


def test_invalid_lines_are_refused_with_their_line_numbers(tmp_path):
    src = tmp_path / "in.jsonl"
    good = list(sample_lines(3))
    _write_input(src, [good[0], "{not json", good[1], {**good[2], "url": "/v1/embeddings"}, good[1]])
    plan = batch_plan.scan(src, recover(tmp_path / "out.jsonl"), skip_invalid=False)
    assert plan.refused and plan.invalid == 3 and plan.requests == 2
    message = plan.refusal()
    assert "3 invalid lines" in message and "--skip-invalid" in message
    assert "  line 2: not valid JSON" in message
    assert '  line 4: unknown url "/v1/embeddings"' in message
    assert '  line 5: duplicate custom_id "req-000001" (first on line 3)' in message


def test_a_long_list_of_invalid_lines_is_quoted_then_counted(tmp_path):
    src = tmp_path / "in.jsonl"
    _write_input(src, ["nope"] * (batch_plan.EXAMPLES + 5))
    message = batch_plan.scan(src, recover(tmp_path / "out.jsonl"), skip_invalid=False).refusal()
    assert message.count("not valid JSON") == batch_plan.EXAMPLES
    assert message.endswith("... and 5 more")


def test_with_skip_invalid_the_invalid_lines_are_part_of_the_run(tmp_path):
    src = tmp_path / "in.jsonl"
    good = list(sample_lines(2))
    _write_input(src, [good[0], "{not json", good[1], good[0]])
    plan = batch_plan.scan(src, recover(tmp_path / "out.jsonl"), skip_invalid=True)
    assert not plan.refused and (plan.todo_requests, plan.todo_invalid) == (2, 2)
    items = list(plan.pending(recover(tmp_path / "out.jsonl")))
    assert [(type(x).__name__, x.line) for x in items] == [
        ("BatchRequest", 1), ("InvalidLine", 2), ("BatchRequest", 3), ("InvalidLine", 4)]


def test_resume_story_killed_with_a_torn_line_then_run_again(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = list(sample_lines(8))
    _write_input(src, lines[:5] + ["{broken"] + lines[5:])          # line 6 is invalid
    resume = recover(out)
    first = batch_plan.scan(src, resume, skip_invalid=True)
    assert first.todo == 9

    # run 1 answers req 3, 0, the invalid line and req 6 (completion order), then is killed
    # while writing req 1's record
    with ResultWriter(out) as w:
        for cid in ("req-000003", "req-000000"):
            w.append(answered_record(cid, 200, BODY))
        w.append(invalid_record(InvalidLine(6, None, "not valid JSON")))
        w.append(answered_record("req-000006", 200, BODY))
    with open(out, "ab") as f:
        f.write(encode(answered_record("req-000001", 200, BODY))[:40])

    # run 2, same arguments: the torn line goes, the done ones are skipped
    resume = recover(out)
    assert resume.torn_bytes == 40
    second = batch_plan.scan(src, resume, skip_invalid=True)
    assert (second.done, second.todo) == (4, 5)
    pending = list(second.pending(resume))
    assert all(isinstance(x, BatchRequest) for x in pending)
    assert [x.custom_id for x in pending] == ["req-000001", "req-000002", "req-000004", "req-000005", "req-000007"]

    # run 2 completes: every line has exactly one record
    with ResultWriter(out) as w:
        for x in pending:
            w.append(answered_record(x.custom_id, 200, BODY))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["custom_id"] for r in records if r["response"]]
    assert sorted(ids) == [f"req-{i:06d}" for i in range(8)]
    assert [r["error"]["line"] for r in records if r["error"]] == [6]
    third = batch_plan.scan(src, recover(out), skip_invalid=True)
    assert third.todo == 0 and third.done == 9


def test_records_for_another_input_are_counted_as_foreign(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_input(src, sample_lines(2))
    with ResultWriter(out) as w:
        w.append(answered_record("req-000000", 200, BODY))
        w.append(answered_record("someone-else", 200, BODY))
    plan = batch_plan.scan(src, recover(out), skip_invalid=False)
    assert (plan.done, plan.todo, plan.foreign) == (1, 1, 1)


def test_paths_input_must_exist_and_differ_from_output(tmp_path):
    src = tmp_path / "in.jsonl"
    with pytest.raises(BatchFileError, match="does not exist"):
        batch_plan.check_paths(src, tmp_path / "out.jsonl")
    _write_input(src, sample_lines(1))
    with pytest.raises(BatchFileError, match="the output file is the input file"):
        batch_plan.check_paths(src, src)
    with pytest.raises(BatchFileError, match="directory"):
        batch_plan.check_paths(src, tmp_path / "no" / "out.jsonl")
    batch_plan.check_paths(src, tmp_path / "out.jsonl")
