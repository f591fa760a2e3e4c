#!/usr/bin/env bash
# Install a real Label Studio server into its own virtualenv for the round-trip test
# (tests/ops/test_label_studio_real.py): its pins (Django, numpy) clash with ours. Idempotent;
# never fails its caller: when it cannot install it prints why the test will skip and exits 0.
# Run by hand: infra/install_label_studio.sh (about 1 GB).
# Env: see infra/_venv_service.sh; LABEL_STUDIO_VERSION (default 1.23.2).
NAME=label-studio
# not `label-studio --version`: it prints the version, then starts a server on 0.0.0.0:8080
CHECK='python -c "import label_studio; print(label_studio.__version__)"'
install_into() {
    pipq --upgrade pip && pipq "label-studio==${LABEL_STUDIO_VERSION:-1.23.2}"
}
source "$(dirname "$0")/_venv_service.sh"
