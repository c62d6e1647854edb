"""PipeMax across two nodes with SGLang's own multi-node launch: `--nnodes 2 --node-rank
0|1 --dist-init-addr HOST:PORT`, one pipeline stage a node. Here both "nodes" are processes
on this machine over loopback (one core each), sharing one status directory so that node
0's /pipemax/status shows both stages. Tokens equal the single-node reference and both
stages park."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

import requests

from tests.conftest import random_prompts
from tests.support.reference import hf_greedy
from tests.support.server_process import ServerProcess, free_port

PROMPTS = random_prompts(24, 60, 120, seed=5)
NEW = 20


def _node_args(model, rank, addr, status_dir):
    return ["--model-path", model, "--pp-size", "2", "--pp-async-batch-depth", "2", "--nnodes", "2",
            "--node-rank", str(rank), "--dist-init-addr", addr, "--max-total-tokens", "864",
            "--log-level", "warning", "--pipemax-stream", "always", "--pipemax-host-kv-tokens", "16384",
            "--pipemax-status-dir", status_dir]


def test_two_nodes_serve_the_reference_tokens_and_both_stages_park(tiny_model):
    addr = f"127.0.0.1:{free_port()}"
    status_dir = tempfile.mkdtemp(prefix="pipemax-2nodes-")
    log1 = tempfile.NamedTemporaryFile("w+", prefix="pipemax-node1-", suffix=".log", delete=False)
    node1 = subprocess.Popen(
        [sys.executable, "-m", "pipemax_sglang.launch_server", *_node_args(tiny_model, 1, addr, status_dir)],
        stdout=log1, stderr=subprocess.STDOUT, env={**os.environ, "SGLANG_CPU_OMP_THREADS_BIND": "1"})
    try:
        with ServerProcess(_node_args(tiny_model, 0, addr, status_dir),
                           env={"SGLANG_CPU_OMP_THREADS_BIND": "0"}) as node0:
            r = requests.post(node0.url + "/generate", json={"input_ids": PROMPTS, "sampling_params": {
                "temperature": 0, "max_new_tokens": NEW, "ignore_eos": True}}, timeout=600)
            assert r.status_code == 200, r.text
            assert [o["output_ids"] for o in r.json()] == hf_greedy(tiny_model, PROMPTS, NEW)
            stages = requests.get(node0.url + "/pipemax/status", timeout=30).json()["stages"]
            assert sorted(s["pp_rank"] for s in stages) == [0, 1]
            assert len({s["pid"] for s in stages}) == 2
            for s in stages:
                assert s["pipemax"]["parks"] > 0 and s["pipemax"]["rejoins"] > 0, s["pipemax"]
                assert s["pipemax"]["recomputes"] == 0
    finally:
        if node1.poll() is None:
            node1.send_signal(signal.SIGTERM)
            try:
                node1.wait(60)
            except subprocess.TimeoutExpired:
                node1.kill()
        log1.close()
        os.unlink(log1.name)
