"""The environments on this machine hold exactly what their locks pin: the project's (.venv, from
locks/cpu.txt, locks/demo-model.txt and locks/lint.txt) and each outside service's (.venvs/NAME, from
infra/locks/NAME.txt). A package the lock does not name, or a version it does not pin, fails here:
the proof that `make install` and `make services` installed from the locks, not from the index.

Run: ``.venv/bin/python -m pytest -q tests/ops/test_locked_envs.py`` (after `make install services`)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.real_services import service_venv
from tests.unit.test_locks import ROOT, lock

SERVICES = {
    "vllm": "infra/install_vllm_cpu.sh",
    "label-studio": "infra/install_label_studio.sh",
    "dockertools": "infra/install_docker_tools.sh",
}


def difference(venv: Path, names: list[str], keep: set[str] = frozenset()) -> list[str]:
    pinned = {n: v for name in names for n, v in lock.read_lock(ROOT / lock.ENVS[name].lock)[1].items()}
    have = lock.installed(venv)
    out = [f"{n}=={have[n]} is not in the lock" for n in sorted(set(have) - set(pinned) - keep)]
    out += [
        f"{n}: installed {have.get(n, 'nothing')}, locked {v}" for n, v in sorted(pinned.items()) if have.get(n) != v
    ]
    return out


def test_the_project_environment_is_its_lock():
    venv = Path(sys.executable).parent.parent
    if not (venv / ".installed").exists():
        pytest.skip(f"{venv} was not built by `make install`")
    assert difference(venv, ["cpu", "demo-model", "lint"], keep={"irsflow"}) == []


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_environment_is_its_lock(name):
    venv = service_venv(name, SERVICES[name]).parent
    assert (venv / ".installed").read_text().strip() == lock.stamp([lock.ENVS[name]])
    assert difference(venv, [name]) == []
