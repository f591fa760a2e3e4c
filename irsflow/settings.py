"""The settings every training stage shares, and the request as the layers below ``config`` see it.

``SharedSettings`` (the request's ``shared``, written ``irs_config`` in request bodies: rounds,
sampling, LoRA and optimizer, the dynamic reward weights), ``HeldoutConfig`` and ``EarlyStopConfig``
live here, below the loop and the stages, so that both can use them without importing
``irsflow.config`` (which imports the stages to validate ``stage_config``). ``JobRequest`` is the
shape of a validated request those layers read; ``irsflow.config.TrainRequest`` is the one
implementation:

    def run_generate(store, req: JobRequest, iteration, adapter): ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from irsflow.codebook.settings import CodebookConfig
    from irsflow.rewards.settings import ScoringConfig
    from irsflow.teacher.client import TeacherConfig

MAX_QUESTIONS = 1_000_000
MAX_SEED = 2**32 - 1  # the largest seed numpy takes (transformers.set_seed sets numpy's too)
MAX_WEIGHT = 1000.0


class _Strict(BaseModel):
    # allow_inf_nan=False: "Infinity"/NaN are refused; every number also has an upper bound a user
    # never reaches (a request cannot ask for a billion rounds or a rank-10^6 adapter)
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class DWConfig(_Strict):
    """Dynamic reward weights: each reward's weight rises while its mean stagnates (a softmax over the
    negated slopes of its recent means). The keys of ``initial_weights`` choose which rewards score
    the candidates."""

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
            raise ValueError(
                f"{penalties[0]!r} is a penalty (higher is worse): use it in scoring.fusion "
                "with a negative weight, or use the fused reward 'rlaif'"
            )
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
        "all-linear", description='"all-linear", or the names of the modules to adapt (e.g. ["q_proj", "v_proj"])'
    )


class SharedSettings(_Strict):
    """What every stage shares: rounds, sampling, LoRA/optimizer settings and the dynamic reward weights
    (``TrainRequest.shared``; the request key keeps the job API's original name, ``irs_config``)."""

    n_iterations: int = Field(
        3,
        ge=1,
        le=1000,
        description="Training rounds of the job (each: generate, score, train, evaluate, as the stage lists them).",
    )
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

    share: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of the question set held out (0: off). Whole topics "
        "(meta.topic) are held out where every question names one.",
    )
    min_questions: int = Field(
        20, ge=2, le=MAX_QUESTIONS, description="The split is on only when the set has at least this many questions."
    )
    max_questions: int = Field(
        32, ge=1, le=MAX_QUESTIONS, description="Most held-out questions answered per evaluation."
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description="Seed of the split; the request's seed if unset (set "
        "it to compare jobs of several seeds on the same "
        "questions).",
    )

    def active(self, n_questions: int) -> bool:
        return self.share > 0 and n_questions >= self.min_questions


class EarlyStopConfig(_Strict):
    """Stop a job when its held-out reward stops rising or its answers collapse; ``checkpoints/final`` is
    then the best round's adapter by held-out reward. Needs the held-out split."""

    patience: int = Field(1, ge=1, le=1000, description="Rounds without a held-out gain before the job stops.")
    min_gain: float = Field(
        0.0, ge=0, le=1e6, description="Least rise of the held-out reward over the best so far that counts as a gain."
    )
    distinct2_floor: float | None = Field(
        0.9, gt=0, le=1, description="Stop when held-out distinct-2 falls below this share of the start model's."
    )
    max_length_drift: float | None = Field(
        0.5,
        gt=0,
        le=1000,
        description="Stop when the mean held-out answer length moves more than this share away from the start model's.",
    )


class JobRequest(Protocol):
    """A validated training request, as the loop and the stages read it (``irsflow.config.TrainRequest``)."""

    stage: str
    model_id: str
    init_adapter: str | None
    stage_config: Any  # the stage's own settings model (``irsflow.stages.StageSettings``)
    shared: SharedSettings  # written irs_config in request bodies
    n_questions: int
    top_k: int
    dataset: str
    seed: int
    system_prompt: str
    scoring: ScoringConfig
    codebook: CodebookConfig
    track: bool
    teacher: TeacherConfig | None
    heldout: HeldoutConfig
    early_stop: EarlyStopConfig | None

    def uses_teacher(self) -> bool: ...

    def holds_out(self) -> bool: ...
