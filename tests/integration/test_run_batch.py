"""`python -m pipemax_sglang.run_batch` on the real engine: its records equal the server's
OpenAI answers, its console is a progress line and a summary with no warnings, and a run
stopped any way (Ctrl-C to the process group, SIGKILL) and run again finishes with every line
answered exactly once.

The server (pp 1, stock flags) answers the same 200 requests over HTTP: that is the reference.
Greedy tokens do not depend on pp or on what PipeMax parks (tests/integration/
test_pipemax_parking.py), so the runner runs pp 2 with the device KV at half of the batch.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests

from pipemax_sglang.batch.sample import sample_lines
from tests.support.server_process import ServerProcess

N = 200
LINES = list(sample_lines(N, seed=3, max_tokens=(2, 12), eos_every=5))
# The stopped-and-resumed runs: the first 60 requests, a body the endpoint refuses (a 400
# answer, as the server gives), and three lines the file format refuses; run with
# --skip-invalid, each line becomes exactly one record.
STOPPED = LINES[:60]
BAD_BODY = {"custom_id": "bad-body", "method": "POST", "url": "/v1/completions",
            "body": {"prompt": "def f(", "max_tokens": -5}}
INVALID = {10: '{"custom_id": "torn", "method": "POST", "url": ',           # line number -> text
           30: json.dumps({**LINES[7], "custom_id": "emb", "url": "/v1/embeddings"}),
           50: json.dumps(LINES[3])}                                         # a duplicate of line 4
WARNING = re.compile(r"Warning\b|warnings\.warn")
PROGRESS = re.compile(r"^pipemax-run-batch: (\d+)/(\d+) requests \(\d+%\)")
RUN_TIMEOUT_S = 600


def _volatile_free(body: dict) -> dict:
    """A response body without what differs between two answers to one request."""
    return {k: v for k, v in body.items() if k not in ("id", "created")}


def _text(body: dict) -> str:
    choice = body["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]


def _write(path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _records(path) -> list[dict]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "the output ends in a partial line"
    return [json.loads(line) for line in data.decode().split("\n") if line]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipemax_sglang.run_batch", *args]


@pytest.fixture(scope="module")
def reference(tiny_model) -> dict[str, tuple[int, dict]]:
    """custom_id -> (status code, body) as the server's endpoints answer each request."""
    with ServerProcess(["--model-path", tiny_model, "--max-total-tokens", "4096", "--log-level", "error"]) as srv:
        def ask(line: dict) -> tuple[str, tuple[int, dict]]:
            r = requests.post(srv.url + line["url"], json=line["body"], timeout=300)
            return line["custom_id"], (r.status_code, r.json())

        with ThreadPoolExecutor(8) as pool:
            return dict(pool.map(ask, LINES + [BAD_BODY]))


