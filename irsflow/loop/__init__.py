"""The round's loop: what every sampling stage shares, as plain functions over a job directory.

    generate.py   sample N candidates per question (transformers, LoRA adapter, OOM halving)
    scoring.py    score candidates with the rewards, pick the best per question
    weights.py    the DW-GRPO dynamic reward weights (slope of each reward's history)
    phases.py     run_generate / run_score over a job dir, progress, finalize
    questions.py  the questions a job trains on and the ones it holds out

The phase names live here and only here (light to import: the CLI reads them).

May import: the base modules, teacher, rewards, codebook. Never training, stages, config (annotations
only), jobs, release, or Prefect.
"""
from typing import Literal

GENERATING, SCORING, TRAINING, EVALUATING = "GENERATING", "SCORING", "TRAINING", "EVALUATING"
ALL_PHASES = (GENERATING, SCORING, TRAINING, EVALUATING)  # in the order any stage runs them
PHASES = (GENERATING, SCORING, TRAINING)  # an IRS round
Phase = Literal["GENERATING", "SCORING", "TRAINING", "EVALUATING"]
