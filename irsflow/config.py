"""The one request schema: the body of ``POST /api/train`` (seed 000 section 4.1) plus
``dataset`` and ``seed``.

Defaults live here and only here; shipped request files under ``configs/`` hold values.
Validation is strict (unknown keys are rejected) and happens before any model loads:

    from irsflow.config import load_request
    req = load_request("configs/demo.json")       # raises ConfigError naming the field

``ConfigError`` messages name the field path, e.g. ``irs_config.n_candidates: must be >= 2``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from irsflow.errors import ConfigError
from irsflow.stage_config import Stage, StageConfig
from irsflow.teacher.client import TeacherConfig

EMBEDDED_MODEL = "builtin:smollm2-135m-instruct"
DEMO_DATASET = "builtin:demo"
DEFAULT_SYSTEM_PROMPT = ("You are a helpful assistant. Answer the question concisely using the context "
                         "when it is relevant.")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DWConfig(_Strict):
    """Dynamic reward weights (seed 000 section 3.2). The keys of ``initial_weights`` choose
    which rewards score the candidates."""

    history_window: int = Field(5, ge=2, description="Iterations used for each reward's slope.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature over -slope.")
    initial_weights: dict[str, float] = Field(
        default_factory=lambda: {"rel": 1.0, "faith": 1.0, "conc": 0.5},
        description="Reward name -> starting weight. Names: see `irsflow rewards`.",
    )
    momentum: float = Field(0.8, ge=0, le=1, description="Share of the old weight kept per update.")

    @field_validator("initial_weights")
    @classmethod
    def _known_rewards(cls, value: dict[str, float]) -> dict[str, float]:
        from irsflow.rewards import known_rewards

        if not value:
            raise ValueError("needs at least one reward")
        unknown = sorted(set(value) - set(known_rewards()))
        if unknown:
            raise ValueError(f"unknown reward {unknown[0]!r} (known: {', '.join(known_rewards())})")
        from irsflow.rewards import is_penalty

        penalties = [k for k in value if is_penalty(k)]
        if penalties:
            raise ValueError(f"{penalties[0]!r} is a penalty (higher is worse): use it in scoring.fusion "
                             "with a negative weight, or use the fused reward 'rlaif'")
        bad = [k for k, w in value.items() if not (w >= 0)]
        if bad:
            raise ValueError(f"weight of {bad[0]!r} must be >= 0")
        if sum(value.values()) <= 0:
            raise ValueError("weights must not all be 0")
        return value


class Sampling(_Strict):
    """Sampling settings recorded with every generated candidate."""

    temperature: float = Field(0.9, gt=0, le=5)
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0 disables top-k filtering.")


class LoraSettings(_Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class IRSConfig(_Strict):
    n_iterations: int = Field(3, ge=1)
    n_candidates: int = Field(4, ge=2, description="Candidates sampled per question.")
    batch_size: int = Field(2, ge=1, description="SFT per-device batch size.")
    learning_rate: float = Field(2e-5, gt=0, lt=1)
    max_new_tokens: int = Field(256, ge=1, le=8192)
    load_in_4bit: bool = Field(
        False, description="bitsandbytes NF4 weights for generate and SFT. CUDA only: refused on CPU."
    )
    dw_config: DWConfig = Field(default_factory=DWConfig)
    gen_batch_size: int = Field(8, ge=1, description="Prompts per generate() call.")
    sft_epochs: float = Field(1.0, gt=0)
    max_seq_length: int = Field(1024, ge=16)
    sampling: Sampling = Field(default_factory=Sampling)
    lora: LoraSettings = Field(default_factory=LoraSettings)


class FusionConfig(_Strict):
    """The ``rlaif`` reward: a linear formula over other rewards (seed 001), and when the teacher
    and the rules disagree enough for an item to go to ``teacher_conflicts.jsonl``."""

    weights: dict[str, float] = Field(
        default_factory=lambda: {"chain": 0.35, "emergency": 0.25, "risk": -0.15, "teacher": 0.25},
        description="Reward name -> weight; penalties (risk) take negative weights.")
    conflict_threshold: float = Field(0.4, gt=0, le=1, description="|teacher_score - rules_score| above this is a conflict.")

    @field_validator("weights")
    @classmethod
    def _formula(cls, value: dict[str, float]) -> dict[str, float]:
        from irsflow.rewards import is_penalty, known_rewards

        unknown = sorted(set(value) - set(known_rewards()) | ({"rlaif"} & set(value)))
        if unknown:
            raise ValueError(f"unknown or recursive reward {unknown[0]!r} (known: {', '.join(known_rewards())})")
        for k, w in value.items():
            if is_penalty(k) and w > 0:
                raise ValueError(f"{k!r} is a penalty: its weight must be <= 0")
        if sum(w for w in value.values() if w > 0) <= 0:
            raise ValueError("needs at least one positive weight")
        return value


class ScoringConfig(_Strict):
    """How the DW-GRPO rewards are computed (seed 000 section 3.1)."""

    backend: Literal["auto", "embedding", "heuristic"] = Field(
        "auto", description="auto: embeddings, falling back to the heuristic scorer if they cannot load."
    )
    embedder: str = Field("builtin:minilm", description="Sentence-transformers folder or builtin:minilm.")
    reranker_path: str | None = Field(None, description="Cross-encoder folder for `rel`; cosine if unset.")
    faith: Literal["embedding", "bertscore"] = "embedding"
    device: str = "cpu"
    rules: str = Field("builtin:default", min_length=1,
                       description="Rule-reward file (red flags, risk patterns, chain): see irsflow/data/reward_rules.json.")
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    reward_model: str | None = Field(None, min_length=1, description="Trained reward model folder for the `rm` reward.")
    length_limit: int = Field(80, ge=1, description="Words an answer may take before `length_limit` starts to fall.")

    @field_validator("rules")
    @classmethod
    def _rules_load(cls, value: str) -> str:
        from irsflow.rewards.rules import load_rules

        try:
            load_rules(value)
        except ConfigError as err:  # re-raised by pydantic with the field path
            raise ValueError(str(err).removeprefix("scoring.rules: ")) from None
        return value


class CodebookConfig(_Strict):
    """Rules from reviewed corrections added to matching prompts (irsflow/codebook.py)."""

    enabled: bool = Field(False, description="Inject matching codebook rules into generation prompts.")
    path: str | None = Field(None, min_length=1, description="SQLite file; default <data dir>/codebook.sqlite.")
    version: int | None = Field(None, ge=0, description="Pin this codebook version (reproduce a job); latest if unset.")
    top_k: int = Field(3, ge=1, description="Most rules injected per question.")
    threshold: float = Field(0.5, ge=0, description="Minimum rule score (cosine + keyword bonus) to inject.")


class TrainRequest(_Strict):
    """A training job request. ``stage`` selects the trainer (IRS, the foundation, by default);
    ``irs_config`` holds what every stage shares, ``stage_config`` what the others add."""

    stage: Stage = "IRS"
    model_id: str = Field(EMBEDDED_MODEL, min_length=1, description="Local HF folder, hub id, or builtin:*.")
    init_adapter: str | None = Field(
        None, min_length=1, description="Adapter round 1 starts from (and PPO's frozen reference): a folder, "
                                        "registry:champion, registry:N or models:/NAME@ALIAS; the base model if unset.")
    stage_config: StageConfig = Field(default_factory=StageConfig)
    irs_config: IRSConfig = Field(default_factory=IRSConfig)
    n_questions: int = Field(100, ge=1, description="Questions taken from the dataset, in file order.")
    top_k: int = Field(3, ge=0, description="Contexts per question put into the prompt.")
    dataset: str = Field(DEMO_DATASET, min_length=1, description="Question-set JSONL path or builtin:demo.")
    seed: int = Field(42, ge=0)
    system_prompt: str = Field(
        DEFAULT_SYSTEM_PROMPT,
        description="System turn of every prompt.",
    )
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    codebook: CodebookConfig = Field(default_factory=CodebookConfig)
    track: bool = Field(True, description="Log the finished job as an MLflow run (params, metrics, hashes, adapter).")
    teacher: TeacherConfig | None = Field(
        None, description="Teacher LLM for the `teacher`/`rlaif` rewards; key from $DEEPSEEK_API_KEY or a Secret block.")

    def uses_teacher(self) -> bool:
        """Whether scoring will call the teacher (so a key must be found before generation)."""
        weights = self.irs_config.dw_config.initial_weights
        return self.teacher is not None and ("teacher" in weights or (
            "rlaif" in weights and "teacher" in self.scoring.fusion.weights))

    def round_eval(self) -> bool:
        """Whether each round ends with an EVALUATING phase (eval_round_<n>.json + changelog line)."""
        flag = self.stage_config.eval_each_round
        return self.stage == "ONPOLICY" if flag is None else flag

    @model_validator(mode="after")
    def _teacher_configured(self):
        if "teacher" in self.irs_config.dw_config.initial_weights and self.teacher is None:
            raise ValueError("irs_config.dw_config.initial_weights: reward 'teacher' needs a `teacher` block")
        return self

    @model_validator(mode="after")
    def _stage_inputs(self):
        """What a stage cannot run without, caught before any model loads."""
        sc, cfg = self.stage_config, self.irs_config
        if self.stage in ("DPO", "RM") and not sc.from_candidates and not sc.pairs:
            raise ValueError(f"stage_config.pairs: stage {self.stage} needs pairs files or from_candidates: true")
        if self.stage == "KTO" and not sc.from_candidates and not sc.pairs and not (sc.kto_up and sc.kto_down):
            raise ValueError("stage_config.kto_up: stage KTO needs kto_up and kto_down files, pairs files "
                             "or from_candidates: true")
        if bool(sc.kto_up) != bool(sc.kto_down):
            raise ValueError("stage_config.kto_up: kto_up and kto_down go together")
        if self.stage == "RM" and cfg.n_iterations != 1:
            raise ValueError("irs_config.n_iterations: stage RM trains once; must be 1")
        if self.stage == "RM" and self.init_adapter:
            raise ValueError("init_adapter: stage RM trains a fresh scalar head on the base model; leave it unset")
        if self.stage == "GRPO" and cfg.batch_size % cfg.n_candidates:
            raise ValueError(f"irs_config.batch_size: stage GRPO needs a multiple of n_candidates "
                             f"({cfg.n_candidates}, the generations per prompt), got {cfg.batch_size}")
        return self


_MESSAGES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "extra_forbidden": "unknown field",
    "missing": "required field missing",
    "string_too_short": "must not be empty",
}


def format_validation_error(err: ValidationError) -> str:
    """One line per problem: ``field.path: message``."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<request>"
        template = _MESSAGES.get(e["type"])
        if template:
            msg = template.format(**(e.get("ctx") or {}))
        else:
            msg = e["msg"]
            msg = msg.removeprefix("Value error, ")
        # a whole-request check names its own field path in the message
        lines.append(msg if path == "<request>" and ": " in msg else f"{path}: {msg}")
    return "\n".join(lines)


def parse_request(data: Any, source: str = "request") -> TrainRequest:
    """Validate a request body (dict or TrainRequest); raises ConfigError naming each bad field."""
    if isinstance(data, TrainRequest):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
    try:
        return TrainRequest.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: invalid request\n{format_validation_error(err)}") from None


def load_request(path: str | Path) -> TrainRequest:
    """Read a request file (JSON, or YAML by extension) and validate it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{p}: cannot read request file ({err.strerror})") from None
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:  # json.JSONDecodeError or yaml.YAMLError: report, do not crash
        raise ConfigError(f"{p}: not valid {'YAML' if p.suffix in ('.yaml', '.yml') else 'JSON'}: {err}") from None
    return parse_request(data, source=str(p))
