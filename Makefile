# cvlab — `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEVSTAMP := $(VENV)/.dev-stamp
EXP    ?= experiments/quickstart.yaml
DEMO_ARGS ?=  # e.g. DEMO_ARGS="--set train.steps=750" on a CPU without native bf16 (see README)
# Test processes: one per core, at most 4 (each imports torch: ~0.5 GiB); `make test TEST_JOBS=0` runs serially.
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)

.DEFAULT_GOAL := help
.PHONY: help install demo test lint tb bench clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-9s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --no-compile: pip byte-compiles module by module (~30 s of a fresh install); compileall on every core does the
# same in ~10 s. Compiled once here, because where PYTHONDONTWRITEBYTECODE is set (CI images, this sandbox)
# Python never writes what it compiles at import: every process recompiled torch, 1.5 s of each command.
# (compileall's exit status is ignored: a package may ship template .py files that are not Python.)
# The demo needs cvlab's own dependencies only; the test tools and optional extras (export, decoding,
# launchers) are installed on top by the first `make test`.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-compile -e .
	@$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null 2>&1 || true
	@touch $(STAMP)

$(DEVSTAMP): $(STAMP)
	$(BIN)/pip install --quiet --no-compile -e ".[dev]"
	@$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null 2>&1 || true
	@touch $(DEVSTAMP)

install: $(DEVSTAMP) ## Create .venv and install cvlab with its test tools
	@echo "cvlab installed in $(VENV): $(BIN)/cvlab --help"

demo: $(STAMP) ## Train the quickstart experiment on synthetic words, evaluate it, show how to open TensorBoard
	$(BIN)/cvlab train $(EXP) --name quickstart $(DEMO_ARGS)
	$(BIN)/cvlab eval runs/quickstart
	@echo
	@echo "Open TensorBoard with:  $(BIN)/tensorboard --logdir runs   (then http://127.0.0.1:6006)"

test: $(DEVSTAMP) ## Run the test suite (what CI runs), one pytest process per core
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist worksteal

lint: $(DEVSTAMP) ## Static checks (ruff)
	$(BIN)/ruff check cvlab tests benchmarks

tb: $(STAMP) ## Serve TensorBoard on runs/ at http://127.0.0.1:6006
	$(BIN)/tensorboard --logdir runs

bench: $(STAMP) ## Print the throughput benchmarks for this machine
	$(BIN)/python benchmarks/train_throughput.py

clean: ## Remove the environment and caches (keeps runs/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
