"""Training stages as objects: the request's ``stage`` names one, ``get_stage`` returns it, and every
stage runs the same rounds over the same job directory with the same metrics rows.

    stage     GENERATING (gpu)   SCORING (cpu)        TRAINING (gpu)                  EVALUATING (gpu)
    IRS       N candidates       DW-GRPO rewards      LoRA SFT on the best            optional
    ONPOLICY  N samples          + onpolicy.jsonl     weighted SFT, on-policy+anchors on by default
    DPO/KTO   N candidates       rewards              DPO/KTO on best-vs-worst + files optional
    RM        N candidates       rewards              RewardTrainer, held-out acc.    -
    PPO       rollouts           rewards              PPO, value head, adaptive KL    optional
    GRPO      -                  -                    GRPOTrainer (samples itself)    optional

One module per stage (``irs``, ``onpolicy``, ``preference`` (DPO, KTO), ``grpo``, ``ppo``, ``rm``), each
holding its settings model (its part of ``stage_config``) and its ``Stage`` object (phases, checks
before any model loads, ``train``); ``registry`` lists them, ``base`` defines them. Beside them: the
data stages train on (``data``, ``pairs``). The EVALUATING phase's evaluations live in ``irsflow.evals``,
early stopping and the choice of the final adapter in ``irsflow.jobs``.

Adding a stage touches its module, its test and one entry point, nothing else: the module holds a
``StageSettings`` subclass and a ``Stage`` subclass (its phases, checks, ``train``, the files of its
own it ``writes`` per phase, which the resume manifest then hashes), and an entry point of the group
``irsflow.stages`` names its instance (``registry``; a stage of irsflow itself: one line of
``registry.BUILTIN``). Every process finds it, a Prefect worker's flow runs included. No code outside
this package asks which stage a request names.

    stage = get_stage(req.stage)
    stage.phases(req)                    # ("GENERATING", "SCORING", "TRAINING")
    out = stage.run_training(store, req, 1, inputs)

May import: the base modules, rewards, codebook, settings, loop, training (trainers inside ``train``, so that
validating a request never loads torch or TRL). Never config (a request is an ``irsflow.settings.JobRequest``), jobs,
release, or Prefect.
"""

from irsflow.stages.base import IterationInputs, Stage, StageSettings
from irsflow.stages.registry import get_stage, register, settings_adapter, stage_names, unregister

__all__ = [
    "IterationInputs",
    "Stage",
    "StageSettings",
    "get_stage",
    "register",
    "settings_adapter",
    "stage_names",
    "unregister",
]
