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
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, WithJsonSchema, WrapValidator,
                      field_validator, model_validator)

from irsflow.codebook.settings import CodebookConfig
from irsflow.errors import ConfigError
from irsflow.paths import AdapterRef, ModelRef, RequestPath
from irsflow.rewards.settings import ScoringConfig
from irsflow.stages import StageSettings, get_stage, settings_adapter, stage_names
from irsflow.stages.base import LEGACY_FIELDS
from irsflow.stages.registry import settings_fields
from irsflow.teacher.client import TeacherConfig

EMBEDDED_MODEL = "builtin:smollm2-135m-instruct"
DEMO_DATASET = "builtin:demo"
MAX_QUESTIONS = 1_000_000
MAX_SEED = 2**32 - 1  # the largest seed numpy takes (transformers.set_seed sets numpy's too)
MAX_WEIGHT = 1000.0
DEFAULT_SYSTEM_PROMPT = ("You are a helpful assistant. Answer the question concisely using the context "
                         "when it is relevant.")


class _Strict(BaseModel):
    # allow_inf_nan=False: "Infinity"/NaN are refused; every number also has an upper bound a user
    # never reaches (a request cannot ask for a billion rounds or a rank-10^6 adapter)
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class DWConfig(_Strict):
    """Dynamic reward weights (seed 000 section 3.2). The keys of ``initial_weights`` choose
    which rewards score the candidates."""

    history_window: int = Field(5, ge=2, le=1000, description="Iterations used for each reward's slope.")
    temperature: float = Field(2.0, gt=0, le=1000, description="Softmax temperature over -slope.")
    initial_weights: dict[str, Annotated[float, Field(le=MAX_WEIGHT)]] = Field(
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
    top_k: int = Field(0, ge=0, le=1_000_000, description="0 disables top-k filtering.")


class LoraSettings(_Strict):
    r: int = Field(16, ge=1, le=1024)
    alpha: int = Field(32, ge=1, le=65536)
    dropout: float = Field(0.05, ge=0, lt=1)
    # Names, never a pattern: PEFT matches a string as a regular expression, which a request could make
    # run for hours.
    target_modules: Literal["all-linear"] | list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.]{1,128}$")]] = Field(
        "all-linear", description='"all-linear", or the names of the modules to adapt (e.g. ["q_proj", "v_proj"])')


class SharedSettings(_Strict):
    """What every stage shares: rounds, sampling, LoRA/optimizer settings and the dynamic reward weights
    (the request key keeps its seed-000 name, ``irs_config``)."""

    n_iterations: int = Field(3, ge=1, le=1000)
    n_candidates: int = Field(4, ge=2, le=256, description="Candidates sampled per question.")
    batch_size: int = Field(2, ge=1, le=4096, description="SFT per-device batch size.")
    learning_rate: float = Field(2e-5, gt=0, lt=1)
    max_new_tokens: int = Field(256, ge=1, le=8192)
    load_in_4bit: bool = Field(
        False, description="bitsandbytes NF4 weights for generate and SFT. CUDA only: refused on CPU."
    )
    dw_config: DWConfig = Field(default_factory=DWConfig)
    gen_batch_size: int = Field(8, ge=1, le=4096, description="Prompts per generate() call.")
    sft_epochs: float = Field(1.0, gt=0, le=1000)
    max_seq_length: int = Field(1024, ge=16, le=1_048_576)
    sampling: Sampling = Field(default_factory=Sampling)
    lora: LoraSettings = Field(default_factory=LoraSettings)


class HeldoutConfig(_Strict):
    """A share of the question set kept out of training, answered greedily by the start model and by
    every round's adapter, so a job shows whether its rounds help on questions it did not train on."""

    share: float = Field(0.2, ge=0, lt=1, description="Share of the question set held out (0: off). Whole topics "
                                                      "(meta.topic) are held out where every question names one.")
    min_questions: int = Field(20, ge=2, le=MAX_QUESTIONS, description="The split is on only when the set has at "
                                                                       "least this many questions.")
    max_questions: int = Field(32, ge=1, le=MAX_QUESTIONS,
                               description="Most held-out questions answered per evaluation.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Seed of the split; the request's seed if unset (set "
                                                                  "it to compare jobs of several seeds on the same "
                                                                  "questions).")

    def active(self, n_questions: int) -> bool:
        return self.share > 0 and n_questions >= self.min_questions


class EarlyStopConfig(_Strict):
    """Stop a job when its held-out reward stops rising or its answers collapse; ``checkpoints/final`` is
    then the best round's adapter by held-out reward. Needs the held-out split."""

    patience: int = Field(1, ge=1, le=1000, description="Rounds without a held-out gain before the job stops.")
    min_gain: float = Field(0.0, ge=0, le=1e6, description="Least rise of the held-out reward over the best so far "
                                                           "that counts as a gain.")
    distinct2_floor: float | None = Field(
        0.9, gt=0, le=1, description="Stop when held-out distinct-2 falls below this share of the start model's.")
    max_length_drift: float | None = Field(
        0.5, gt=0, le=1000, description="Stop when the mean held-out answer length moves more than this share away "
                                        "from the start model's.")


def _stage_settings(value: Any, handler) -> StageSettings:
    if isinstance(value, StageSettings):
        return value
    return settings_adapter().validate_python(value)  # the union of every registered stage's model


