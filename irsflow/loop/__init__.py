"""The round's loop: what every sampling stage shares, as plain functions over a job directory.

    generate.py   sample N candidates per question (transformers, LoRA adapter, OOM halving)
    scoring.py    score candidates with the rewards, pick the best per question
    weights.py    the DW-GRPO dynamic reward weights (slope of each reward's history)
    phases.py     run_generate / run_score over a job dir, record_scores (score_summary.json), progress, finalize
    questions.py  the questions a job trains on and the ones it holds out

The phase names live here and only here (light to import: the CLI reads them).

A request is read through ``irsflow.settings.JobRequest`` (the shape of ``irsflow.config.TrainRequest``).

May import: the base modules, teacher, rewards, codebook, settings. Never training, stages, config,
jobs, release, or Prefect (not even for annotations: the import rule counts those too).
"""

from typing import Literal

GENERATING, SCORING, TRAINING, EVALUATING = "GENERATING", "SCORING", "TRAINING", "EVALUATING"
ALL_PHASES = (GENERATING, SCORING, TRAINING, EVALUATING)  # in the order any stage runs them
PHASES = (GENERATING, SCORING, TRAINING)  # an IRS round
Phase = Literal["GENERATING", "SCORING", "TRAINING", "EVALUATING"]
