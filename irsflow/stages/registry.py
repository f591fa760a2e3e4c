"""The stages a request may name: the built-ins (an explicit list, imported on first use) plus any
registered at run time.

    stage = get_stage("DPO")              # the Stage object; unknown names raise ValueError
    register(MyStage())                   # a new stage: one module, one call (see the README)
    settings_adapter().validate_python({"stage": "DPO", "beta": 0.2})   # the discriminated union

Importing a stage module must stay light: its trainer (torch, TRL) is imported inside ``train``.
"""
from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Annotated, Union

from pydantic import Field, TypeAdapter

from irsflow.stages.base import Stage

# module -> the Stage objects it defines (attribute names); order is the order `irsflow stages` lists
BUILTIN = {
    "irsflow.stages.irs": ("IRS",),
    "irsflow.stages.onpolicy": ("ONPOLICY",),
    "irsflow.stages.preference": ("DPO", "KTO"),
    "irsflow.stages.grpo": ("GRPO",),
    "irsflow.stages.ppo": ("PPO",),
    "irsflow.stages.rm": ("RM",),
}
_stages: dict[str, Stage] = {}


def _load_builtins() -> None:
    if _stages:
        return
    for module, names in BUILTIN.items():
        mod = importlib.import_module(module)
        for name in names:
            _stages.setdefault(name, getattr(mod, name))


def register(stage: Stage, replace: bool = False) -> Stage:
    """Make ``stage`` available to requests (``"stage": stage.name``) and to the flow."""
    _load_builtins()
    if not getattr(stage, "name", None) or not stage.name.isupper():
        raise ValueError(f"stage name must be an upper-case word, got {getattr(stage, 'name', None)!r}")
    if stage.name in _stages and not replace:
        raise ValueError(f"stage {stage.name!r} is already registered")
    field = stage.settings.model_fields.get("stage")
    if field is None or getattr(field.annotation, "__args__", ()) != (stage.name,):
        raise ValueError(f"{stage.settings.__name__}.stage must be Literal[{stage.name!r}] (the discriminator)")
    _stages[stage.name] = stage
    settings_adapter.cache_clear()
    return stage


def unregister(name: str) -> None:
    """Remove a stage registered at run time (tests)."""
    if name in {n for names in BUILTIN.values() for n in names}:
        raise ValueError(f"stage {name!r} is built in")
    _stages.pop(name, None)
    settings_adapter.cache_clear()


def stage_names() -> list[str]:
    _load_builtins()
    return list(_stages)


def get_stage(name: str) -> Stage:
    _load_builtins()
    try:
        return _stages[name]
    except KeyError:
        raise ValueError(f"stage: {name!r} is not one of {', '.join(_stages)}") from None


@lru_cache(maxsize=1)
def settings_adapter() -> TypeAdapter:
    """``stage_config`` as a union of every stage's settings model, discriminated by ``stage``."""
    _load_builtins()
    models = tuple(s.settings for s in _stages.values())
    union = Union[models] if len(models) > 1 else models[0]  # noqa: UP007 (built at run time)
    return TypeAdapter(Annotated[union, Field(discriminator="stage")])


def settings_fields() -> dict[str, list[str]]:
    """Each settings field name -> the stages that have it (for errors naming the right stage)."""
    _load_builtins()
    out: dict[str, list[str]] = {}
    for s in _stages.values():
        for f in s.settings.model_fields:
            out.setdefault(f, []).append(s.name)
    return out