# a discriminated union (on ``stage``) of the registered stages' settings; validated through the stage
# registry so a stage registered at run time needs no rebuild of this model or of those embedding it
StageConfigField = Annotated[
    SerializeAsAny[StageSettings], WrapValidator(_stage_settings),
    # Prefect checks a deployment run's parameters against this schema before our validation runs: an
    # open object here, each stage's own model below (a base-model schema would refuse every field)
    WithJsonSchema({"type": "object", "title": "Stage Config", "additionalProperties": True,
                    "description": "The stage's own settings (irsflow.stages: one settings model per stage)."})]


def stored_request(data: dict) -> dict:
    """A request read back from a job dir. Jobs created before stages were objects stored every stage's
    settings in ``stage_config``; only the request's own stage's are kept. Jobs created before the
    held-out split trained on the whole set: they keep doing so."""
    data = data if "heldout" in data else {**data, "heldout": {"share": 0.0}}
    sc = data.get("stage_config")
    if not isinstance(sc, dict):
        return data
    own = get_stage(data.get("stage", "IRS")).settings.model_fields
    return {**data, "stage_config": {k: v for k, v in sc.items() if k in own}}


class TrainRequest(_Strict):
    """A training job request. ``stage`` selects the trainer (IRS, the foundation, by default);
    ``irs_config`` holds what every stage shares, ``stage_config`` what the others add."""

    stage: str = Field("IRS", description="The training stage: IRS, ONPOLICY, DPO, KTO, GRPO, PPO, RM, or one "
                                          "registered with irsflow.stages.register.")
    model_id: ModelRef = Field(EMBEDDED_MODEL, min_length=1, description="Local HF folder, hub id, or builtin:*.")
    init_adapter: AdapterRef | None = Field(
        None, min_length=1, description="Adapter round 1 starts from (and PPO's frozen reference): a folder, "
                                        "registry:champion, registry:N or models:/NAME@ALIAS; the base model if unset.")
    stage_config: StageConfigField = Field(
        default=None, description="The stage's own settings, validated by that stage's model (irsflow.stages).")
    irs_config: SharedSettings = Field(default_factory=SharedSettings)  # named for seed 000's API
    n_questions: int = Field(100, ge=1, le=MAX_QUESTIONS,
                             description="Questions taken from the dataset, in file order.")
    top_k: int = Field(3, ge=0, le=1000, description="Contexts per question put into the prompt.")
    dataset: RequestPath = Field(DEMO_DATASET, min_length=1, description="Question-set JSONL path or builtin:demo.")
    seed: int = Field(42, ge=0, le=MAX_SEED, description="Random seed of sampling, shuffling and LoRA initialisation.")
    system_prompt: str = Field(
        DEFAULT_SYSTEM_PROMPT, max_length=100_000,
        description="System turn of every prompt.",
    )
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    codebook: CodebookConfig = Field(default_factory=CodebookConfig)
    track: bool = Field(True, description="Log the finished job as an MLflow run (params, metrics, hashes, adapter).")
    teacher: TeacherConfig | None = Field(
        None, description="Teacher LLM for the `teacher`/`rlaif` rewards; key from $DEEPSEEK_API_KEY or a Secret block.")
    heldout: HeldoutConfig = Field(default_factory=HeldoutConfig)
    early_stop: EarlyStopConfig | None = Field(None, description="Early stopping on the held-out split (off if unset).")

    def uses_teacher(self) -> bool:
        """Whether scoring will call the teacher (so a key must be found before generation)."""
        weights = self.irs_config.dw_config.initial_weights
        return self.teacher is not None and ("teacher" in weights or (
            "rlaif" in weights and "teacher" in self.scoring.fusion.weights))

    def holds_out(self) -> bool:
        """Whether the job may hold questions out (its set must still reach ``heldout.min_questions``): the
        split is set and the stage's adapter answers chat (RM's is a reward head)."""
        return self.heldout.share > 0 and get_stage(self.stage).trains_policy

    def round_eval(self) -> bool:
        """Whether each round ends with an EVALUATING phase (eval_round_<n>.json + changelog line)."""
        return get_stage(self.stage).round_eval(self)

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
            for key in list(sc):
                owners = settings_fields().get(key)
                if key in own or not owners:
                    continue
                if key in LEGACY_FIELDS and sc[key] == LEGACY_FIELDS[key]:
                    del sc[key]  # a request stored when stage_config held every stage's fields, at their defaults
                else:
                    raise ValueError(f"stage_config.{key}: not a setting of stage {stage} "
                                     f"(it belongs to {', '.join(owners)})")
            data = {**data, "stage_config": {**sc, "stage": stage}}
        return data

    @model_validator(mode="after")
    def _early_stop_needs_heldout(self):
        if self.early_stop is not None and self.heldout.share <= 0:
            raise ValueError("early_stop: needs the held-out split (heldout.share > 0)")
        return self

    @model_validator(mode="after")
    def _teacher_configured(self):
        if "teacher" in self.irs_config.dw_config.initial_weights and self.teacher is None:
            raise ValueError("irs_config.dw_config.initial_weights: reward 'teacher' needs a `teacher` block")
        return self

    @model_validator(mode="after")
    def _stage_inputs(self):
        """What a stage cannot run without, caught before any model loads."""
        if self.stage_config.stage != self.stage:
            raise ValueError(f"stage_config: holds the settings of stage {self.stage_config.stage}, not {self.stage}")
        get_stage(self.stage).check(self)
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
