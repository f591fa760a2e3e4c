"""The import rule: a package of ``irsflow`` imports only itself and the layers below it.

The layers, bottom to top, are ``LAYERS`` below (the README's layout picture draws the same list).
Every ``.py`` file under ``irsflow/`` is read with ``ast`` (nothing is imported, so the check is
quick and needs no GPU, models or Prefect) and every import of an irsflow module is checked:
``import``/``from ... import``, absolute or relative, at module level or inside a function or
method, and under ``if TYPE_CHECKING:`` too (an annotation naming a higher layer is still a dependency on
it: a module typed against ``irsflow.config`` could not be read or changed without it). The library
never imports the Prefect shell or the CLI above it (``prefect``, ``tasks``, ``flows``, ``deployments``, ``cli``), and
every module of ``irsflow`` belongs to a layer.

Run: ``.venv/bin/python -m pytest -q tests/unit/test_import_rule.py``
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "irsflow"

# Bottom to top. A name is a top-level module or package of irsflow; a module inside a package
# belongs to that package's layer. The package root itself (``irsflow/__init__.py``, the version
# only) is base.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("", "errors", "store", "paths", "dataset", "retry", "models")),
    ("teacher", ("teacher",)),
    ("rewards", ("rewards",)),
    ("codebook", ("codebook",)),
    ("feedback", ("feedback",)),
    ("settings", ("settings",)),
    ("loop", ("loop",)),
    ("training", ("training",)),
    ("stages", ("stages",)),
    ("config", ("config",)),
    ("labelling", ("labelling",)),
    ("evals", ("evals",)),
    ("release", ("release",)),
    ("jobs", ("jobs",)),
]

# The Prefect shell sits above the library; the library never reaches up into it.
SHELL = ("prefect", "tasks", "flows", "deployments", "cli")

_LAYER_OF: dict[str, int] = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}


def layer_of(module: str) -> int | None:
    """The layer index of a dotted irsflow module name, or None when its top-level name is unlisted."""
    parts = module.split(".")
    assert parts[0] == PACKAGE, module
    return _LAYER_OF.get(parts[1] if len(parts) > 1 else "")


def describe(layer: int) -> str:
    return f"layer {layer} {LAYERS[layer][0]}"


@dataclass(frozen=True)
class Import:
    path: str  # repository-relative, e.g. irsflow/loop/phases.py
    line: int
    importer: str  # the importing module, e.g. irsflow.loop.phases
    module: str  # absolute dotted name imported, e.g. irsflow.jobs.resume or prefect


def module_name(path: Path, package_dir: Path) -> str:
    """``irsflow/loop/phases.py`` -> ``irsflow.loop.phases``; ``irsflow/loop/__init__.py`` -> ``irsflow.loop``."""
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute dotted module a ``from`` import names (``from ..x import y`` -> ``<parent>.x``)."""
    if not node.level:
        return node.module or ""
    # The package a relative import is relative to: the module itself for an __init__.py.
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_in(source: str, path: str, module: str, is_package: bool, known: set[str]) -> list[Import]:
    """Every import in ``source`` that counts, as absolute module names.

    ``from a import b`` names ``a.b`` when that is a known module (a submodule), else ``a``.
    ``importlib.import_module("x")`` with a literal name counts like ``import x``."""
    found: list[Import] = []

    def add(line: int, target: str) -> None:
        imp = Import(path, line, module, target)
        if imp not in found:  # `from a import b, c` is one import of a
            found.append(imp)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(node, module, is_package)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                add(node.lineno, sub if sub in known else target)
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
            )
        ):
            add(node.lineno, node.args[0].value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source, filename=path))
    return found


def scan(package_dir: Path) -> tuple[dict[str, str], list[Import]]:
    """(module name -> repository-relative path, every counted import) for a package directory."""
    files = sorted(p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts)
    modules = {module_name(p, package_dir): p.relative_to(package_dir.parent).as_posix() for p in files}
    # Package directories without an __init__.py (namespace packages) are modules too.
    for p in files:
        for parent in p.relative_to(package_dir.parent).parents:
            if parent.parts:
                modules.setdefault(".".join(parent.parts), parent.as_posix() + "/")
    known = set(modules)
    found: list[Import] = []
    for p in files:
        name = module_name(p, package_dir)
        found += imports_in(p.read_text(encoding="utf-8"), modules[name], name, p.name == "__init__.py", known)
    return modules, found


def _ours(imp: Import) -> bool:
    return imp.module == PACKAGE or imp.module.startswith(PACKAGE + ".")


