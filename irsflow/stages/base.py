"""What a training stage is: its settings model and the ``Stage`` object every stage module defines.

A stage answers, for one request: which phases its rounds have, what it cannot run without (checked
before any model loads), which files it reads, which files of its own it writes, and how it trains
one round. Everything else (the job dir, generation, scoring, caching and resume, the flow) is shared.
``Stage`` holds the defaults most stages want; a stage module overrides only what differs:

    class Toy(Stage):
        name, settings = "TOY", ToySettings
        writes = {TRAINING: ("toy_rows.jsonl",)}   # hashed into phases/iter_<n>/manifest.json
        def train(self, store, req, iteration, inputs, progress, teacher_api_key=None): ...
    TOY = Toy()

and names ``TOY`` in one entry point (``irsflow.stages.registry``). Two contracts a stage keeps:
every file of ``writes`` exists once its phase has run (``irsflow.jobs.resume`` hashes them, so a
resume notices one gone or changed), and a stage that scores inside training
(``scores_in_training``) records each round's scores with ``irsflow.loop.phases.record_scores``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from irsflow.loop import EVALUATING, GENERATING, SCORING, TRAINING
from irsflow.loop.phases import phase_reporter
from irsflow.store import JobStore, ProgressFn, hash_or_missing, hash_path

if TYPE_CHECKING:
    from irsflow.dataset import Question
    from irsflow.settings import JobRequest


class StageSettings(BaseModel):
    """``stage_config``: the settings one stage adds to the request (validated by that stage's
    model; the request's ``stage`` picks it). Every stage has the round-eval settings."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    # the discriminator, copied from the request's `stage`; not part of the stored request
    stage: str = Field(exclude=True)
    eval_each_round: bool | None = Field(
        None,
        description="Write eval_round_<n>.json and a CHANGELOG.md line after each round's training "
        "(default: on for ONPOLICY, off otherwise).",
    )
    eval_questions: int = Field(8, ge=1, le=100_000, description="Questions answered by each round's eval.")

    def files(self) -> list[str]:
        """The data files the stage reads (their content is part of the training phase's cache key)."""
        return []


@dataclass(frozen=True)
class IterationInputs:
    """What one round starts from, derived from the job dir (``irsflow.jobs.resume``)."""

    adapter: str | None
    weights: dict[str, float]
    history: list[dict] = field(default_factory=list)
    previous: int | None = None  # the round before, if any (its files carry state such as PPO's KL coefficient)


class Stage:
    """A training stage. Subclasses set ``name`` and ``settings`` and implement ``train``."""

    name: ClassVar[str]
    settings: ClassVar[type[StageSettings]]
    samples: ClassVar[bool] = True  # its rounds generate and score candidates before training
    scores_in_training: ClassVar[bool] = False  # its trainer scores its own samples (GRPO)
    trains_policy: ClassVar[bool] = True  # its adapter answers chat (RM's is a reward head)
    round_eval_default: ClassVar[bool] = False
    # phase -> names of the files the stage writes in the round's folder (phases/iter_<n>/) in that
    # phase, beyond the shared ones (candidates, scores, score summary, checkpoint, eval files)
    writes: ClassVar[dict[str, tuple[str, ...]]] = {}

    @property
    def task_name(self) -> str:
        """The training task's name in the Prefect UI (``train-dpo-iter-1``)."""
        return f"train-{self.name.lower()}"

    def phases(self, req: JobRequest) -> tuple[str, ...]:
        """The phases of one round, in order."""
        sample = (GENERATING, SCORING) if self.samples_for(req) else ()
        evaluates = self.round_eval(req) or self.evaluates_heldout(req)
        return sample + (TRAINING,) + ((EVALUATING,) if evaluates else ())

    def samples_for(self, req: JobRequest) -> bool:
        return self.samples

    def round_eval(self, req: JobRequest) -> bool:
        flag = req.stage_config.eval_each_round
        return self.round_eval_default if flag is None else flag

    def evaluates_heldout(self, req: JobRequest) -> bool:
        """Whether its rounds answer the job's held-out questions (the request's ``heldout`` split is on)."""
        from irsflow.loop.questions import heldout_questions

        return self.trains_policy and bool(heldout_questions(req))

    def moves_weights(self, req: JobRequest) -> bool:
        """Whether its rounds update the dynamic reward weights (they score something)."""
        return SCORING in self.phases(req) or self.scores_in_training

    def calls_teacher_in(self, phase: str, req: JobRequest) -> bool:
        """Whether ``phase`` scores with the request's rewards (so it may need the teacher's key)."""
        return req.uses_teacher() and (phase == SCORING or (phase == TRAINING and self.scores_in_training))

    def check(self, req: JobRequest) -> None:
        """Raise ``ValueError("field.path: why")`` for a request this stage cannot run (schema time)."""

    def check_files(self, req: JobRequest, questions: list[Question]) -> None:
        """Parse every file the stage will read, so a bad line fails the job before any model loads."""

    def outputs(self, store: JobStore, iteration: int, phase: str) -> list[Path]:
        """The files of its own the stage writes in ``phase`` of round ``iteration`` (default: ``writes``).
        Each must exist once the phase has run: the round's manifest records their hashes, so a cached
        phase is redone when one goes missing or changes. Override for files elsewhere in the job dir."""
        return [store.phase_dir(iteration) / name for name in self.writes.get(phase, ())]

    def after_scoring(self, store: JobStore, req: JobRequest, iteration: int) -> dict:
        """Files the stage writes once a round is scored (ONPOLICY's samples); their summary."""
        return {}

    def train(
        self,
        store: JobStore,
        req: JobRequest,
        iteration: int,
        inputs: IterationInputs,
        progress: ProgressFn,
        teacher_api_key: str | None = None,
    ) -> dict:
        """Train one round: write ``checkpoints/iter_<n>`` atomically, append a TRAINING metrics row, return
        a JSON-able summary with at least ``adapter``, ``loss`` and ``seconds``."""
        raise NotImplementedError

    def run_training(
        self,
        store: JobStore,
        req: JobRequest,
        iteration: int,
        inputs: IterationInputs,
        progress: ProgressFn | None = None,
        teacher_api_key: str | None = None,
    ) -> dict:
        """The TRAINING phase: live progress around ``train``."""
        report = phase_reporter(store, iteration, TRAINING, progress)
        report(0)
        return self.train(store, req, iteration, inputs, report, teacher_api_key=teacher_api_key)

    def key_parts(self, store: JobStore, req: JobRequest, phase: str, inputs: IterationInputs, iteration: int) -> dict:
        """What the stage adds to a phase's cache key: its own settings, and for TRAINING the inputs its
        trainer reads beyond the round's candidates and scores. A stage whose training reads more (PPO:
        the round before's KL state) adds it in an override."""
        parts: dict = {
            "stage": self.name,
            "stage_config": req.stage_config.model_dump(mode="json"),
            "init_adapter": store.read_config().get("init_adapter_sha256"),
        }
        if phase == TRAINING:
            cfg = req.shared
            parts.update(
                files={f: hash_or_missing(Path(f).expanduser()) for f in req.stage_config.files() if f},
                weights=inputs.weights,
                sampling=cfg.sampling.model_dump(),
                n_candidates=cfg.n_candidates,
                max_new_tokens=cfg.max_new_tokens,
                scoring=req.scoring.model_dump(),
                dataset=req.dataset,
                questions=store.read_config().get("questions_sha256"),
                system_prompt=req.system_prompt,
            )
        return parts


def finish_round(store: JobStore, iteration: int, stats: dict, **row) -> dict:
    """A trainer's last step: the TRAINING metrics row, then the summary the flow keeps."""
    out_dir = store.checkpoint(iteration)
    store.metric(
        iteration,
        TRAINING,
        **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()},
        seconds=round(stats["seconds"], 3),
        mem_after_release=stats.get("mem_after_release"),
    )
    return {"adapter": str(out_dir), "sha256": hash_path(out_dir), **stats}


def mean(xs: list) -> float | None:
    return round(sum(xs) / len(xs), 6) if xs else None
