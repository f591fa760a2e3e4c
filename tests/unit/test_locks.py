"""Every environment installs from a lock that matches its inputs (infra/lock.py).

A lock is stale when pyproject.toml's dependencies, constraints.txt or an ``.in`` file changed
since it was resolved, or when one of its pins no longer meets an input requirement: the check
names the lock and the command that re-resolves it. The environments actually installed are
compared with their locks in tests/ops/test_locked_envs.py.

Run: ``.venv/bin/python -m pytest -q tests/unit/test_locks.py``
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_lock_module(root: Path = ROOT):
    spec = importlib.util.spec_from_file_location(f"irsflow_lock_{id(root)}", root / "infra" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    module.ROOT = root
    return module


lock = load_lock_module()


@pytest.mark.parametrize("name", sorted(lock.ENVS))
def test_every_lock_matches_its_inputs(name):
    assert lock.problems(lock.ENVS[name]) == []


@pytest.mark.parametrize("name", sorted(lock.ENVS))
def test_every_locked_package_is_pinned_exactly_with_a_hash(name):
    recorded, pins, unhashed = lock.read_lock(ROOT / lock.ENVS[name].lock)
    assert recorded and pins and not unhashed
    assert all(version[0].isdigit() for version in pins.values())


def test_the_cpu_lock_has_cpu_torch_and_the_gpu_lock_cuda_torch():
    cpu = lock.read_lock(ROOT / "locks/cpu.txt")[1]
    gpu = lock.read_lock(ROOT / "locks/gpu.txt")[1]
    assert cpu["torch"].endswith("+cpu") and not any(n.startswith("nvidia-") for n in cpu)
    assert "+" not in gpu["torch"] and "unsloth" in gpu and "unsloth" not in cpu
    # the two agree on everything they share but torch's build and what unsloth moves
    assert cpu["prefect"] == gpu["prefect"] and cpu["transformers"] == gpu["transformers"]


def test_label_studio_is_locked_below_sentry_sdk_3():
    pins = lock.read_lock(ROOT / "infra/locks/label-studio.txt")[1]
    assert int(pins["sentry-sdk"].split(".")[0]) < 3


def test_vllm_lock_leaves_out_the_cuda_vision_packages():
    pins = lock.read_lock(ROOT / "infra/locks/vllm.txt")[1]
    assert pins["torch"].endswith("+cpu")
    assert not {"torchvision", "torchaudio", "torchcodec"} & set(pins)


def _copy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for rel in ["pyproject.toml", "constraints.txt", "locks", "infra/locks", "infra/lock.py"]:
        src = ROOT / rel
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return root


def test_an_edited_input_makes_the_lock_stale_and_the_check_fails(tmp_path):
    root = _copy_tree(tmp_path)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"numpy",', '"numpy", "rich-argparse",'))
    copy = load_lock_module(root)
    found = copy.problems(copy.ENVS["cpu"])
    assert any("locks/cpu.txt: stale" in p and "make lock LOCK=cpu" in p for p in found), found
    assert any("rich-argparse is required" in p for p in found), found
    assert copy.problems(copy.ENVS["vllm"]) == []  # the service locks do not read pyproject.toml
    # the command-line check exits 1 naming it, and installing from it is refused
    run = subprocess.run([sys.executable, str(root / "infra/lock.py"), "check"], capture_output=True, text=True)
    assert run.returncode == 1 and "locks/cpu.txt: stale" in run.stderr
    refused = subprocess.run(
        [sys.executable, str(root / "infra/lock.py"), "install", str(tmp_path / "venv"), "cpu"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "does not match its inputs" in refused.stderr
    assert not (tmp_path / "venv").exists()


def test_a_pin_that_breaks_an_input_requirement_is_named(tmp_path):
    root = _copy_tree(tmp_path)
    path = root / "infra/locks/label-studio.txt"
    text = path.read_text()
    old = next(line for line in text.split("\n") if line.startswith("sentry-sdk=="))
    path.write_text(text.replace(old, "sentry-sdk==3.0.1 \\"))
    copy = load_lock_module(root)
    found = copy.problems(copy.ENVS["label-studio"])
    assert found == [
        "infra/locks/label-studio.txt: sentry-sdk==3.0.1 does not satisfy 'sentry-sdk<3'; "
        "re-resolve it on purpose: make lock LOCK=label-studio"
    ]


def test_an_unpinned_or_unhashed_line_is_refused(tmp_path):
    root = _copy_tree(tmp_path)
    path = root / "locks/demo-model.txt"
    path.write_text(path.read_text() + "requests>=2\n")
    copy = load_lock_module(root)
    assert copy.problems(copy.ENVS["demo-model"]) == ["locks/demo-model.txt: not an exact pin: 'requests>=2'"]
    path.write_text(path.read_text().replace("requests>=2\n", "requests==2.32.0\n"))
    assert copy.problems(copy.ENVS["demo-model"]) == ["locks/demo-model.txt: pinned without a hash: requests"]
