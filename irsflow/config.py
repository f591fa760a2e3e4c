"""The one request schema: the body of ``POST /api/train`` and of ``irsflow train --request``.

Defaults live here and only here; shipped request files under ``configs/`` hold values.
Validation is strict (unknown keys are rejected) and happens before any model loads:

    from irsflow.config import load_request
    req = load_request("configs/demo.json")       # raises ConfigError naming the field

``ConfigError`` messages name the field path, e.g. ``irs_config.n_candidates: must be >= 2``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    WithJsonSchema,
    WrapValidator,
    model_validator,
)

from irsflow.codebook.settings import CodebookConfig
from irsflow.errors import ConfigError
from irsflow.paths import AdapterRef, ModelRef, RequestPath
from irsflow.rewards.settings import ScoringConfig
from irsflow.settings import MAX_QUESTIONS, MAX_SEED, EarlyStopConfig, HeldoutConfig, SharedSettings, _Strict
from irsflow.stages import StageSettings, get_stage, settings_adapter, stage_names
from irsflow.stages.registry import settings_fields
from irsflow.teacher.client import TeacherConfig

EMBEDDED_MODEL = "builtin:smollm2-135m-instruct"
DEMO_DATASET = "builtin:demo"
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer the question concisely using the context when it is relevant."
)


def _stage_settings(value: Any, handler) -> StageSettings:
    if isinstance(value, StageSettings):
        return value
    return settings_adapter().validate_python(value)  # the union of every registered stage's model


# a discriminated union (on ``stage``) of the registered stages' settings; validated through the stage
# registry so a stage registered at run time needs no rebuild of this model or of those embedding it
StageConfigField = Annotated[
    SerializeAsAny[StageSettings],
    WrapValidator(_stage_settings),
    # Prefect checks a deployment run's parameters against this schema before our validation runs: an
    # open object here, each stage's own model below (a base-model schema would refuse every field)
    WithJsonSchema(
        {
            "type": "object",
            "title": "Stage Config",
            "additionalProperties": True,
            "description": "The stage's own settings (irsflow.stages: one settings model per stage).",
        }
    ),
]


def stored_request(data: dict) -> dict:
    """A request read back from a job dir (every job dir is read through here). Jobs created before
    stages were objects stored every stage's settings in ``stage_config``; only the request's own
    stage's are kept. Jobs created before the held-out split trained on the whole set: they keep doing so."""
    data = data if "heldout" in data else {**data, "heldout": {"share": 0.0}}
    sc = data.get("stage_config")
    if not isinstance(sc, dict):
        return data
    own = get_stage(data.get("stage", "IRS")).settings.model_fields
    return {**data, "stage_config": {k: v for k, v in sc.items() if k in own}}


