"""The input file: OpenAI Batch request lines, read one at a time and validated as they are read.

    {"custom_id": "q-17", "method": "POST", "url": "/v1/chat/completions", "body": {...}}

Each non-blank line becomes a BatchRequest, or an InvalidLine with its line number and one
reason. What is checked here is the file's structure (JSON, custom_id, method, url, body an
object, unique custom_ids). The body's own fields are the endpoint's business: a bad body is
answered like the server answers it (a 400 record), not refused here.

Numbering: lines count from 1 as an editor counts them (split on b"\\n"); blank lines count but
yield nothing. Reading is deterministic: the first line with a custom_id owns it, later ones are
duplicates, so every pass over the same file (scan, run, resume) sees the same items.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator, NamedTuple

URLS = ("/v1/chat/completions", "/v1/completions")


class BatchFileError(ValueError):
    """A batch file cannot be used at all (missing, unreadable, not ours): one line, exit 2."""


class BatchRequest(NamedTuple):
    line: int
    custom_id: str
    url: str
    body: dict[str, Any]


class InvalidLine(NamedTuple):
    line: int
    custom_id: str | None    # when the line named one (a duplicate, a bad url, ...)
    reason: str


def parse_line(raw: bytes, line: int) -> BatchRequest | InvalidLine:
    """One line's request, or why it is not one. Duplicates are read_requests' concern."""
    try:
        text = raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as e:
        return InvalidLine(line, None, f"not UTF-8 text ({e.reason} at byte {e.start})")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return InvalidLine(line, None, f"not valid JSON: {e.msg} (column {e.colno})")
    if not isinstance(obj, dict):
        return InvalidLine(line, None, f"not a JSON object (a {type(obj).__name__})")
    cid = obj.get("custom_id")
    if not isinstance(cid, str) or not cid:
        return InvalidLine(line, None, "custom_id must be a non-empty string")
    if obj.get("method") != "POST":
        return InvalidLine(line, cid, f"method must be \"POST\", got {json.dumps(obj.get('method'))}")
    url = obj.get("url")
    if url not in URLS:
        return InvalidLine(line, cid, f"unknown url {json.dumps(url)}: this runner serves {', '.join(URLS)}")
    body = obj.get("body")
    if not isinstance(body, dict):
        return InvalidLine(line, cid, "body must be a JSON object")
    if body.get("stream"):
        return InvalidLine(line, cid, "\"stream\": true is not supported in a batch file (each answer is written whole)")
    return BatchRequest(line, cid, url, body)


def read_requests(path: str | os.PathLike) -> Iterator[BatchRequest | InvalidLine]:
    """Every non-blank line of `path`, in order. Holds only the custom_ids seen so far."""
    first_line: dict[str, int] = {}
    try:
        f = open(path, "rb")
    except OSError as e:
        raise BatchFileError(f"cannot read the input file: {e}") from None
    with f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            item = parse_line(raw, n)
            if isinstance(item, BatchRequest):
                first = first_line.setdefault(item.custom_id, n)
                if first != n:
                    item = InvalidLine(n, item.custom_id, f"duplicate custom_id {json.dumps(item.custom_id)} "
                                                         f"(first on line {first})")
            yield item
