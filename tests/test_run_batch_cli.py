"""`python -m pipemax_sglang.run_batch` refuses what it cannot run before SGLang is imported:
bad flags and invalid input lines exit 2, naming each line; a finished output starts nothing."""

from __future__ import annotations

import json
import subprocess
import sys

from pipemax_sglang.batch.results import answered_record, encode
from pipemax_sglang.batch.sample import sample_lines

NO_MODEL = ["--model-path", "/nonexistent/model"]   # any engine start would fail on it


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipemax_sglang.run_batch", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_invalid_lines_are_refused_each_with_its_line_number(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    good = [json.dumps(x) for x in sample_lines(4)]
    src.write_text("\n".join([good[0], '{"custom_id": "x", "method": "POST"', good[1],
                              good[2].replace("/v1/", "/v2/"), good[0], good[3]]) + "\n")
    proc = _run(["-i", str(src), "-o", str(out), *NO_MODEL])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    err = proc.stderr.splitlines()
    assert err[0] == f"pipemax-run-batch: error: {src}: 3 invalid lines (fix them, or pass --skip-invalid " \
                     "to write them as error records and run the rest):"
    assert err[1].startswith("  line 2: not valid JSON")
    assert err[2].startswith('  line 4: unknown url "/v2/')
    assert err[3] == '  line 5: duplicate custom_id "req-000000" (first on line 1)'
    assert not out.exists()


def test_an_output_holding_every_answer_is_complete_without_an_engine(tmp_path):
    src, out, summary = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "s.json"
    lines = list(sample_lines(3))
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    body = {"usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    out.write_bytes(b"".join(encode(answered_record(x["custom_id"], 200, body)) for x in lines))
    proc = _run(["-i", str(src), "-o", str(out), "--summary-json", str(summary), *NO_MODEL])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == \
        f"pipemax-run-batch: complete (nothing left to do): 0 ok, 0 failed; 3 already in {out}"
    doc = json.loads(summary.read_text())
    assert doc["already_done"] == 3 and doc["left"] == 0 and doc["engine_start_s"] == 0


def test_a_missing_flag_and_a_bad_pipemax_flag_are_one_line_each(tmp_path):
    proc = _run(["-i", str(tmp_path / "in.jsonl"), *NO_MODEL])
    assert proc.returncode == 2 and proc.stderr.strip() == \
        "pipemax-run-batch: error: the following arguments are required: -o/--output-file"
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(next(sample_lines(1))) + "\n")
    proc = _run(["-i", str(src), "-o", str(tmp_path / "o.jsonl"), "--pipemax-selector", "magic", *NO_MODEL])
    assert proc.returncode == 2 and "--pipemax-selector must be one of" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_lists_the_runners_sglangs_and_pipemaxs_flags():
    proc = _run(["--help"])
    assert proc.returncode == 0
    for flag in ("--input-file", "--skip-invalid", "--summary-json", "--model-path", "--pp-size",
                 "--pipemax-host-kv-tokens"):
        assert flag in proc.stdout


def test_the_console_script_is_the_same_main():
    import tomllib
    from pathlib import Path

    from pipemax_sglang import run_batch

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["pipemax-run-batch"] == "pipemax_sglang.run_batch:main"
    assert callable(run_batch.main)