class TrainRequest(_Strict):
    """A training job request. ``stage`` selects the trainer (IRS, the foundation, by default);
    ``shared`` holds what every stage shares, ``stage_config`` what the stage adds.

    ``shared`` is written ``irs_config`` in request bodies, job dirs and Prefect parameters (the job
    API's original name): a body may give either name, and every dump writes ``irs_config``."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    stage: str = Field(
        "IRS",
        description="The training stage: IRS, ONPOLICY, DPO, KTO, GRPO, PPO, RM, or one "
        "a package adds (entry point group irsflow.stages).",
    )
    model_id: ModelRef = Field(EMBEDDED_MODEL, min_length=1, description="Local HF folder, hub id, or builtin:*.")
    init_adapter: AdapterRef | None = Field(
        None,
        min_length=1,
        description="Adapter round 1 starts from (and PPO's frozen reference): a folder, "
        "registry:champion, registry:N or models:/NAME@ALIAS; the base model if unset.",
    )
    stage_config: StageConfigField = Field(
        default=None, description="The stage's own settings, validated by that stage's model (irsflow.stages)."
    )
    shared: SharedSettings = Field(
        default_factory=SharedSettings,
        alias="irs_config",
        title="Shared settings",
        description="What every stage shares: rounds (n_iterations), sampling, LoRA and optimizer, reward weights.",
    )
    n_questions: int = Field(
        100, ge=1, le=MAX_QUESTIONS, description="Questions taken from the dataset, in file order."
    )
    top_k: int = Field(3, ge=0, le=1000, description="Contexts per question put into the prompt.")
    dataset: RequestPath = Field(DEMO_DATASET, min_length=1, description="Question-set JSONL path or builtin:demo.")
    seed: int = Field(42, ge=0, le=MAX_SEED, description="Random seed of sampling, shuffling and LoRA initialisation.")
    system_prompt: str = Field(
        DEFAULT_SYSTEM_PROMPT,
        max_length=100_000,
        description="System turn of every prompt.",
    )
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    codebook: CodebookConfig = Field(default_factory=CodebookConfig)
    track: bool = Field(True, description="Log the finished job as an MLflow run (params, metrics, hashes, adapter).")
    teacher: TeacherConfig | None = Field(
        None, description="Teacher LLM for the `teacher`/`rlaif` rewards; key from $DEEPSEEK_API_KEY or a Secret block."
    )
    heldout: HeldoutConfig = Field(default_factory=HeldoutConfig)
    early_stop: EarlyStopConfig | None = Field(None, description="Early stopping on the held-out split (off if unset).")
    _trains_policy: bool = PrivateAttr(True)  # the stage's (model_post_init)

    def uses_teacher(self) -> bool:
        """Whether scoring will call the teacher (so a key must be found before generation)."""
        weights = self.shared.dw_config.initial_weights
        return self.teacher is not None and (
            "teacher" in weights or ("rlaif" in weights and "teacher" in self.scoring.fusion.weights)
        )

    def model_post_init(self, context: Any) -> None:
        # after validation and after model_construct alike: the stage's answer, looked up once here
        self._trains_policy = get_stage(self.stage).trains_policy

    def holds_out(self) -> bool:
        """Whether the job may hold questions out (its set must still reach ``heldout.min_questions``): the
        split is set and the stage's adapter answers chat (RM's is a reward head). Decided once, at
        validation from the stage: the stages ask it, so it must not ask the stage registry back."""
        return self.heldout.share > 0 and self._trains_policy

    @model_validator(mode="before")
    @classmethod
    def _route_stage_config(cls, data: Any) -> Any:
        """Give ``stage_config`` its discriminator (the request's ``stage``) and name a setting given to
        the wrong stage."""
        if not isinstance(data, dict):
            return data
        stage = data.get("stage", "IRS")
        own = get_stage(str(stage)).settings.model_fields  # an unknown stage: named with the known ones
        sc = data.get("stage_config")
        if sc is None or isinstance(sc, dict):
            sc = dict(sc or {})
            sc.pop("stage", None)
            for key in sc:
                owners = settings_fields().get(key)
                if key not in own and owners:
                    raise ValueError(
                        f"stage_config.{key}: not a setting of stage {stage} (it belongs to {', '.join(owners)})"
                    )
            data = {**data, "stage_config": {**sc, "stage": stage}}
        return data

    @model_validator(mode="after")
    def _early_stop_needs_heldout(self):
        if self.early_stop is not None and self.heldout.share <= 0:
            raise ValueError("early_stop: needs the held-out split (heldout.share > 0)")
        return self

    @model_validator(mode="after")
    def _teacher_configured(self):
        if "teacher" in self.shared.dw_config.initial_weights and self.teacher is None:
            raise ValueError("irs_config.dw_config.initial_weights: reward 'teacher' needs a `teacher` block")
        return self

    @model_validator(mode="after")
    def _stage_inputs(self):
        """What a stage cannot run without, caught before any model loads."""
        if self.stage_config.stage != self.stage:
            raise ValueError(f"stage_config: holds the settings of stage {self.stage_config.stage}, not {self.stage}")
        stage = get_stage(self.stage)
        stage.check(self)
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
        loc = list(e["loc"])
        if loc[:1] == ["stage_config"] and len(loc) > 1 and loc[1] in stage_names():
            del loc[1]  # the union's tag: the request's `stage` already says which
        path = ".".join(str(p) for p in loc) or "<request>"
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
