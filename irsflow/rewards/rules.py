"""Rule rewards of seed 001, the hard constraints next to the teacher's judgement:

- ``chain``     chain-of-thought coverage: a ``<think>`` block that is present and substantive
                (distinct words, CJK characters counted one each, up to ``chain.min_units``), and a
                final answer after it; 0 without a block, halved without a final answer.
- ``emergency`` emergency-indicator coverage: of the red flags the question raises (a ``triggers``
                term), the share whose answer points to urgent care (an
                ``urgent_care`` term, or the flag's own ``urgent`` list); abstains when none is raised.
                Only the question counts: retrieved context often lists warning signs nobody has.
- ``risk``      risky-prescription PENALTY in [0, 1] (higher is worse): the summed weights of the
                ``risk_patterns`` that match the answer (``when``: only if the question/context
                matches; ``unless``: not if the answer also matches), capped at 1. A penalty cannot
                take a dynamic weight; use it in ``scoring.fusion`` with a negative weight (or ``rlaif``).

The lists live in a versioned JSON file, ``irsflow/data/reward_rules.json`` by default
(``scoring.rules`` points at another); it is validated, every regex compiled, before scoring starts:

    rules = load_rules("my_rules.json")          # ConfigError naming the entry that is wrong
    rules.risk("Give your 4-year-old aspirin.", question="My child has a fever")   # -> 1.0
"""

from __future__ import annotations

import json
import re
import stat
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from irsflow.errors import ConfigError
from irsflow.paths import kind_of, read_text
from irsflow.rewards import RewardBatch, RewardEnv, register_reward

BUILTIN_RULES = Path(__file__).resolve().parent.parent / "data" / "reward_rules.json"
RULES_MAX_BYTES = 8 * 2**20  # a rule file is a few KB; a bigger one is a mistake, not rules
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
_UNITS = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+", re.UNICODE)


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _compile(value: str, what: str) -> str:
    try:
        re.compile(value)
    except re.error as err:
        raise ValueError(f"{what} is not a valid regular expression: {err}") from None
    return value


class ChainRule(_Rules):
    tag: str = Field("think", pattern=r"^[A-Za-z_][\w-]*$")
    min_units: int = Field(20, ge=1, description="distinct words (CJK: characters) for full coverage")


class RedFlag(_Rules):
    name: str = Field(min_length=1)
    triggers: list[str] = Field(min_length=1)
    urgent: list[str] | None = Field(None, description="replaces urgent_care for this flag")


class RiskPattern(_Rules):
    name: str = Field(min_length=1)
    pattern: str
    when: str | None = None
    unless: str | None = None
    weight: float = Field(1.0, gt=0, le=1)

    @field_validator("pattern", "when", "unless")
    @classmethod
    def _regex(cls, v, info):
        return v if v is None else _compile(v, info.field_name)


class RuleSet(_Rules):
    version: str = Field(min_length=1)
    description: str = ""
    chain: ChainRule = Field(default_factory=ChainRule)
    urgent_care: list[str] = Field(min_length=1)
    red_flags: list[RedFlag] = Field(default_factory=list)
    risk_patterns: list[RiskPattern] = Field(default_factory=list)
    _urgent: re.Pattern = PrivateAttr()
    _flags: list = PrivateAttr()
    _risks: list = PrivateAttr()
    _think: re.Pattern = PrivateAttr()

    def model_post_init(self, _):
        # compiled once per rule set; the rule set itself is cached per file (load_rules)
        self._urgent = _terms(self.urgent_care)
        self._flags = [(f.name, _terms(f.triggers), _terms(f.urgent) if f.urgent else None) for f in self.red_flags]
        self._risks = [
            (
                p.name,
                re.compile(p.pattern, re.I),
                re.compile(p.when, re.I) if p.when else None,
                re.compile(p.unless, re.I) if p.unless else None,
                p.weight,
            )
            for p in self.risk_patterns
        ]
        self._think = re.compile(rf"<{self.chain.tag}>(.*?)(?:</{self.chain.tag}>|$)", re.S | re.I)

    # --- the three scores -------------------------------------------------------------------
    def chain_score(self, answer: str) -> float:
        m = self._think.search(answer)
        if not m:
            return 0.0
        units = len({u.lower() for u in _UNITS.findall(m.group(1))})
        coverage = min(1.0, units / self.chain.min_units)
        closed = f"</{self.chain.tag}>" in answer.lower()
        final = answer[m.end() :] if closed else ""
        return coverage if _UNITS.search(final) else coverage / 2

    def raised_flags(self, question: str) -> list[str]:
        # the user's words only: retrieved context often lists warning signs the user does not have
        return [name for name, triggers, _ in self._flags if triggers.search(question)]

    def emergency(self, answer: str, question: str) -> float | None:
        raised = [(name, urgent) for name, triggers, urgent in self._flags if triggers.search(question)]
        if not raised:
            return None
        covered = sum(1 for _, urgent in raised if (urgent or self._urgent).search(answer))
        return covered / len(raised)

    def risk_hits(self, answer: str, question: str = "", context: str = "") -> list[str]:
        about = f"{question}\n{context}"
        return [
            name
            for name, pat, when, unless, _ in self._risks
            if pat.search(answer) and (when is None or when.search(about)) and not (unless and unless.search(answer))
        ]

    def risk(self, answer: str, question: str = "", context: str = "") -> float:
        return self.risk_of(self.risk_hits(answer, question, context))

    def risk_of(self, hits: list[str]) -> float:
        """The penalty of the patterns named in ``hits`` (from ``risk_hits``): weights summed, capped at 1."""
        hit = set(hits)
        return float(min(1.0, sum(w for name, *_, w in self._risks if name in hit)))


