"""The stages a request may name: the built-ins (an explicit list), every entry point of the group
``irsflow.stages`` of the installed packages, and any registered at run time. The built-ins and the
entry points load on first use, in every process that asks (a Prefect worker's flow run included).

    stage = get_stage("DPO")              # the Stage object; unknown names raise ValueError
    settings_adapter().validate_python({"stage": "DPO", "beta": 0.2})   # the discriminated union

Adding a stage: one module (a ``StageSettings`` subclass, a ``Stage`` subclass and an instance of
it), its test, and one entry point naming that instance in the package that holds the module:

    # pyproject.toml of the package (or its dist-info's entry_points.txt)
    [project.entry-points."irsflow.stages"]
    REFSFT = "irsflow_toy_stage:REFSFT"          # the entry point's name is the stage's name

A stage of irsflow itself is one line of ``BUILTIN`` instead. ``register(stage)`` adds one in the
running process only (a worker process never sees it): for tests and notebooks.

Importing a stage module must stay light: its trainer (torch, TRL) is imported inside ``train``.
"""

from __future__ import annotations

import importlib
import logging
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Annotated, Union

from pydantic import Field, TypeAdapter

from irsflow.errors import InputError
from irsflow.stages.base import Stage

ENTRY_POINT_GROUP = "irsflow.stages"
# module -> the Stage objects it defines (attribute names); order is the order `irsflow stages` lists
BUILTIN = {
    "irsflow.stages.irs": ("IRS",),
    "irsflow.stages.onpolicy": ("ONPOLICY",),
    "irsflow.stages.preference": ("DPO", "KTO"),
    "irsflow.stages.grpo": ("GRPO",),
    "irsflow.stages.ppo": ("PPO",),
    "irsflow.stages.rm": ("RM",),
}
BUILTIN_NAMES = frozenset(n for names in BUILTIN.values() for n in names)
_stages: dict[str, Stage] = {}
_broken: dict[str, str] = {}  # stage name -> why its entry point cannot serve
log = logging.getLogger("irsflow.stages")


class StagePluginError(InputError):
    """An ``irsflow.stages`` entry point that cannot serve as a stage; the message names it. Raised when
    its stage is asked for (a request naming it fails before anything runs, and is not retried)."""


def _check(stage: object) -> Stage:
    """What every stage must be, whichever way it arrives."""
    if not isinstance(stage, Stage):
        raise TypeError(f"not a Stage object: {stage!r}")
    if not getattr(stage, "name", None) or not stage.name.isupper():
        raise ValueError(f"stage name must be an upper-case word, got {getattr(stage, 'name', None)!r}")
    field = stage.settings.model_fields.get("stage")
    if field is None or getattr(field.annotation, "__args__", ()) != (stage.name,):
        raise ValueError(f"{stage.settings.__name__}.stage must be Literal[{stage.name!r}] (the discriminator)")
    return stage


def _describe(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" of package {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point {ep.name} = {ep.value} (group {ENTRY_POINT_GROUP}{where})"


def _from_entry_point(ep: EntryPoint, taken: dict[str, str]) -> Stage:
    """Load and check one entry point; ``taken``: stage name -> the entry point that defined it."""
    if ep.name in BUILTIN_NAMES:
        raise StagePluginError(f"{_describe(ep)}: {ep.name} is a built-in stage; give the plugin's stage another name")
    if ep.name in taken:
        raise StagePluginError(
            f"{_describe(ep)}: stage {ep.name} is also defined by {taken[ep.name]}; uninstall one of the two packages"
        )
    try:
        stage = ep.load()
    except Exception as err:  # whatever a plugin's import raises, the message names the plugin
        raise StagePluginError(f"{_describe(ep)}: cannot load it: {type(err).__name__}: {err}") from err
    try:
        _check(stage)
    except (TypeError, ValueError) as err:
        raise StagePluginError(f"{_describe(ep)}: {err}") from None
    if stage.name != ep.name:
        raise StagePluginError(
            f"{_describe(ep)}: names stage {stage.name}; the entry point's name must be the stage's name"
        )
    return stage


def _load() -> None:
    """The built-ins, then every entry point of the group (once per process). An entry point that cannot
    serve is logged and remembered: asking for its stage raises its error, every other stage still works
    (one broken package must not stop every job)."""
    if _stages:
        return
    found: dict[str, Stage] = {}
    for module, names in BUILTIN.items():
        mod = importlib.import_module(module)
        for name in names:
            found[name] = getattr(mod, name)
    taken: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found[ep.name] = _from_entry_point(ep, taken)
        except StagePluginError as err:
            log.warning("%s", err)
            _broken.setdefault(ep.name, str(err))
            continue
        taken[ep.name] = _describe(ep)
    for name in _broken:
        if name not in BUILTIN_NAMES:
            found.pop(name, None)  # defined twice: neither copy is trusted
    _stages.update(found)


def register(stage: Stage, replace: bool = False) -> Stage:
    """Make ``stage`` available to requests (``"stage": stage.name``) in this process only."""
    _load()
    _check(stage)
    if stage.name in BUILTIN_NAMES:
        raise ValueError(f"stage {stage.name!r} is built in")
    if stage.name in _stages and not replace:
        raise ValueError(f"stage {stage.name!r} is already registered")
    _stages[stage.name] = stage
    settings_adapter.cache_clear()
    return stage


def unregister(name: str) -> None:
    """Remove a stage registered at run time (tests)."""
    if name in BUILTIN_NAMES:
        raise ValueError(f"stage {name!r} is built in")
    _stages.pop(name, None)
    settings_adapter.cache_clear()


def stage_names() -> list[str]:
    _load()
    return list(_stages)


def get_stage(name: str) -> Stage:
    _load()
    if name in _stages:
        return _stages[name]
    if name in _broken:
        raise StagePluginError(f"stage: {_broken[name]}")
    raise ValueError(f"stage: {name!r} is not one of {', '.join(_stages)}")


@lru_cache(maxsize=1)
def settings_adapter() -> TypeAdapter:
    """``stage_config`` as a union of every stage's settings model, discriminated by ``stage``."""
    _load()
    models = tuple(s.settings for s in _stages.values())
    union = Union[models] if len(models) > 1 else models[0]  # noqa: UP007 (built at run time)
    return TypeAdapter(Annotated[union, Field(discriminator="stage")])


def settings_fields() -> dict[str, list[str]]:
    """Each settings field name -> the stages that have it (for errors naming the right stage)."""
    _load()
    out: dict[str, list[str]] = {}
    for s in _stages.values():
        for f in s.settings.model_fields:
            out.setdefault(f, []).append(s.name)
    return out
