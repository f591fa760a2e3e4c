"""The reward contract and registry.

Every scorer - embedding, reranker, rule, teacher, multiple-choice - is a callable that takes a
``RewardBatch`` and returns one ``float`` per item, or ``None`` to abstain (for example
``faith`` when a question has no context). IRS, GRPO and pair-building consume the same objects.

    from irsflow.rewards import RewardBatch, build_rewards, reward_env
    env = reward_env(req.scoring, teacher=req.teacher, teacher_api_key=key, usage_path=usage_csv)
    rewards = build_rewards(["rel", "conc"], env)
    scores = rewards["conc"](RewardBatch(questions=[...], answers=[...], contexts=[...]))

New rewards plug in with ``register_reward(name, factory)`` or, from another package, an entry
point in the group ``irsflow.rewards`` naming a factory ``f(env) -> Reward``. The built-ins are
registered by importing the modules of ``BUILTIN_MODULES`` (text, rules, fusion, tutor, rm);
``known_rewards()`` lists every name.

Layer 2: this package may import itself and the lower layers only - the base modules
(``irsflow.errors``, ``store``, ``dataset``, ``retry``, ``models``) and ``irsflow.teacher`` - never
``irsflow.training`` or anything above it; torch, transformers and peft load inside functions, so
validating a request's rewards stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from typing import Protocol


@dataclass(frozen=True)
class RewardBatch:
    """Parallel lists, one entry per candidate. ``contexts`` is the joined top-k context text
    ("" when the question has none)."""

    questions: Sequence[str]
    answers: Sequence[str]
    contexts: Sequence[str] = ()
    references: Sequence[str | None] = ()
    meta: Sequence[dict] = ()

    def __post_init__(self):
        n = len(self.answers)
        for name, fill in (("questions", ""), ("contexts", ""), ("references", None), ("meta", None)):
            seq = getattr(self, name)
            if len(seq) == 0 and n:
                object.__setattr__(self, name, [fill] * n)
            elif len(seq) != n:
                raise ValueError(f"RewardBatch.{name}: {len(seq)} items, answers has {n}")

    def __len__(self) -> int:
        return len(self.answers)


class Reward(Protocol):
    name: str

    def __call__(self, batch: RewardBatch) -> list[float | None]: ...


RewardFactory = Callable[["RewardEnv"], Reward]
_REGISTRY: dict[str, RewardFactory] = {}


def register_reward(name: str, factory: RewardFactory) -> None:
    _REGISTRY[name] = factory


def is_penalty(name: str) -> bool:
    """A penalty (higher is worse, e.g. ``risk``) may only enter a fusion with a negative weight."""
    known_rewards()
    return bool(getattr(_REGISTRY.get(name), "penalty", False))


def _entry_point_factories() -> dict[str, RewardFactory]:
    return {ep.name: ep for ep in entry_points(group="irsflow.rewards")}  # loaded lazily


# The modules that register the built-in rewards when imported; none imports a trainer, torch or a
# model at import time, so checking a request's reward names stays light.
BUILTIN_MODULES = (
    "irsflow.rewards.text",
    "irsflow.rewards.rules",
    "irsflow.rewards.fusion",
    "irsflow.rewards.tutor",
    "irsflow.rewards.rm",
)


def _register_builtins() -> None:
    for module in BUILTIN_MODULES:
        import_module(module)


def known_rewards() -> list[str]:
    """Every reward name: the built-ins, what ``register_reward`` added, and entry-point plugins."""
    _register_builtins()
    return sorted(set(_REGISTRY) | set(_entry_point_factories()))


@dataclass
class RewardEnv:
    """What reward factories may use: the similarity backend and scoring settings.
    Heavy models load lazily, once per env (one env per scoring phase)."""

    settings: object = None  # irsflow.config.ScoringConfig
    similarity: object = None  # irsflow.rewards.similarity.Similarity
    extras: dict = field(default_factory=dict)


def reward_env(scoring, *, teacher=None, teacher_api_key: str | None = None, usage_path=None) -> RewardEnv:
    """The env every scoring phase builds: ``scoring``'s settings and its similarity backend; with a
    ``teacher`` (``TeacherSettings``), ``extras`` carries it with ``teacher_api_key`` applied and the
    file its calls are billed to (``usage_path``, the job's ``teacher_usage.csv``)."""
    from irsflow.rewards.similarity import load_similarity

    env = RewardEnv(settings=scoring, similarity=load_similarity(scoring))
    if teacher is not None:
        env.extras.update(teacher=teacher.with_key(teacher_api_key), teacher_usage_path=usage_path)
    return env


def build_rewards(names: Sequence[str], env: RewardEnv) -> dict[str, Reward]:
    """Instantiate rewards by name, in order. Unknown names raise KeyError naming them."""
    known_rewards()
    eps = _entry_point_factories()
    out: dict[str, Reward] = {}
    for name in names:
        if name in _REGISTRY:
            out[name] = _REGISTRY[name](env)
        elif name in eps:
            out[name] = eps[name].load()(env)
        else:
            raise KeyError(f"unknown reward {name!r} (known: {', '.join(known_rewards())})")
    return out