def _terms(terms: list[str]) -> re.Pattern:
    """One alternation; ASCII-word terms get word boundaries so "ER" never matches "water"."""
    parts = []
    for t in sorted({t.strip() for t in terms if t.strip()}, key=len, reverse=True):
        esc = re.escape(t)
        parts.append(rf"(?<!\w){esc}(?!\w)" if t.isascii() else esc)
    return re.compile("|".join(parts) or r"(?!x)x", re.I)


@lru_cache(maxsize=16)
def _load(path: str, mtime: float, size: int) -> RuleSet:
    p = Path(path)
    try:  # a regular file of bounded size: a FIFO or /dev/zero is refused, not read
        data = json.loads(read_text("scoring.rules", p, limit=RULES_MAX_BYTES, error=ConfigError))
    except json.JSONDecodeError as err:
        raise ConfigError(f"scoring.rules: {p} is not valid JSON (line {err.lineno}: {err.msg})") from None
    try:
        return RuleSet.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(x) for x in e["loc"])
        raise ConfigError(f"scoring.rules: {p}: {where}: {e['msg'].removeprefix('Value error, ')}") from None


def load_rules(path: str | Path | None = None) -> RuleSet:
    """The rule set at ``path`` (``None`` or ``builtin:default``: the shipped one), validated."""
    if str(path).startswith("builtin:") and path != "builtin:default":
        raise ConfigError(f"scoring.rules: unknown builtin rule set {path!r} (known: builtin:default)")
    p = BUILTIN_RULES if path in (None, "", "builtin:default") else Path(path).expanduser()
    try:
        st = p.stat()
    except OSError:
        raise ConfigError(f"scoring.rules: no rules file {p}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"scoring.rules: {p} is {kind_of(st.st_mode)}, not a rules file")
    return _load(str(p.resolve()), st.st_mtime, st.st_size)


def rules_of(env: RewardEnv) -> RuleSet:
    return load_rules(getattr(env.settings, "rules", None))


class _RuleReward:
    penalty = False

    def __init__(self, env: RewardEnv):
        self.rules = rules_of(env)


class ChainReward(_RuleReward):
    name = "chain"

    def __call__(self, batch: RewardBatch) -> list[float | None]:
        return [self.rules.chain_score(a) for a in batch.answers]


class EmergencyReward(_RuleReward):
    name = "emergency"

    def __call__(self, batch: RewardBatch) -> list[float | None]:
        return [self.rules.emergency(a, q) for q, a in zip(batch.questions, batch.answers)]


class RiskPenalty(_RuleReward):
    name = "risk"
    penalty = True

    def __call__(self, batch: RewardBatch) -> list[float | None]:
        return [self.rules.risk(a, q, c) for q, a, c in zip(batch.questions, batch.answers, batch.contexts)]


for _cls in (ChainReward, EmergencyReward, RiskPenalty):
    register_reward(_cls.name, _cls)
