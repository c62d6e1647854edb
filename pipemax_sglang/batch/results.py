"""The output file: one JSON record per line, appended as each request completes.

Records, in the OpenAI Batch output format:

    answered      {"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}
                  (status_code and body exactly as the server's endpoint answers: 200 or an error)
    invalid line  {"id", "custom_id" (null if the line named none), "response": null,
                   "error": {"code": "invalid_request", "message": "line 7: ...", "line": 7}}
                  (written only with --skip-invalid)

Crash safety, by construction:
- ResultWriter opens the file O_APPEND and writes each record as one os.write of the whole
  line, "\\n" last; a short write is continued at once. A process killed at any instant (SIGKILL
  included) leaves whole lines plus at most one tail without its "\\n". The kernel holds what was
  written even when the process dies; only a machine crash can lose the unsynced end, and that
  end is again whole lines plus a torn tail.
- recover() runs before anything is appended: a tail without "\\n" that is not a whole record
  is cut off, so readers never meet a partial line and the next record starts on its own line.

What counts as done on resume: answered records by custom_id (an error answer is an answer: it
is not retried); invalid-line records by line number, because a duplicate's error record carries
the custom_id of another line, whose own answer may still be missing.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from pipemax_sglang.batch.requests import BatchFileError, InvalidLine

INVALID_CODE = "invalid_request"


def answered_record(custom_id: str, status_code: int, body: dict[str, Any]) -> dict[str, Any]:
    request_id = body.get("id") if status_code == 200 and isinstance(body.get("id"), str) else None
    return {
        "id": _record_id(),
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": request_id or uuid.uuid4().hex, "body": body},
        "error": None,
    }


def invalid_record(item: InvalidLine) -> dict[str, Any]:
    return {
        "id": _record_id(),
        "custom_id": item.custom_id,
        "response": None,
        "error": {"code": INVALID_CODE, "message": f"line {item.line}: {item.reason}", "line": item.line},
    }


def _record_id() -> str:
    return f"batch_req_{uuid.uuid4().hex}"


# Characters str.splitlines() breaks lines at that json.dumps leaves raw (it escapes U+0000-001F):
# escaped too, so that no reader, however it splits lines, sees a record in two pieces.
_LINE_BREAKERS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def encode(record: dict[str, Any]) -> bytes:
    """One line of UTF-8, b"\\n" last and nowhere else."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":")).translate(_LINE_BREAKERS)
    return (text + "\n").encode("utf-8")


@dataclass
class Resume:
    """What a previous run left in the output file."""
    done_ids: set[str] = field(default_factory=set)
    done_lines: set[int] = field(default_factory=set)
    records: int = 0
    torn_bytes: int = 0       # size of the torn tail that recover() cut off (0: none)


def recover(path: str | os.PathLike) -> Resume:
    """Read the output file of an earlier run (if any), cut a torn tail, return what is done.

    A whole line that is not a result record means the file is not (only) ours: refuse it,
    naming the line, rather than append to it or guess.
    """
    resume = Resume()
    try:
        f = open(path, "r+b")
    except FileNotFoundError:
        return resume
    except OSError as e:
        raise BatchFileError(f"cannot open the output file: {e}") from None
    with f:
        good_end = 0       # offset just past the last whole line
        tail = b""         # a last segment without its "\n" (only the last one can lack it)
        for n, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                tail = raw
                break
            good_end += len(raw)
            if not raw.strip():
                continue
            record = _parse_record(raw)
            if record is None:
                raise BatchFileError(
                    f"{os.fspath(path)} line {n} is not a batch result record: it was not written by this "
                    "runner or was changed since; move the file away or fix that line")
            _count(resume, record)
        if tail:
            record = _parse_record(tail)
            if record is None:          # torn by a kill mid-write: cut it off
                resume.torn_bytes = len(tail)
                f.truncate(good_end)
            else:                       # a whole record that only lacks its newline: finish it
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
                _count(resume, record)
    return resume


def _count(resume: Resume, record: dict[str, Any]) -> None:
    resume.records += 1
    error = record.get("error")
    if isinstance(error, dict) and error.get("code") == INVALID_CODE and isinstance(error.get("line"), int):
        resume.done_lines.add(error["line"])
    else:
        resume.done_ids.add(record["custom_id"])


def _parse_record(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or "custom_id" not in record or not ("response" in record or "error" in record):
        return None
    return record


class ResultWriter:
    """Appends records to the output file, each one whole and handed to the OS at once."""

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise BatchFileError(f"cannot write the output file: {e}") from None

    def append(self, record: dict[str, Any]) -> None:
        data = memoryview(encode(record))
        while data:
            data = data[os.write(self._fd, data):]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
