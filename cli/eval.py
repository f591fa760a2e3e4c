"""`irsflow eval-gate`, `irsflow rollback`, `irsflow eval`, `irsflow weekly`: the eval gate and the
weekly cycle from the shell.

    irsflow weekly [--settings weekly.json] [--submit]      # one weekly cycle (flow weekly-cycle)

    irsflow eval-gate --job JOB_ID [--settings gate.json]   # one gate run through Prefect (flow eval-gate)
    irsflow rollback [--settings gate.json]                 # champion -> previous, vLLM reloaded
    irsflow eval --model builtin:smollm2-135m-instruct [--adapter DIR] [--settings gate.json]

--settings: an EvalGateSettings JSON (suites, gate thresholds, tracking, vllm).
"""

from __future__ import annotations

import json

from cli.teacher import load_json


def _settings(path: str | None):
    from irsflow.release.gate_run import EvalGateSettings

    return load_json(EvalGateSettings, path, "settings") or EvalGateSettings()


def cmd_gate(args) -> int:
    from flows.eval_gate import eval_gate

    print(
        json.dumps(
            eval_gate(job_id=args.job, version=args.version, settings=_settings(args.settings)), indent=2, default=str
        )
    )
    return 0


def cmd_rollback(args) -> int:
    from irsflow.release.gate_run import rollback

    print(json.dumps(rollback(_settings(args.settings)), indent=2, default=str))
    return 0


def cmd_eval(args) -> int:
    from irsflow.evals.suites import run_suites
    from irsflow.models import resolve_model
    from irsflow.release.adapter_cache import resolve_adapter

    s = _settings(args.settings)
    suites = s.suites.model_copy(
        update={
            k: v for k, v in (("mc_samples", args.samples), ("mc_k", args.k), ("mc_mode", args.mode)) if v is not None
        }
    )
    adapter = resolve_adapter(args.adapter, s.tracking)
    # a configured teacher takes its key from the environment (TeacherConfig.with_key)
    scores, details = run_suites(resolve_model(args.model), adapter, suites, load_in_4bit=s.load_in_4bit)
    from irsflow.release.gate_run import scores_to_json
    from irsflow.release.registry import Registry
    from irsflow.store import atomic_write_json, data_dir, new_job_id

    out = data_dir() / "evals" / "standalone" / f"eval-{new_job_id()}.json"
    atomic_write_json(out, {"model": args.model, "adapter": adapter, **scores_to_json(scores, details)})
    run_id = Registry(s.tracking).log_eval(
        f"eval-{out.stem}",
        {"model": args.model, "adapter": args.adapter or "", "suites": suites.model_dump(mode="json")},
        scores.scalars,
        out,
    )
    print(
        json.dumps(
            {"scalars": scores.scalars, "generation": details["generation"], "file": str(out), "mlflow_run_id": run_id},
            indent=2,
        )
    )
    return 0


def cmd_weekly(args) -> int:
    from irsflow.release.weekly import WeeklySettings

    settings = load_json(WeeklySettings, args.settings, "settings") or WeeklySettings()  # bad settings fail here
    if args.submit:
        from prefect.deployments import run_deployment

        run = run_deployment(
            "weekly-cycle/weekly", parameters={"settings": settings.model_dump(mode="json")}, timeout=0
        )
        print(json.dumps({"flow_run_id": str(run.id), "name": run.name}))
        return 0
    from flows.weekly_cycle import weekly_cycle

    out = weekly_cycle(settings=settings)
    print(json.dumps({k: out[k] for k in ("cycle_id", "outcome", "report")}, indent=2))
    return 0


def add_eval_parsers(sub) -> None:
    w = sub.add_parser("weekly", help="one weekly cycle: feedback -> prompts -> teacher -> train -> gate -> vLLM")
    w.add_argument("--settings", default=None, help="a WeeklySettings JSON (default: the built-in defaults)")
    w.add_argument("--submit", action="store_true", help="queue it on the weekly deployment instead of running here")
    w.set_defaults(fn=cmd_weekly)
    g = sub.add_parser("eval-gate", help="evaluate a job's adapter vs the champion, gate, promote, hot-load")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--job", default=None, help="a finished job: register its final adapter first")
    src.add_argument("--version", default=None, help="a registered version (default: alias challenger)")
    g.add_argument("--settings", default=None)
    g.set_defaults(fn=cmd_gate)
    r = sub.add_parser("rollback", help="move the champion alias back and reload vLLM with it")
    r.add_argument("--settings", default=None)
    r.set_defaults(fn=cmd_rollback)
    e = sub.add_parser("eval", help="run the eval suites on a model (+ adapter) and print the metrics")
    e.add_argument("--model", required=True)
    e.add_argument(
        "--adapter", default=None, help="adapter folder, registry:champion / registry:3, or models:/NAME@ALIAS"
    )
    e.add_argument("--samples", type=int, default=None, help="only the first N multiple-choice questions")
    e.add_argument("--k", type=int, default=None, help="samples per MC question, majority vote")
    e.add_argument("--mode", choices=["generate", "loglik"], default=None, help="MC answer mode")
    e.add_argument("--settings", default=None)
    e.set_defaults(fn=cmd_eval)
