# Quick start: `make bench` (set up + the main job) and `make test` (set up + the CPU test suite).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED_DATA := $(abspath ../shared/data)
export WSBENCH_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)
ARGS ?=

.PHONY: setup bench test bench-perf bench-scale leaderboard clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch torchvision
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $@

# The main job: NeRN on the cifar10_resnet zoo (paper preset on a GPU, `quick` preset on CPU).
bench: setup
	$(BIN)/python run_bench.py --method nern --zoo cifar10_resnet $(ARGS)

# The CPU test suite (slow and GPU tests excluded; `make test ARGS="-m slow"` runs the slow ones).
test: setup
	$(BIN)/python -m pytest -q $(ARGS)

# pytest-benchmark performance suite (prints ratios against references timed in the same run), then
# each heavy path's GFLOP/s as a fraction of this machine's GEMM rate -> leaderboards/perf/cpu.{json,md}.
bench-perf: setup
	$(BIN)/python -m pytest -q tests/bench -o addopts="" -m "not gpu" $(ARGS)  # addopts skip benchmarks: cleared
	$(BIN)/python scripts/perf_cpu.py --out leaderboards/perf/cpu

# Time and peak memory vs number of networks (zoo building, encoder epochs), with projections for the
# full zoos -> leaderboards/perf/scale_cpu.{json,md,png} (about 10 minutes on 2 cores).
bench-scale: setup
	$(BIN)/python scripts/scale_curves.py --out leaderboards/perf/scale_cpu

leaderboard: setup
	$(BIN)/python run_bench.py leaderboard

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
