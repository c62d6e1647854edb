"""The output file: records written whole; a killed run's file recovered; what counts as done."""

from __future__ import annotations

import json

import pytest

from pipemax_sglang.batch.requests import BatchFileError, InvalidLine
from pipemax_sglang.batch.results import ResultWriter, answered_record, encode, invalid_record, recover

OK_BODY = {"id": "cmpl-1", "object": "text_completion", "choices": [{"text": "a\nb \u2028"}],
           "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
ERR_BODY = {"object": "error", "message": "Prompt cannot be empty", "type": "BadRequestError", "code": 400}


def _lines(path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines() if line]


def test_records_have_the_openai_batch_shape():
    ok = answered_record("q1", 200, OK_BODY)
    assert set(ok) == {"id", "custom_id", "response", "error"} and ok["id"].startswith("batch_req_")
    assert ok["response"] == {"status_code": 200, "request_id": "cmpl-1", "body": OK_BODY}
    assert ok["error"] is None
    failed = answered_record("q2", 400, ERR_BODY)
    assert failed["response"]["status_code"] == 400 and failed["response"]["body"] == ERR_BODY
    assert failed["response"]["request_id"]      # an error body has no id: one is made up
    bad = invalid_record(InvalidLine(7, None, "not valid JSON"))
    assert bad["response"] is None and bad["custom_id"] is None
    assert bad["error"] == {"code": "invalid_request", "message": "line 7: not valid JSON", "line": 7}


def test_a_record_is_one_line_whatever_its_text_holds():
    record = answered_record("q", 200, OK_BODY)            # its text holds "\n" and U+2028
    data = encode(record)
    assert data.count(b"\n") == 1 and data.endswith(b"\n")
    assert len(data.decode().splitlines()) == 1             # even for a reader that splits at U+2028
    assert json.loads(data) == record


def test_the_writer_appends_whole_lines_after_what_is_there(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(encode(answered_record("old", 200, OK_BODY)))
    with ResultWriter(out) as w:
        w.append(answered_record("q1", 200, OK_BODY))
        w.append(answered_record("q2", 400, ERR_BODY))
        # flushed as written: a reader sees both before the writer closes
        assert [r["custom_id"] for r in _lines(out)] == ["old", "q1", "q2"]


def test_recover_a_missing_file_is_an_empty_start(tmp_path):
    resume = recover(tmp_path / "out.jsonl")
    assert resume.records == 0 and not resume.done_ids and not (tmp_path / "out.jsonl").exists()


def test_recover_cuts_a_torn_last_line_and_appending_goes_on_cleanly(tmp_path):
    out = tmp_path / "out.jsonl"
    whole = encode(answered_record("q1", 200, OK_BODY)) + encode(answered_record("q2", 200, OK_BODY))
    torn = encode(answered_record("q3", 200, OK_BODY))[:57]     # killed mid-write
    out.write_bytes(whole + torn)
    resume = recover(out)
    assert resume.done_ids == {"q1", "q2"} and resume.records == 2
    assert resume.torn_bytes == 57
    assert out.read_bytes() == whole                              # the file is valid JSONL again
    with ResultWriter(out) as w:
        w.append(answered_record("q3", 200, OK_BODY))
    assert [r["custom_id"] for r in _lines(out)] == ["q1", "q2", "q3"]


def test_recover_keeps_a_whole_record_that_only_lost_its_newline(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(encode(answered_record("q1", 200, OK_BODY)) + encode(answered_record("q2", 200, OK_BODY))[:-1])
    resume = recover(out)
    assert resume.done_ids == {"q1", "q2"} and resume.torn_bytes == 0
    assert [r["custom_id"] for r in _lines(out)] == ["q1", "q2"]


def test_recover_refuses_a_file_that_is_not_ours_naming_the_line(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(encode(answered_record("q1", 200, OK_BODY)) + b'{"custom_id": "x", "body": {}}\n'
                    + encode(answered_record("q2", 200, OK_BODY)))
    before = out.read_bytes()
    with pytest.raises(BatchFileError, match="line 2 is not a batch result record"):
        recover(out)
    assert out.read_bytes() == before                              # nothing cut from a file we refuse


def test_done_is_by_custom_id_for_answers_and_by_line_for_invalid_lines(tmp_path):
    out = tmp_path / "out.jsonl"
    with ResultWriter(out) as w:
        w.append(answered_record("q1", 200, OK_BODY))
        w.append(answered_record("q2", 400, ERR_BODY))             # an error answer is an answer
        w.append(invalid_record(InvalidLine(9, None, "not valid JSON")))
        # line 12 duplicates q3, whose own line has not been answered yet
        w.append(invalid_record(InvalidLine(12, "q3", 'duplicate custom_id "q3" (first on line 3)')))
    resume = recover(out)
    assert resume.done_ids == {"q1", "q2"}
    assert resume.done_lines == {9, 12}
    assert resume.records == 4
