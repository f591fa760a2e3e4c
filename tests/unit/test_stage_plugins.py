"""Stages from other packages: the ``irsflow.stages`` entry-point group, as a fresh process sees it (a
Prefect worker's flow run is one). A package's dist-info folder on ``PYTHONPATH`` is what ``pip install``
leaves; each case writes one into ``tmp_path`` beside the toy stage's module."""

import os
import subprocess
import sys
import textwrap

import pytest

from irsflow.stages import register
from irsflow.stages.irs import IRS
from tests.support.local import ROOT

TOY_DIR = ROOT / "tests" / "support" / "toy_stage_pkg"
SHOW = "from irsflow.stages import stage_names, get_stage; print(stage_names()); print(get_stage('REFSFT').writes)"


def fresh_process(code: str, *paths) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths)}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def plugin(tmp_path, entry_points: str, module: str | None = None):
    """A package ``irsflow-plugin 0.1`` under ``tmp_path``: its entry_points.txt and, if given, its module."""
    info = tmp_path / "irsflow_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: irsflow-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[irsflow.stages]\n" + entry_points + "\n")
    if module is not None:
        (tmp_path / "irsflow_plugin.py").write_text(textwrap.dedent(module))
    return tmp_path


def test_a_fresh_process_finds_a_stage_by_its_entry_point_alone():
    out = fresh_process(
        SHOW + "\nfrom irsflow.config import parse_request\n"
        "print(parse_request({'stage': 'REFSFT', 'stage_config': {'repeat': 2}}).stage_config.repeat)",
        TOY_DIR,
    )
    assert out.returncode == 0, out.stderr
    names, writes, repeat = out.stdout.splitlines()
    assert names == "['IRS', 'ONPOLICY', 'DPO', 'KTO', 'GRPO', 'PPO', 'RM', 'REFSFT']"  # built-ins first
    assert writes == "{'TRAINING': ('ref_rows.jsonl',)}" and repeat == "2"
    without = fresh_process(SHOW)
    assert without.returncode != 0 and "'REFSFT' is not one of IRS, ONPOLICY" in without.stderr


def ask(name: str) -> str:
    """Code for a fresh process: every stage name, the toy stage, then the stage ``name`` (built-ins work
    whatever a plugin does)."""
    return SHOW + f"\nprint(get_stage('IRS').name)\nprint(get_stage({name!r}).name)"


def test_an_entry_point_that_does_not_load_is_named_when_its_stage_is_asked_for(tmp_path):
    out = fresh_process(
        ask("BROKEN"), TOY_DIR, plugin(tmp_path, "BROKEN = irsflow_plugin:BROKEN", "import no_such_module\n")
    )
    why = (
        "entry point BROKEN = irsflow_plugin:BROKEN (group irsflow.stages of package irsflow-plugin 0.1): "
        "cannot load it: ModuleNotFoundError: No module named 'no_such_module'"
    )
    assert out.returncode != 0 and f"StagePluginError: stage: {why}" in out.stderr, out.stderr
    names, writes, irs = out.stdout.splitlines()  # the other stages loaded, built-ins and the toy one
    assert names == "['IRS', 'ONPOLICY', 'DPO', 'KTO', 'GRPO', 'PPO', 'RM', 'REFSFT']" and irs == "IRS"
    assert why in out.stderr.split("Traceback")[0]  # logged as a warning when the stages loaded


@pytest.mark.parametrize(
    "line, asked, why",
    [
        ("IRS = irsflow_toy_stage:REFSFT", None, "IRS is a built-in stage; give the plugin's stage another name"),
        (
            "REFSFT = irsflow_plugin:REFSFT",
            "REFSFT",
            "stage REFSFT is also defined by entry point REFSFT = irsflow_toy_stage:REFSFT",
        ),
        (
            "OTHER = irsflow_toy_stage:REFSFT",
            "OTHER",
            "names stage REFSFT; the entry point's name must be the stage's name",
        ),
        ("NOTSTAGE = irsflow_plugin:NOTSTAGE", "NOTSTAGE", "not a Stage object: 'a string'"),
    ],
)
def test_an_entry_point_that_clashes_or_is_no_stage_is_refused(tmp_path, line, asked, why):
    module = "from irsflow_toy_stage import REFSFT\nNOTSTAGE = 'a string'\n"
    out = fresh_process(
        SHOW.split(";")[0] + "; print(get_stage('IRS').name)" + (f"; print(get_stage({asked!r}))" if asked else ""),
        TOY_DIR,
        plugin(tmp_path, line, module),
    )
    assert why in out.stderr, out.stderr  # named, as a warning or as the error
    if asked is None:  # a plugin cannot take a built-in's name: the built-in stays, the plugin is refused
        assert out.returncode == 0 and out.stdout.strip() == "IRS", out.stderr
    else:
        assert out.returncode != 0 and "StagePluginError" in out.stderr and out.stdout.strip() == "IRS", out.stderr


def test_register_refuses_to_replace_a_built_in_stage():
    with pytest.raises(ValueError, match="stage 'IRS' is built in"):
        register(IRS, replace=True)
