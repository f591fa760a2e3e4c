"""From a trained adapter to the one users talk to: is it better, and is it served?

    registry.py        MLflow runs, model versions, aliases (champion, history), rollback
    adapter_cache.py   registry URIs resolved to a local, verified copy keyed by version
    serving.py         vLLM LoRA hot-load, switch and verification probes
    gate_run.py        one gate run of the eval gate: register, evaluate, decide, deploy, card + changelog
    weekly.py          the weekly cycle's settings, prompt set and report

May import: the base modules, teacher, rewards, codebook, feedback, settings, loop, stages, config, labelling,
evals. Never ``irsflow.jobs`` or Prefect.
"""
