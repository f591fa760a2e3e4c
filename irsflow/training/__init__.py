"""The trainers: each takes a base model (and the adapter to continue), the rows to learn from and
an output folder, trains a LoRA adapter with TRL/PEFT and writes it atomically.

- ``sft``          weighted SFT on the selected answers (IRS's and ONPOLICY's training phase)
- ``preference``   DPO and KTO on preference pairs / thumbs, and ``pair_margins``
- ``grpo``         GRPO on the reward-contract scorers of ``irsflow.rewards``
- ``ppo``          compact PPO (LoRA policy + value head, adaptive KL) over scored rollouts
- ``reward_model`` the trainer of the ``rm`` scorer (the scorer itself is ``irsflow.rewards.rm``)
- ``onpolicy``     mixing on-policy rows with anchors, with loss weights
- ``common``       what the trainers share: trainable model, training arguments, ``fit``
- ``trl_compat``   plain-torch stand-ins for TRL kernels that need Triton (CPU training)

    from irsflow.training.sft import sft_examples, train_sft
    stats = train_sft(model_path, adapter_in, sft_examples(rows, best), out_dir, learning_rate=2e-5, ...)

Every trainer returns a stats dict (loss, steps, seconds, memory after release) and frees its model
before returning; torch, transformers, peft and trl are imported inside the functions.

Layer 7: this package may import itself and the lower layers only - the base modules
(``irsflow.errors``, ``store``, ``dataset``, ``retry``, ``models``), ``irsflow.teacher``,
``irsflow.rewards``, ``irsflow.codebook``, ``irsflow.feedback``, ``irsflow.settings`` and ``irsflow.loop`` - never
``irsflow.stages``, ``config``, ``labelling``, ``evals``, ``release``, ``jobs``, nor prefect,
``tasks``, ``flows``, ``deployments`` or ``cli``.
"""
