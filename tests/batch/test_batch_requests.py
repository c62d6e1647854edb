"""The input file, line by line: what is a request, what is refused and why, with its line."""

from __future__ import annotations

import json

import pytest

from pipemax_sglang.batch.requests import BatchFileError, BatchRequest, InvalidLine, parse_line, read_requests


def _line(**over) -> dict:
    line = {"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x", "max_tokens": 3}}
    line.update(over)
    return line


def _write(tmp_path, *lines) -> str:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(x if isinstance(x, bytes) else (json.dumps(x) + "\n").encode() for x in lines))
    return str(path)


def test_a_good_line_is_a_request_with_its_line_number():
    item = parse_line(json.dumps(_line(url="/v1/chat/completions", body={"messages": []})).encode(), 7)
    assert item == BatchRequest(7, "a", "/v1/chat/completions", {"messages": []})


@pytest.mark.parametrize("raw, custom_id, reason", [
    (b'{"custom_id": "a", "method": "POST",', None, "not valid JSON"),
    (b'[1, 2]', None, "not a JSON object (a list)"),
    (b'\xff\xfe{}', None, "not UTF-8 text"),
    (json.dumps(_line(custom_id="")).encode(), None, "custom_id must be a non-empty string"),
    (json.dumps(_line(custom_id=17)).encode(), None, "custom_id must be a non-empty string"),
    (json.dumps(_line(method="GET")).encode(), "a", 'method must be "POST", got "GET"'),
    (json.dumps(_line(url="/v1/embeddings")).encode(), "a", 'unknown url "/v1/embeddings"'),
    (json.dumps(_line(body="hi")).encode(), "a", "body must be a JSON object"),
    (json.dumps(_line(body={"prompt": "x", "stream": True})).encode(), "a", "stream"),
], ids=["torn-json", "array", "not-utf8", "empty-id", "int-id", "get", "embeddings", "body-string", "stream"])
def test_structural_faults_are_invalid_lines_with_one_reason(raw, custom_id, reason):
    item = parse_line(raw, 12)
    assert isinstance(item, InvalidLine)
    assert item.line == 12 and item.custom_id == custom_id
    assert reason in item.reason


def test_body_fields_are_the_endpoints_business_not_the_files():
    # a negative max_tokens is a 400 from the endpoint, as on the server, not a refused line
    assert isinstance(parse_line(json.dumps(_line(body={"prompt": "x", "max_tokens": -5})).encode(), 1), BatchRequest)


def test_lines_are_numbered_as_an_editor_numbers_them(tmp_path):
    path = _write(tmp_path, _line(custom_id="a"), b"\n", b"   \r\n", _line(custom_id="b"), b"not json\n",
                  _line(custom_id="c"))
    items = list(read_requests(path))
    assert [(type(x).__name__, x.line) for x in items] == [
        ("BatchRequest", 1), ("BatchRequest", 4), ("InvalidLine", 5), ("BatchRequest", 6)]


def test_a_byte_order_mark_and_a_missing_last_newline_are_fine(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_line(custom_id="a")).encode() + b"\n"
                     + json.dumps(_line(custom_id="b")).encode())
    assert [x.custom_id for x in read_requests(path)] == ["a", "b"]


def test_the_first_line_owns_a_custom_id_later_ones_are_duplicates(tmp_path):
    path = _write(tmp_path, _line(custom_id="x"), _line(custom_id="y"), _line(custom_id="x"), _line(custom_id="x"))
    items = list(read_requests(path))
    assert isinstance(items[0], BatchRequest) and isinstance(items[1], BatchRequest)
    assert items[2] == InvalidLine(3, "x", 'duplicate custom_id "x" (first on line 1)')
    assert items[3] == InvalidLine(4, "x", 'duplicate custom_id "x" (first on line 1)')
    # a second pass (the run after the scan, a resume) sees exactly the same items
    assert list(read_requests(path)) == items


def test_an_invalid_line_does_not_claim_its_custom_id(tmp_path):
    # line 1 names "x" but is refused (bad url): line 2's "x" is the request, not a duplicate
    path = _write(tmp_path, _line(custom_id="x", url="/nope"), _line(custom_id="x"))
    items = list(read_requests(path))
    assert isinstance(items[0], InvalidLine) and items[1] == BatchRequest(2, "x", "/v1/completions", _line()["body"])


def test_a_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(BatchFileError, match="cannot read the input file"):
        list(read_requests(tmp_path / "nope.jsonl"))
