"""``irsflow train|status|metrics|rerun``: run a training job through Prefect and follow it.

    irsflow train --request configs/demo.json    # run a job through Prefect, print its id
    irsflow rerun JOB_ID [--from-phase SCORING]  # resume a failed job at its failed phase
    irsflow status JOB_ID                        # state, phase and metrics (the job API's status)
    irsflow metrics JOB_ID                       # metrics.jsonl as a JSON array

Exit codes: 0 ok, 1 the job failed, 2 bad input (nothing was run), 3 no Prefect server could be
reached or started.
"""

from __future__ import annotations

import json
import os
import sys

from cli.stack import ephemeral_failure
from irsflow.loop import ALL_PHASES


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _fmt(d: dict | None) -> str:
    """Reward means or weights; a stage that scores nothing has none."""
    return ", ".join(f"{k}={'-' if v is None else f'{v:.3f}'}" for k, v in d.items()) if d else "-"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _quiet_progress_bars() -> None:
    """Per-phase progress goes to metrics.jsonl and the logs; library bars only clutter the console."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def cmd_train(args) -> int:
    from irsflow.config import load_request
    from irsflow.jobs.job import create_job, job_status

    req = load_request(args.request)
    store = create_job(req, args.job_id)  # validates the question set and device before Prefect starts
    print(f"job_id: {store.job_id}", flush=True)
    print(f"job_dir: {store.dir}", flush=True)
    _quiet_progress_bars()
    from flows.train import train_job

    try:
        result = train_job(request=req, job_id=store.job_id)
    except Exception as err:  # the flow already recorded state=failed in the job dir
        if (unavailable := ephemeral_failure(err)) is not None:
            raise unavailable from None
        print(f"job {store.job_id} failed: {type(err).__name__}: {err}", file=sys.stderr)
        print_json(job_status(store.job_id))
        return 1
    _print_iterations(result)
    return 0


def _print_iterations(result: dict) -> None:
    for it in result["iterations"]:
        cached = f"  cached: {', '.join(p.lower() for p in it['cached'])}" if it.get("cached") else ""
        print(
            f"iter {it['iter']}: avg_reward={_num(it['avg_reward'])}  breakdown: {_fmt(it['reward_breakdown'])}"
            f"  weights: {_fmt(it['weights'])}  loss={it['loss']:.4f}{cached}"
        )
    print(f"final adapter: {result['final_adapter']}")
    print(f"job_dir: {result['job_dir']}")


def cmd_rerun(args) -> int:
    """Resume a job in this process (or queue it on its deployment with --submit); finished phases
    whose files are intact come back from Prefect's cache."""
    from irsflow.jobs.job import job_request, job_status, open_job
    from irsflow.jobs.resume import check_from_iteration, check_phase

    store = open_job(args.job_id)
    if args.from_phase:
        check_phase(args.from_phase)
    check_from_iteration(store.job_id, job_request(store).shared.n_iterations, args.from_iteration, "--from-iteration")
    from deployments.runs import release_dead_run

    release_dead_run(store, force=args.force)  # refuses while the job's process is still alive
    params = {
        "request": None,
        "job_id": store.job_id,
        "from_phase": args.from_phase,
        "from_iteration": args.from_iteration,
    }
    if args.submit:
        from prefect.deployments import run_deployment

        run = run_deployment(args.deployment, parameters=params, timeout=0)
        print(f"job_id: {store.job_id}\nflow_run_id: {run.id}\nqueued on {args.deployment}")
        return 0
    _quiet_progress_bars()
    from flows.train import train_job

    try:
        result = train_job(**params)
    except Exception as err:
        print(f"job {store.job_id} failed again: {type(err).__name__}: {err}", file=sys.stderr)
        print_json(job_status(store.job_id))
        return 1
    _print_iterations(result)
    return 0


def cmd_status(args) -> int:
    from irsflow.jobs.job import job_status

    print_json(job_status(args.job_id))
    return 0


def cmd_metrics(args) -> int:
    from irsflow.jobs.job import job_metrics

    print_json(job_metrics(args.job_id))
    return 0


def add_job_parsers(sub) -> None:
    t = sub.add_parser("train", help="run a training job through Prefect")
    t.add_argument("--request", required=True, help="request body (the job API's POST /api/train body), JSON or YAML")
    t.add_argument("--job-id", default=None, help="use this job id instead of a fresh one")
    t.set_defaults(fn=cmd_train)
    for name, fn, help_ in (
        ("status", cmd_status, "job state, phase and metrics"),
        ("metrics", cmd_metrics, "metrics.jsonl as a JSON array"),
    ):
        s = sub.add_parser(name, help=help_)
        s.add_argument("job_id")
        s.set_defaults(fn=fn)
    r = sub.add_parser("rerun", help="resume a job: finished phases come back from the cache")
    r.add_argument("job_id")
    r.add_argument("--from-phase", choices=ALL_PHASES, default=None, help="force this phase and every phase after it")
    r.add_argument("--from-iteration", type=int, default=1, help="iteration --from-phase applies to (default 1)")
    r.add_argument("--submit", action="store_true", help="queue it on the deployment instead of running here")
    r.add_argument("--deployment", default="train/manual", help="with --submit: FLOW/DEPLOYMENT to queue it on")
    r.add_argument("--force", action="store_true", help="rerun even if the job's last run may still be alive")
    r.set_defaults(fn=cmd_rerun)