def unplaced(modules: dict[str, str], found: list[Import]) -> list[str]:
    """Modules in no layer, and imports of irsflow names that neither exist nor have a layer."""
    problems = [
        f"{path}: module {name} is in no layer; add its top-level name to LAYERS in "
        f"tests/unit/test_import_rule.py (and to the README's layout picture)"
        for name, path in sorted(modules.items())
        if layer_of(name) is None
    ]
    problems += [
        f"{imp.path}:{imp.line} imports {imp.module}, which does not exist and is in no layer"
        for imp in found
        if _ours(imp) and layer_of(imp.module) is None and imp.module not in modules
    ]
    return problems


def upward(found: list[Import]) -> list[str]:
    """Each import of a higher layer, as ``irsflow/x/y.py:LINE imports irsflow.z (layer K above layer J)``."""
    problems = []
    for imp in found:
        if not _ours(imp):
            continue
        here, there = layer_of(imp.importer), layer_of(imp.module)
        if here is not None and there is not None and there > here:
            problems.append(f"{imp.path}:{imp.line} imports {imp.module} ({describe(there)} above {describe(here)})")
    return problems


def shell(found: list[Import]) -> list[str]:
    return [
        f"{imp.path}:{imp.line} imports {imp.module} (the library never imports the Prefect shell)"
        for imp in found
        if imp.module.split(".")[0] in SHELL
    ]


def _fail_listing(title: str, problems: list[str]) -> None:
    # pytrace=False: the list is the whole message, without a dump of the scanned tree.
    if problems:
        pytest.fail(f"{title} ({len(problems)}):\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def tree():
    return scan(ROOT / PACKAGE)


def test_every_module_belongs_to_a_layer(tree):
    modules, found = tree
    _fail_listing("irsflow modules outside the layer list", unplaced(modules, found))


def test_no_package_imports_a_higher_layer(tree):
    _, found = tree
    _fail_listing("imports of a higher layer (a package may import only itself and lower layers)", upward(found))


def test_the_library_never_imports_the_prefect_shell(tree):
    _, found = tree
    _fail_listing("irsflow imports of the Prefect shell", shell(found))


# The checker itself, on a small made-up package: a rule that silently sees nothing would pass.


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / PACKAGE


def test_the_checker_finds_every_kind_of_import(tmp_path):
    package = _write(
        tmp_path,
        {
            "irsflow/__init__.py": "",
            "irsflow/errors.py": "import cli.main\n",
            "irsflow/teacher/__init__.py": "from . import client\n",
            "irsflow/teacher/client.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from irsflow.jobs import job\n"  # line 3: annotations only, still counted
                "else:\n"
                "    import irsflow.release.registry\n"  # line 5
                "def f():\n"
                "    from ..loop.phases import run_score\n"  # line 7: relative, inside a function
                "    from .. import codebook\n"  # line 8: a sibling package by name
                "    import importlib\n"
                "    importlib.import_module('prefect')\n"  # line 10
                "from ..errors import IrsflowError\n"  # lower: fine
                "from irsflow import teacher\n"  # itself: fine
            ),
            "irsflow/loop/phases.py": "",
            "irsflow/codebook/store.py": "",
            "irsflow/jobs/job.py": "",
            "irsflow/release/registry.py": "",
            "irsflow/newthing.py": "from irsflow.nothere import x\n",
        },
    )
    modules, found = scan(package)
    assert upward(found) == [
        "irsflow/teacher/client.py:3 imports irsflow.jobs.job (layer 13 jobs above layer 1 teacher)",
        "irsflow/teacher/client.py:5 imports irsflow.release.registry (layer 12 release above layer 1 teacher)",
        "irsflow/teacher/client.py:7 imports irsflow.loop.phases (layer 6 loop above layer 1 teacher)",
        "irsflow/teacher/client.py:8 imports irsflow.codebook (layer 3 codebook above layer 1 teacher)",
    ]
    assert shell(found) == [
        "irsflow/errors.py:1 imports cli.main (the library never imports the Prefect shell)",
        "irsflow/teacher/client.py:10 imports prefect (the library never imports the Prefect shell)",
    ]
    problems = unplaced(modules, found)
    assert len(problems) == 2
    assert problems[0].startswith(
        "irsflow/newthing.py: module irsflow.newthing is in no layer; add its top-level name to LAYERS"
    )
    assert problems[1] == "irsflow/newthing.py:1 imports irsflow.nothere, which does not exist and is in no layer"