def test_200_lines_give_the_servers_answers_with_progress_and_summary(tiny_model, reference, tmp_path):
    src, out, summary = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "summary.json"
    _write(src, [json.dumps(x) for x in LINES])
    proc = subprocess.run(_cli(
        "-i", str(src), "-o", str(out), "--summary-json", str(summary), "--progress-every", "1",
        "--model-path", tiny_model, "--pp-size", "2", "--pp-async-batch-depth", "2",
        "--max-total-tokens", "1536", "--pipemax-host-kv-tokens", "16384",
    ), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console

    records = _records(out)
    assert len(records) == N
    assert Counter(r["custom_id"] for r in records) == Counter(x["custom_id"] for x in LINES)
    for r in records:
        status, body = reference[r["custom_id"]]
        assert r["error"] is None and r["response"]["status_code"] == status == 200
        assert r["response"]["request_id"] == r["response"]["body"]["id"]
        assert _text(r["response"]["body"]) == _text(body), r["custom_id"]
        assert _volatile_free(r["response"]["body"]) == _volatile_free(body), r["custom_id"]

    # the console without a terminal: progress lines, the last one at 200/200, then the summary
    progress = [m.groups() for m in map(PROGRESS.match, proc.stderr.splitlines()) if m]
    assert progress and progress[-1] == (str(N), str(N))
    assert [int(done) for done, _ in progress] == sorted(int(done) for done, _ in progress)
    assert f"pipemax-run-batch: complete: {N} ok, 0 failed" in proc.stdout
    assert "PipeMax (2 stages):" in proc.stdout
    assert not [line for line in console.splitlines() if WARNING.search(line)], console
    assert "Traceback" not in console, console

    doc = json.loads(summary.read_text())
    assert (doc["ok"], doc["failed"], doc["left"], doc["outcome"]) == (N, 0, 0, "complete")
    assert doc["output_tokens"] == sum(r["response"]["body"]["usage"]["completion_tokens"] for r in records)
    assert doc["pipemax"]["stages"] == 2 and doc["pipemax"]["recomputes"] == 0


def _start(args: list[str]) -> subprocess.Popen:
    # its own session, so a signal to its process group is what Ctrl-C in a terminal sends
    return subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_for_records(proc: subprocess.Popen, out, at_least: int) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before it could be stopped:\n{proc.stdout.read()}"
        if out.exists() and out.read_bytes().count(b"\n") >= at_least:
            return
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no {at_least} records within {RUN_TIMEOUT_S} s")


def test_stopped_runs_resume_until_every_line_has_exactly_one_record(tiny_model, reference, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [json.dumps(x) for x in STOPPED] + [json.dumps(BAD_BODY)]
    for line_no, text in sorted(INVALID.items()):
        lines.insert(line_no - 1, text)
    _write(src, lines)
    args = ["-i", str(src), "-o", str(out), "--skip-invalid", "--max-in-flight", "4", "--progress-every", "1",
            "--model-path", tiny_model, "--max-total-tokens", "4096"]

    # run 1: Ctrl-C (SIGINT to the whole process group) part way: a clean stop, no child left
    run = _start(args)
    _wait_for_records(run, out, 12)
    children = psutil.Process(run.pid).children(recursive=True)
    os.killpg(run.pid, signal.SIGINT)
    console, _ = run.communicate(timeout=120)
    assert run.returncode == 128 + signal.SIGINT, console
    assert "interrupted by SIGINT" in console and "run the same command again to finish" in console
    assert "Traceback" not in console and "KeyboardInterrupt" not in console, console
    assert not psutil.wait_procs(children, timeout=30)[1]
    first = len(_records(out))

    # run 2: SIGKILL part way: no summary, no cleanup; SGLang's children die with the runner
    run = _start(args)
    _wait_for_records(run, out, first + 12)
    children = psutil.Process(run.pid).children(recursive=True)
    assert children
    os.kill(run.pid, signal.SIGKILL)
    run.communicate(timeout=60)
    assert not psutil.wait_procs(children, timeout=30)[1]
    second = len(_records(out))
    assert second < len(STOPPED) + 1 + len(INVALID)

    # run 3, the same command: it skips what is there and finishes the rest
    proc = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{second} already in {out}" in proc.stdout

    records = _records(out)
    answers = [r for r in records if r["response"] is not None]
    errors = [r for r in records if r["error"] is not None]
    assert Counter(r["custom_id"] for r in answers) == Counter([x["custom_id"] for x in STOPPED] + ["bad-body"])
    for r in answers:
        status, body = reference[r["custom_id"]]
        assert r["response"]["status_code"] == status, r
        if status == 200:
            assert _text(r["response"]["body"]) == _text(body), r["custom_id"]
    assert reference["bad-body"][0] == 400 and reference["bad-body"][1]["object"] == "error"
    assert sorted(r["error"]["line"] for r in errors) == sorted(INVALID)
    by_line = {r["error"]["line"]: r for r in errors}
    assert by_line[10]["custom_id"] is None and "line 10: not valid JSON" in by_line[10]["error"]["message"]
    assert 'line 30: unknown url "/v1/embeddings"' in by_line[30]["error"]["message"]
    assert by_line[50]["custom_id"] == LINES[3]["custom_id"]
    assert 'line 50: duplicate custom_id "req-000003" (first on line 4)' in by_line[50]["error"]["message"]
