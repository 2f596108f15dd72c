# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lora-trace-installed
# torch first and pinned: this wheel is a CPU build; an unpinned torch pulls a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: demo test bench lint system-deps setup

setup: $(STAMP) system-deps

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

system-deps:
	@sh scripts/system-deps.sh dot

demo: setup
	$(PY) -m lora_trace demo --out out/demo

# The HTML report is tested in a real headless browser: Debian's chromium (no browser downloads work here).
test: setup
	@sh scripts/system-deps.sh chromium
	$(PY) -m pytest -q

# The comparison tools too (torch stays pinned in the same command); BENCH_ARGS=--quick for a smoke run.
bench: setup
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH) -e '.[bench]'
	$(PY) -m benchmarks $(BENCH_ARGS)

lint: setup
	$(PY) -m ruff check lora_trace tests benchmarks examples
