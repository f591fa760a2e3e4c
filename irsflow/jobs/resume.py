"""Resuming a job: what each phase's output depends on, and whether that output is still on disk.

Every phase of iteration ``n`` reads only files of the job directory, so its inputs can be derived
from the job alone (``iteration_inputs``), and its output is fully determined by a key over those
inputs (``phase_key``): the content hash of the adapter it starts from, of the question set, of the
previous phase's files, the config fields it uses, the iteration and the seed. The orchestrator
caches each phase's result under that key. A cached result is only trusted while the files it
points to still exist with the hashes recorded when they were written (``outputs_valid``).

    key = phase_key(store, req, 2, "TRAINING")
    if not outputs_valid(store, 2, "TRAINING", key): ...recompute...
    record_outputs(store, 2, "TRAINING", key)          # after the phase wrote its files

What a phase wrote (``phase_outputs``) is the shared files of the phase plus what the job's stage
declares as its own (``Stage.outputs``), so a new stage's files are covered without a line here.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from irsflow.codebook.retrieval import key_parts as codebook_key_parts
from irsflow.config import TrainRequest
from irsflow.errors import InputError, IrsflowError
from irsflow.evals.heldout import heldout_path
from irsflow.evals.round_eval import eval_round_path
from irsflow.loop import ALL_PHASES, EVALUATING, GENERATING, SCORING, TRAINING
from irsflow.loop.phases import score_summary_path
from irsflow.loop.questions import heldout_key
from irsflow.stages import IterationInputs, Stage, get_stage
from irsflow.store import JobStore, atomic_write_json, hash_or_missing, hash_path, utc_now

# bump when a phase's output format or a key's parts change, so old cache entries stop matching (a manifest
# entry under an older key reads "inputs changed since it ran" and the phase recomputes). 2: keys named
# phase-<phase>-<hash>, hashing each stage's own settings only.
KEY_VERSION = 2
_manifest_lock = threading.Lock()


def stage_phases(req: TrainRequest) -> tuple[str, ...]:
    """The phases of one round of the request's stage (the stage object says which)."""
    return get_stage(req.stage).phases(req)


def job_stage(store: JobStore) -> Stage:
    """The stage the job was created with (its stored request names it)."""
    return get_stage(store.read_config()["request"].get("stage", "IRS"))


def phase_outputs(store: JobStore, stage: Stage, iteration: int, phase: str) -> list[Path]:
    """The files ``phase`` of round ``iteration`` wrote: the phase's shared files, then the stage's own
    (``stage.outputs``), each of which must exist."""
    d = store.phase_dir(iteration)
    out = {
        GENERATING: [d / "candidates.jsonl"],
        SCORING: [d / "scores.jsonl", score_summary_path(store, iteration)],
        TRAINING: [store.checkpoint(iteration)],
        EVALUATING: [],
    }[check_phase(phase)]
    if phase == EVALUATING:  # the round eval and/or the held-out answers (round 1: the start model's too)
        out += [
            p
            for p in (
                eval_round_path(store, iteration),
                heldout_path(store, iteration),
                *([heldout_path(store, 0)] if iteration == 1 else []),
            )
            if p.exists()
        ]
    own = [p for p in stage.outputs(store, iteration, phase) if p not in out]
    missing = [str(p.relative_to(store.dir)) for p in own if not p.exists()]
    if missing:
        raise IrsflowError(
            f"stage {stage.name}: {phase} of round {iteration} did not write "
            f"{', '.join(missing)} (declared in its outputs)"
        )
    return out + own


def check_phase(phase: str) -> str:
    if phase not in ALL_PHASES:
        raise InputError(f"phase: {phase!r} is not one of {', '.join(ALL_PHASES)}")
    return phase


def iteration_inputs(store: JobStore, req: TrainRequest, iteration: int) -> IterationInputs:
    """The adapter, reward weights and reward history iteration ``iteration`` starts from (the weights
    and history from the score summaries of the rounds before: ``irsflow.loop.phases.record_scores``)."""
    if not 1 <= iteration <= req.shared.n_iterations:
        raise InputError(f"iteration: {iteration} is outside 1..{req.shared.n_iterations}")
    weights = dict(req.shared.dw_config.initial_weights)
    history: list[dict] = []
    for k in range(1, iteration if get_stage(req.stage).moves_weights(req) else 1):
        path = score_summary_path(store, k)
        if not path.exists():
            raise InputError(f"iteration: {iteration} needs iteration {k} scored first ({path} is missing)")
        summary = json.loads(path.read_text(encoding="utf-8"))
        history.append(summary["reward_breakdown"])
        weights = summary["next_weights"]
    adapter = store.read_config().get("init_adapter_path")
    if iteration > 1:
        ckpt = store.checkpoint(iteration - 1)
        if not (ckpt / "adapter_config.json").exists():
            raise InputError(
                f"iteration: {iteration} needs the adapter of iteration {iteration - 1} ({ckpt} is missing)"
            )
        adapter = str(ckpt)
    return IterationInputs(
        adapter=adapter, weights=weights, history=history, previous=iteration - 1 if iteration > 1 else None
    )


