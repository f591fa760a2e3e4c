"""The ``irsflow`` command.

    irsflow train --request configs/demo.json    # run a job through Prefect, print its id
    irsflow status JOB_ID                        # seed 000 section 4.2 shape
    irsflow metrics JOB_ID                       # metrics.jsonl as a JSON array (section 4.3)
    irsflow validate --request FILE              # check a request and its question set, load nothing
    irsflow rewards                              # reward names usable in dw_config.initial_weights
    irsflow build-tiny DIR                       # a tiny random chat model for tests

Jobs run against the Prefect server named by PREFECT_API_URL, else Prefect's local default.
Exit codes: 0 ok, 1 the job failed, 2 bad input (nothing was run).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from irsflow.errors import InputError


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _fmt(d: dict) -> str:
    return ", ".join(f"{k}={'-' if v is None else f'{v:.3f}'}" for k, v in d.items())


def _quiet_progress_bars() -> None:
    """Per-phase progress goes to metrics.jsonl and the logs; library bars only clutter the console."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def cmd_train(args) -> int:
    from irsflow.config import load_request
    from irsflow.job import create_job, job_status

    req = load_request(args.request)
    store = create_job(req, args.job_id)  # validates the question set and device before Prefect starts
    print(f"job_id: {store.job_id}", flush=True)
    print(f"job_dir: {store.dir}", flush=True)
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "irsflow")
    _quiet_progress_bars()
    from flows.irs import irs_train

    try:
        result = irs_train(request=req, job_id=store.job_id)
    except Exception as err:  # the flow already recorded state=failed in the job dir
        print(f"job {store.job_id} failed: {type(err).__name__}: {err}", file=sys.stderr)
        _print_json(job_status(store.job_id))
        return 1
    for it in result["iterations"]:
        print(f"iter {it['iter']}: avg_reward={it['avg_reward']:.4f}  breakdown: {_fmt(it['reward_breakdown'])}"
              f"  weights: {_fmt(it['weights'])}  loss={it['loss']:.4f}")
    print(f"final adapter: {result['final_adapter']}")
    print(f"job_dir: {result['job_dir']}")
    return 0


def cmd_status(args) -> int:
    from irsflow.job import job_status

    _print_json(job_status(args.job_id))
    return 0


def cmd_metrics(args) -> int:
    from irsflow.job import job_metrics

    _print_json(job_metrics(args.job_id))
    return 0


def cmd_validate(args) -> int:
    from irsflow.config import load_request
    from irsflow.job import preflight

    req = load_request(args.request)
    _print_json({"ok": True, **preflight(req), "request": req.model_dump(mode="json")})
    return 0


def cmd_rewards(args) -> int:
    from irsflow.rewards import known_rewards

    print("\n".join(known_rewards()))
    return 0


def cmd_build_tiny(args) -> int:
    from irsflow.models.tiny import build_tiny_model

    print(build_tiny_model(args.path, seed=args.seed))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="irsflow", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="run a training job through Prefect")
    t.add_argument("--request", required=True, help="request body (seed 000 section 4.1), JSON or YAML")
    t.add_argument("--job-id", default=None, help="use this job id instead of a fresh one")
    t.set_defaults(fn=cmd_train)
    for name, fn, help_ in (("status", cmd_status, "job state, phase and metrics"),
                            ("metrics", cmd_metrics, "metrics.jsonl as a JSON array")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("job_id")
        s.set_defaults(fn=fn)
    v = sub.add_parser("validate", help="check a request file and its question set")
    v.add_argument("--request", required=True)
    v.set_defaults(fn=cmd_validate)
    sub.add_parser("rewards", help="list reward names").set_defaults(fn=cmd_rewards)
    b = sub.add_parser("build-tiny", help="write a tiny random chat model (tests, benchmarks)")
    b.add_argument("path")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(fn=cmd_build_tiny)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
