# pipemax_sglang: one entry point for the environment, the demo, the tests and the benchmarks.
#   make venv     CPU environment in .venv (re-running is quick when nothing changed)
#   make demo     the main job: a batch file through pipemax-run-batch, pp_size 2, built-in tiny
#                 model (sample requests and results in demo-out/)
#   make test     every test (fast tier + real-SGLang integration tier)
#   make test-fast  the fast tier only (no engines; seconds)
#   make check-seams  every SGLang internal we rely on still exists (docs/seams.md)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The SGLang pin lives in one place: pipemax_sglang/sglang/version.py.
SGLANG_VERSION := $(shell sed -n 's/^SGLANG_PIN = "\(.*\)"/\1/p' pipemax_sglang/sglang/version.py)
STAMP := $(VENV)/.pipemax-installed
PYTEST_ARGS ?=

.PHONY: venv model demo test test-fast test-integration bench-selector check-patches check-seams clean

venv: $(STAMP)

$(STAMP): requirements/cpu.txt requirements/dev.txt pyproject.toml cpu_shim/pyproject.toml \
          cpu_shim/pipemax_sglang_cpu.pth $(wildcard cpu_shim/pipemax_sglang_cpu/*.py) \
          pipemax_sglang/sglang/version.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/cpu.txt -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps sglang==$(SGLANG_VERSION)
	$(PY) -m pip install -q --no-deps ./cpu_shim
	$(PY) -m pip install -q --no-deps -e .
	touch $@

model: venv
	$(PY) -m pipemax_sglang.models

demo: venv
	$(PY) -m pipemax_sglang.demo

test: venv check-patches check-seams
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

test-integration: venv
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

bench-selector: venv
	$(PY) benchmarks/bench_selector.py --quick

# Every patch in patches/ must still apply to the pinned sglang (dry run; changes nothing).
check-patches: venv
	$(PY) -m pipemax_sglang.sglang.patches --check

# Every SGLang internal PipeMax relies on still exists in the pinned SGLang (seconds, no
# engine): the first thing to run against a new SGLang release. docs/seams.md lists them.
check-seams: venv
	$(PY) -m pipemax_sglang.sglang.seams --check

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
