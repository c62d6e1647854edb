"""PipeMax through `python -m pipemax_sglang.launch_server` under memory pressure: tokens,
status, Prometheus gauges, aborts of parked and prefetching requests, a streaming client that
disconnects, and host memory too small for the load. Each case leaves the server serving and,
once idle, its device and host pools as they were."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from tests.conftest import random_prompts
from tests.support.reference import hf_greedy
from tests.support.server_process import ServerProcess

PROMPTS = random_prompts(32, 60, 120, seed=7)
NEW = 24
CAP = 864


def _server(tiny_model, *extra):
    return ServerProcess(["--model-path", tiny_model, "--max-total-tokens", str(CAP),
                          "--log-level", "warning", *extra])


def _generate(srv, ids, n, **kw):
    r = requests.post(srv.url + "/generate", json={"input_ids": ids, "sampling_params": {
        "temperature": 0, "max_new_tokens": n, "ignore_eos": True}, **kw}, timeout=600)
    assert r.status_code == 200, r.text
    return r.json()


def _status(srv) -> dict:
    return requests.get(srv.url + "/pipemax/status", timeout=30).json()


def _idle_pools(srv) -> list[dict]:
    """Wait until every stage is idle with nothing parked or prefetching, flush the cache
    (SGLang refuses while any request is in flight, so a refusal is retried), and return
    each stage's report once a scheduler turn has published the flushed pools."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        stages = _status(srv)["stages"]
        if all(s["idle"] and s["pipemax"]["parked"] == 0 and s["pipemax"]["prefetching"] == 0 for s in stages):
            r = requests.post(srv.url + "/flush_cache", timeout=60)
            if r.status_code == 200:
                break
        time.sleep(0.5)
    else:
        brief = [{k: s[k] for k in ("pp_rank", "idle", "pools")} | {k: s["pipemax"][k] for k in (
            "parked", "prefetching", "parked_rids", "turn")} for s in _status(srv)["stages"]]
        pytest.fail(f"never idle and flushable: {brief}")
    requests.get(srv.url + "/health", timeout=30)
    time.sleep(1.0)
    return _status(srv)["stages"]


def _pools(stages) -> list[dict]:
    return [s["pools"] for s in stages]


@pytest.fixture(scope="module")
def server(tiny_model):
    # streaming forced: these cases abort requests while they are parked or prefetching, and
    # on CPU `auto` streams only where a priced move pays (here it does not)
    srv = _server(tiny_model, "--pp-size", "2", "--pp-async-batch-depth", "2", "--enable-metrics",
                  "--pipemax-host-kv-tokens", "16384", "--pipemax-stream", "always")
    srv.idle_pools = _pools(_idle_pools(srv))   # what every case must give back
    yield srv
    assert not srv.stop(), "children alive after SIGTERM"


def test_tokens_equal_hf_while_parking(server, tiny_model):
    out = _generate(server, PROMPTS, NEW)
    assert [o["output_ids"] for o in out] == hf_greedy(tiny_model, PROMPTS, NEW)
    stages = _idle_pools(server)
    assert _pools(stages) == server.idle_pools
    for s in stages:
        st = s["pipemax"]
        assert st["parks"] > 0 and st["rejoins"] > 0 and st["recomputes"] == 0
        assert st["h2d_bytes"] > 0 and st["d2h_bytes"] > 0


def test_metrics_carry_pipemax_gauges(server):
    text = requests.get(server.url + "/metrics", timeout=30).text
    for name in ("pipemax:parks", "pipemax:h2d_bytes", "pipemax:prefetch_stall_s",
                 "pipemax:budget_utilisation", "pipemax:parked_now", "pipemax:recomputes"):
        assert name in text, name
    parks = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
             if line.startswith("pipemax:parks{")]
    assert parks and max(parks) > 0


def _long_requests(server, n: int, results: dict, rid_prefix: str, new_tokens: int = 600):
    """n concurrent greedy requests with rids f"{rid_prefix}-{i:03d}" (fixed width: SGLang
    aborts by rid prefix); results[rid] is the response body, or {"error": ...}."""
    prompts = random_prompts(n, 60, 120, seed=11)

    def one(i):
        rid = f"{rid_prefix}-{i:03d}"
        try:
            results[rid] = _generate(server, prompts[i], new_tokens, rid=rid)
        except AssertionError as e:  # an aborted request may answer with an error body
            results[rid] = {"error": str(e)}

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads


def _wait_parked(server, at_least: int = 4, rid: str | None = None) -> list[str]:
    """Stage 0's parked rids once at least `at_least` are parked (and `rid` among them)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        stage0 = _status(server)["stages"][0]["pipemax"]
        if stage0["parked"] >= at_least and (rid is None or rid in stage0["parked_rids"]):
            return stage0["parked_rids"]
        time.sleep(0.05)
    pytest.fail(f"nothing parked (wanted {rid or at_least})")


def _counters(server) -> list[dict]:
    return [s["pipemax"] for s in _status(server)["stages"]]


ABORT_ROUNDS = 8


def test_abort_parked_and_prefetching_requests(server, tiny_model):
    # A parked request can be hit by an abort at any moment, a prefetching one only between
    # its prefetch's issue and its turn (about one slot): a round whose abort_all falls where
    # no prefetch is under way is run again, up to ABORT_ROUNDS. Measured here, 11 of 12 rounds
    # hit a prefetch (one missed with a CPU hog beside the server); CI once missed in all of
    # three rounds. SGLang's tokenizer forwards only exact rids or abort_all (a prefix abort is
    # dropped there), so a round has one abort_all and one chance. Every round must end every
    # request as aborted and give the pools back; across rounds both kinds must have been hit.
    before = _counters(server)
    hit: dict[str, int] = {}
    for rnd in range(ABORT_ROUNDS):
        results: dict = {}
        threads = _long_requests(server, 24, results, f"abort{rnd}")
        one = _wait_parked(server)[0]            # parked at stage 0's last report
        assert requests.post(server.url + "/abort_request", json={"rid": one}, timeout=30).status_code == 200
        time.sleep(1.0)
        assert requests.post(server.url + "/abort_request", json={"abort_all": True}, timeout=30).status_code == 200
        for t in threads:
            t.join(120)
        # every one of the 24 ended, none ran to its 600 tokens: all aborted, the first by rid
        assert len(results) == 24 and all("meta_info" in r for r in results.values()), results
        assert {r["meta_info"]["finish_reason"]["type"] for r in results.values()} == {"abort"}
        assert len(results[one]["output_ids"]) < 600
        stages = _idle_pools(server)
        assert _pools(stages) == server.idle_pools
        after = [s["pipemax"] for s in stages]
        # the aborts reached requests while parked and while their prefetch was under way (with
        # every micro-batch streaming, each ingest holds the next turn's prefetches)
        hit = {key: sum(a[key] - b[key] for a, b in zip(after, before))
               for key in ("aborted_parked", "aborted_prefetching")}
        if all(hit.values()):
            break
    assert hit["aborted_parked"] > 0 and hit["aborted_prefetching"] > 0, (hit, rnd + 1)
    # still serving, with the reference tokens
    assert _generate(server, [5, 6, 7, 8], 6)["output_ids"] == hf_greedy(tiny_model, [[5, 6, 7, 8]], 6)[0]


DISCONNECT_NOTICED_S = 15   # measured here: 0.5-0.6 s from the close to the request's end


def test_streaming_client_disconnects_while_parked(server, tiny_model):
    """The client closes its stream while its request is parked. Nothing of ours ends it:
    SGLang notices the closed connection and aborts the request (the streaming response's
    cancellation, or its background abort task, tokenizer_manager.create_abort_task); the
    abort reaches it in the parked pool. The background requests run to completion."""
    body = {"input_ids": random_prompts(1, 80, 80, seed=3)[0], "stream": True, "rid": "streamer",
            "sampling_params": {"temperature": 0, "max_new_tokens": 2000, "ignore_eos": True}}
    results: dict = {}
    with requests.post(server.url + "/generate", json=body, stream=True, timeout=120) as r:
        events = (line for line in r.iter_lines() if line.startswith(b"data: {"))
        first = json.loads(next(events)[6:])
        threads = _long_requests(server, 16, results, "bg", new_tokens=120)
        _wait_parked(server, at_least=1, rid="streamer")
        closed_at = time.monotonic()
    assert first["output_ids"]
    # gone from stage 0's report, and still gone 3 s later (a report can catch a request
    # between two of SGLang's lists for a moment)
    noticed, gone_since = None, None
    while time.monotonic() < closed_at + DISCONNECT_NOTICED_S + 3 and noticed is None:
        stage0 = _status(server)["stages"][0]["pipemax"]
        live = stage0["parked_rids"] + stage0["running_rids"] + stage0["prefetching_rids"]
        now = time.monotonic()
        if "streamer" in live:
            gone_since = None
        elif gone_since is None:
            gone_since = now
        elif now - gone_since >= 3:
            noticed = gone_since - closed_at
        time.sleep(0.1)
    assert noticed is not None, f"the closed stream still ran {DISCONNECT_NOTICED_S} s later"
    print(f"disconnect noticed {noticed:.1f} s after the close")
    for t in threads:
        t.join(300)
    assert len(results) == 16 and all(len(r.get("output_ids", ())) == 120 for r in results.values())
    stages = _idle_pools(server)
    assert _pools(stages) == server.idle_pools
    assert not any("streamer" in s["pipemax"]["parked_rids"] for s in stages)
    assert _generate(server, [9, 10, 11], 5)["output_ids"] == hf_greedy(tiny_model, [[9, 10, 11]], 5)[0]


def test_pp1_server_tokens_equal_hf_while_parking(tiny_model):
    # pp_size 1: one micro-batch; a request is parked while the others run (forced: on a CPU
    # `auto` never streams one micro-batch, nothing computes while a move runs)
    with _server(tiny_model, "--pipemax-host-kv-tokens", "16384", "--pipemax-stream", "always") as srv:
        idle = _pools(_idle_pools(srv))
        out = _generate(srv, PROMPTS, NEW)
        assert [o["output_ids"] for o in out] == hf_greedy(tiny_model, PROMPTS, NEW)
        stages = _idle_pools(srv)
        assert _pools(stages) == idle
        st = stages[0]["pipemax"]
        assert st["parks"] > 0 and st["rejoins"] > 0 and st["recomputes"] == 0
        assert st["h2d_bytes"] > 0 and st["d2h_bytes"] > 0


def test_host_memory_too_small_falls_back_with_one_warning(tiny_model):
    # host tier barely above the device pool: parking runs out of host memory
    with _server(tiny_model, "--pipemax-host-kv-tokens", "1100", "--pipemax-stream", "always") as srv:
        idle = _pools(_idle_pools(srv))
        out = _generate(srv, PROMPTS, NEW)
        assert [o["output_ids"] for o in out] == hf_greedy(tiny_model, PROMPTS, NEW)
        stages = _idle_pools(srv)
        assert _pools(stages) == idle
        assert stages[0]["pipemax"]["host_full_skips"] > 0
        log = srv.tail(100000)
        assert log.count("host KV tier full") == 1, log[-3000:]


def test_watchdog_hands_a_stalled_pipeline_back_to_sglang(tiny_model):
    # the "none" selector brings nobody back: with every micro-batch streaming, all requests
    # end up parked and nothing runs. The watchdog hands them to SGLang's queue; they finish
    # with the reference tokens, the server runs as stock from then on, and says so once.
    with _server(tiny_model, "--pp-size", "2", "--pp-async-batch-depth", "2", "--pipemax-selector", "none",
                 "--pipemax-stream", "always", "--pipemax-watchdog-s", "5",
                 "--pipemax-host-kv-tokens", "16384") as srv:
        idle = _pools(_idle_pools(srv))
        out = _generate(srv, PROMPTS, NEW)
        assert [o["output_ids"] for o in out] == hf_greedy(tiny_model, PROMPTS, NEW)
        stages = _idle_pools(srv)
        assert _pools(stages) == idle
        for s in stages:
            st = s["pipemax"]
            assert st["stock"] and st["handed_back"] > 0 and st["rejoins"] == 0, st
        log = srv.tail(100000)
        assert log.count("handing parked requests back to SGLang") == 1, log[-3000:]
        # and it keeps serving, as stock SGLang
        assert _generate(srv, [5, 6, 7, 8], 6)["output_ids"] == hf_greedy(tiny_model, [[5, 6, 7, 8]], 6)[0]
