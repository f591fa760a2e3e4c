"""Training stages as data: ``TrainRequest.stage`` picks one, and every stage runs the same rounds
over the same job directory with the same metrics rows, through one runner:

    stage     GENERATING (gpu)   SCORING (cpu)        TRAINING (gpu)                  EVALUATING (gpu)
    IRS       N candidates       DW-GRPO rewards      LoRA SFT on the best            optional
    ONPOLICY  N samples          + onpolicy.jsonl     weighted SFT, on-policy+anchors on by default
    DPO/KTO   N candidates       rewards              DPO/KTO on best-vs-worst + files optional
    RM        N candidates       rewards              RewardTrainer, held-out acc.    -
    PPO       rollouts           rewards              PPO, value head, adaptive KL    optional
    GRPO      -                  -                    GRPOTrainer (samples itself)    optional

(``stage_phases`` in ``irsflow.resume`` says which phases a request's rounds have.) A stage adds
only its TRAINING function (``irsflow.stages.trainers``) and, for ONPOLICY, a file after scoring.

    out = run_phase(store, req, iteration, "TRAINING", progress=None, teacher_api_key=None)
"""
from __future__ import annotations

from irsflow.config import TrainRequest
from irsflow.phases import run_generate, run_score
from irsflow.resume import EVALUATING, GENERATING, SCORING, TRAINING, iteration_inputs
from irsflow.store import JobStore, ProgressFn, hash_path, write_jsonl


def after_scoring(store: JobStore, req: TrainRequest, iteration: int) -> dict:
    """ONPOLICY: the round's samples as ChatML JSONL with metadata and a score/weight column."""
    if req.stage != "ONPOLICY":
        return {}
    from irsflow.stages.data import onpolicy_rows

    rows = onpolicy_rows(store, req, iteration)
    path = store.phase_dir(iteration) / "onpolicy.jsonl"
    write_jsonl(path, rows)
    return {"onpolicy_rows": len(rows), "onpolicy_path": str(path), "onpolicy_sha256": hash_path(path)}


def run_phase(store: JobStore, req: TrainRequest, iteration: int, phase: str, progress: ProgressFn | None = None,
              teacher_api_key: str | None = None) -> dict:
    """Run one phase of one round of ``req.stage`` (inputs derived from the job dir)."""
    inputs = iteration_inputs(store, req, iteration)
    if phase == GENERATING:
        return run_generate(store, req, iteration, inputs.adapter, progress=progress)
    if phase == SCORING:
        out = run_score(store, req, iteration, inputs.weights, inputs.history, progress=progress,
                        teacher_api_key=teacher_api_key)
        return {**out, **after_scoring(store, req, iteration)}
    if phase == TRAINING:
        from irsflow.phases import phase_reporter
        from irsflow.stages.trainers import TRAINERS

        if req.stage == "IRS":  # run_sft reports its own progress
            return TRAINERS["IRS"](store, req, iteration, inputs, progress)
        report = phase_reporter(store, iteration, TRAINING, progress)
        report(0)
        extra = {"teacher_api_key": teacher_api_key} if req.stage == "GRPO" else {}  # GRPO scores inside training
        return TRAINERS[req.stage](store, req, iteration, inputs, report, **extra)
    if phase == EVALUATING:
        from irsflow.stages.evaluate import run_round_eval

        return run_round_eval(store, req, iteration, progress=progress)
    raise ValueError(f"phase: unknown {phase!r}")
