#!/usr/bin/env bash
# Install a real Label Studio server into its own virtualenv for the round-trip test
# (tests/ops/test_label_studio_real.py), exactly as infra/locks/label-studio.txt pins it: its pins
# (Django, numpy) clash with ours. Idempotent; never fails its caller: when it cannot install it
# prints why the test will skip and exits 0. Run by hand: infra/install_label_studio.sh (about 1 GB).
# Env: see infra/_venv_service.sh. Another version: edit infra/locks/label-studio.in, then make lock LOCK=label-studio.
NAME=label-studio
# not `label-studio --version`: it prints the version, then starts a server on 0.0.0.0:8080
CHECK='python -c "import label_studio; print(label_studio.__version__)"'
source "$(dirname "$0")/_venv_service.sh"