def phase_key(store: JobStore, req: TrainRequest, iteration: int, phase: str) -> str:
    """A content key over everything that determines the phase's output: ``phase-<phase>-<hash>``."""
    cfg = req.shared
    inputs = iteration_inputs(store, req, iteration)
    adapter_hash = hash_path(Path(inputs.adapter)) if inputs.adapter else None
    d = store.phase_dir(iteration)
    parts: dict = {
        "v": KEY_VERSION,
        "job": store.job_id,
        "phase": check_phase(phase),
        "iteration": iteration,
        "seed": req.seed,
    }
    parts.update(get_stage(req.stage).key_parts(store, req, phase, inputs, iteration))
    parts.update(heldout_key(req))  # nothing when the split is off
    if phase == GENERATING:
        parts.update(
            model=req.model_id,
            adapter=adapter_hash,
            questions=store.read_config().get("questions_sha256"),
            dataset=req.dataset,
            n_questions=req.n_questions,
            top_k=req.top_k,
            system_prompt=req.system_prompt,
            n_candidates=cfg.n_candidates,
            max_new_tokens=cfg.max_new_tokens,
            sampling=cfg.sampling.model_dump(),
            gen_batch_size=cfg.gen_batch_size,
            load_in_4bit=cfg.load_in_4bit,
        )
        if req.codebook.enabled:  # a disabled codebook changes nothing generated: its settings are no input
            parts.update(codebook=codebook_key_parts(req.codebook, req.scoring))
    elif phase == SCORING:
        parts.update(
            candidates=hash_or_missing(d / "candidates.jsonl"),
            weights=inputs.weights,
            history=inputs.history,
            scoring=req.scoring.model_dump(),
            dw=cfg.dw_config.model_dump(),
        )
        if req.scoring.rules != "builtin:default":  # the file's content, not just its name
            parts.update(rules_sha256=hash_path(Path(req.scoring.rules).expanduser()))
        if req.teacher is not None:
            parts.update(teacher=req.teacher.model_dump(mode="json"))
    elif phase == TRAINING:
        parts.update(
            model=req.model_id,
            adapter=adapter_hash,
            candidates=hash_or_missing(d / "candidates.jsonl"),
            scores=hash_or_missing(d / "scores.jsonl"),
            learning_rate=cfg.learning_rate,
            batch_size=cfg.batch_size,
            epochs=cfg.sft_epochs,
            max_seq_length=cfg.max_seq_length,
            lora=cfg.lora.model_dump(),
            load_in_4bit=cfg.load_in_4bit,
        )
    else:
        parts.update(
            model=req.model_id,
            checkpoint=hash_or_missing(store.checkpoint(iteration)),
            questions=store.read_config().get("questions_sha256"),
            sampling=cfg.sampling.model_dump(),
            max_new_tokens=cfg.max_new_tokens,
            weights=inputs.weights,
            scoring=req.scoring.model_dump(),
            previous=hash_or_missing(eval_round_path(store, iteration - 1)),
        )
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return f"phase-{phase.lower()}-{hashlib.sha256(blob).hexdigest()[:32]}"


def _manifest_path(store: JobStore, iteration: int) -> Path:
    return store.phase_dir(iteration) / "manifest.json"


def read_manifest(store: JobStore, iteration: int) -> dict:
    p = _manifest_path(store, iteration)
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


def record_outputs(store: JobStore, iteration: int, phase: str, key: str) -> dict:
    """Remember the content hashes of what ``phase`` just wrote (the job's stage says which of its own
    files count), under its key."""
    outputs = phase_outputs(store, job_stage(store), iteration, phase)
    entry = {
        "key": key,
        "finished_at": utc_now(),
        "outputs": {str(p.relative_to(store.dir)): hash_path(p) for p in outputs},
    }
    with _manifest_lock:
        manifest = read_manifest(store, iteration)
        manifest[phase] = entry
        atomic_write_json(_manifest_path(store, iteration), manifest)
    return entry


def outputs_valid(store: JobStore, iteration: int, phase: str, key: str) -> tuple[bool, str]:
    """Whether a result cached under ``key`` still describes the files on disk, and why not."""
    entry = read_manifest(store, iteration).get(phase)
    if entry is None:
        return False, "never finished"
    if entry["key"] != key:
        return False, "inputs changed since it ran"
    for rel, digest in entry["outputs"].items():
        p = store.dir / rel
        if not p.exists():
            return False, f"{rel} is missing"
        if hash_path(p) != digest:
            return False, f"{rel} changed since it was written"
    return True, "outputs present and unchanged"


def check_from_iteration(job_id: str, n_iterations: int, from_iteration: int, name: str = "from_iteration") -> int:
    """A rerun's ``from_iteration`` must be one of the job's rounds ``1..n_iterations``: outside them
    ``forced`` is false for every phase, so the rerun would redo nothing and still report success."""
    if not 1 <= from_iteration <= n_iterations:
        raise InputError(f"{name}: job {job_id} has rounds 1..{n_iterations}; {name} {from_iteration} is outside them")
    return from_iteration


def forced(iteration: int, phase: str, from_phase: str | None, from_iteration: int = 1) -> bool:
    """``--from-phase P --from-iteration N`` forces (N, P) and every phase after it."""
    if from_phase is None:
        return False
    order = (iteration, ALL_PHASES.index(check_phase(phase)))
    return order >= (from_iteration, ALL_PHASES.index(check_phase(from_phase)))
