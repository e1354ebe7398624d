# The two README commands: `make demo` and `make test`. Both build .venv from this repo's own files first.
# `make test-fast` is the inner loop: the unit tier (tests/unit, in-process, no subprocess/MPI/SLURM/CUDA).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

export PYTHONUNBUFFERED := 1

.PHONY: venv test test-fast demo lint format bench clean

venv: $(STAMP)

# torch first (the pinned CPU build), then deepspeed without build isolation (its setup.py imports torch;
# an isolated build would fetch a CUDA torch), then this package with the dev extra.
$(STAMP): setup.py constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q --no-build-isolation -c constraints.txt deepspeed
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# both tiers, tests/unit and tests/integration (processes, MPI, SLURM; CUDA tests skip without a GPU), on two
# pytest-xdist workers: a test that starts ranks spends much of its time waiting on them, and the other worker's
# test fills that time. Each integration file runs whole on one worker (tests/support/worker_groups.py). The 15
# slowest tests are listed at the end: the suite is held under 12 minutes on a 2-core machine.
TEST_WORKERS ?= 2
test: $(STAMP)
	DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --durations=15 tests/unit tests/integration

test-fast: $(STAMP)
	DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) tests/unit

demo: $(STAMP)
	bash launch/demo.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
	echo "== benchmarks/train_throughput.py"; $(PY) benchmarks/train_throughput.py --preset debug

clean:
	rm -rf $(VENV) demo_out .pytest_cache
