"""The ``irsflow`` command.

    irsflow train --request configs/demo.json    # run a job through Prefect, print its id
    irsflow rerun JOB_ID [--from-phase SCORING]  # resume a failed job at its failed phase
    irsflow status JOB_ID                        # seed 000 section 4.2 shape
    irsflow metrics JOB_ID                       # metrics.jsonl as a JSON array (section 4.3)
    irsflow validate --request FILE              # check a request and its question set, load nothing
    irsflow rewards                              # reward names usable in dw_config.initial_weights
    irsflow build-tiny DIR                       # a tiny random chat model for tests
    irsflow up | down                            # the local stack: Prefect server, pools, workers
    irsflow doctor [--repair]                    # limits, leaked GPU slots, servers
    irsflow api [--port 8080]                    # the seed's job API (POST /api/train ...)
    irsflow codebook list|add|disable|export     # rules from human corrections, injected into prompts
    irsflow feedback etl|label-studio push|pull    # Langfuse thumbs + Label Studio corrections -> SFT rows, pairs

Jobs run against the Prefect server named by PREFECT_API_URL, else the local stack of `irsflow up`
when it runs, else Prefect's temporary local server.
Prefect's temporary server gets ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (default here
120 s; Prefect's own 20 s is too short for a busy 2-core machine) to start.
Exit codes: 0 ok, 1 the job failed, 2 bad input (nothing was run), 3 no Prefect server could be reached
or started.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from irsflow.errors import InputError
from irsflow.loop import ALL_PHASES


EPHEMERAL_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
EPHEMERAL_TIMEOUT_S = "120"


class PrefectUnavailable(Exception):
    """Prefect's temporary server did not start in time (and no server was configured)."""


def _ephemeral_failure(err: BaseException) -> PrefectUnavailable | None:
    """The error Prefect raises when its temporary server does not come up, anywhere in the chain."""
    seen = err
    while seen is not None:
        if "attempting to connect to ephemeral Prefect API server" in str(seen):
            return PrefectUnavailable(
                f"Prefect's temporary server did not start within {os.environ.get(EPHEMERAL_TIMEOUT_ENV)} s "
                f"(this machine may be busy). Start the local stack once with `make up` (or `irsflow up`) so "
                f"jobs use it, point PREFECT_API_URL at a running server, or raise {EPHEMERAL_TIMEOUT_ENV}.")
        seen = seen.__cause__ or seen.__context__
    return None


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
    from irsflow.jobs.job import create_job, job_status

    req = load_request(args.request)
    store = create_job(req, args.job_id)  # validates the question set and device before Prefect starts
    print(f"job_id: {store.job_id}", flush=True)
    print(f"job_dir: {store.dir}", flush=True)
    _quiet_progress_bars()
    from flows.irs import irs_train

    try:
        result = irs_train(request=req, job_id=store.job_id)
    except Exception as err:  # the flow already recorded state=failed in the job dir
        if (unavailable := _ephemeral_failure(err)) is not None:
            raise unavailable from None
        print(f"job {store.job_id} failed: {type(err).__name__}: {err}", file=sys.stderr)
        _print_json(job_status(store.job_id))
        return 1
    _print_iterations(result)
    return 0


def _print_iterations(result: dict) -> None:
    for it in result["iterations"]:
        cached = f"  cached: {', '.join(p.lower() for p in it['cached'])}" if it.get("cached") else ""
        print(f"iter {it['iter']}: avg_reward={it['avg_reward']:.4f}  breakdown: {_fmt(it['reward_breakdown'])}"
              f"  weights: {_fmt(it['weights'])}  loss={it['loss']:.4f}{cached}")
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
    check_from_iteration(store.job_id, job_request(store).irs_config.n_iterations, args.from_iteration,
                         "--from-iteration")
    from deployments.runs import release_dead_run

    release_dead_run(store, force=args.force)  # refuses while the job's process is still alive
    params = {"request": None, "job_id": store.job_id, "from_phase": args.from_phase,
              "from_iteration": args.from_iteration}
    if args.submit:
        from prefect.deployments import run_deployment

        run = run_deployment(args.deployment, parameters=params, timeout=0)
        print(f"job_id: {store.job_id}\nflow_run_id: {run.id}\nqueued on {args.deployment}")
        return 0
    _quiet_progress_bars()
    from flows.irs import irs_train

    try:
        result = irs_train(**params)
    except Exception as err:
        print(f"job {store.job_id} failed again: {type(err).__name__}: {err}", file=sys.stderr)
        _print_json(job_status(store.job_id))
        return 1
    _print_iterations(result)
    return 0


def cmd_up(args) -> int:
    from deployments.stack import up

    st = up(port=args.port, api_url=args.api_url, workers=not args.no_workers)
    print(f"{'reusing' if st.get('reused') else 'started'} the irsflow stack")
    for name, p in st["procs"].items():
        print(f"  {name}: pid {p['pid']}  log {p['log']}")
    print(f"Prefect UI:  {st['ui_url']}\nexport PREFECT_API_URL={st['api_url']}")
    return 0


def cmd_down(args) -> int:
    from deployments.stack import down

    stopped = down()
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def cmd_doctor(args) -> int:
    from deployments.doctor import format_report, run_doctor

    checks, code = run_doctor(repair=args.repair)
    print(json.dumps(checks, indent=2) if args.json else format_report(checks))
    return code


def cmd_api(args) -> int:
    from deployments.api import serve

    serve(host=args.host, port=args.port, no_auth=args.no_auth)  # InputError without a token: exit 2
    return 0


def cmd_status(args) -> int:
    from irsflow.jobs.job import job_status

    _print_json(job_status(args.job_id))
    return 0


def cmd_metrics(args) -> int:
    from irsflow.jobs.job import job_metrics

    _print_json(job_metrics(args.job_id))
    return 0


def cmd_validate(args) -> int:
    from irsflow.config import load_request
    from irsflow.jobs.job import preflight

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
    r = sub.add_parser("rerun", help="resume a job: finished phases come back from the cache")
    r.add_argument("job_id")
    r.add_argument("--from-phase", choices=ALL_PHASES, default=None,
                   help="force this phase and every phase after it")
    r.add_argument("--from-iteration", type=int, default=1, help="iteration --from-phase applies to (default 1)")
    r.add_argument("--submit", action="store_true", help="queue it on the deployment instead of running here")
    r.add_argument("--deployment", default="irs-train/irs-manual")
    r.add_argument("--force", action="store_true", help="rerun even if the job's last run may still be alive")
    r.set_defaults(fn=cmd_rerun)
    u = sub.add_parser("up", help="start the local stack (Prefect server, pools, deployments, workers)")
    u.add_argument("--port", type=int, default=int(os.environ.get("IRSFLOW_PREFECT_PORT", "4200")))
    u.add_argument("--api-url", default=None, help="use this Prefect server instead of starting one")
    u.add_argument("--no-workers", action="store_true")
    u.set_defaults(fn=cmd_up)
    sub.add_parser("down", help="stop what `irsflow up` started").set_defaults(fn=cmd_down)
    d = sub.add_parser("doctor", help="check limits, leaked GPU slots, pools and servers")
    d.add_argument("--repair", action="store_true", help="create missing limits, free leaked slots")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_doctor)
    a = sub.add_parser("api", help="serve the job API (seed 000 section 4)")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=8080)
    a.add_argument("--no-auth", action="store_true",
                   help="serve without IRSFLOW_API_TOKEN (refused otherwise), on 127.0.0.1 only")
    a.set_defaults(fn=cmd_api)
    v = sub.add_parser("validate", help="check a request file and its question set")
    v.add_argument("--request", required=True)
    v.set_defaults(fn=cmd_validate)
    sub.add_parser("rewards", help="list reward names").set_defaults(fn=cmd_rewards)
    b = sub.add_parser("build-tiny", help="write a tiny random chat model (tests, benchmarks)")
    b.add_argument("path")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(fn=cmd_build_tiny)
    from flows.cli_codebook import add_codebook_parser

    add_codebook_parser(sub)
    from flows.cli_feedback import add_feedback_parser

    add_feedback_parser(sub)
    from flows.cli_teacher import add_teacher_parsers

    add_teacher_parsers(sub)
    from flows.cli_eval import add_eval_parsers

    add_eval_parsers(sub)
    return p


def _default_api_url(command: str) -> None:
    """Without PREFECT_API_URL, talk to the local stack when one runs (so runs show in its UI)."""
    if os.environ.get("PREFECT_API_URL") or command in ("up", "down", "validate", "rewards", "build-tiny", "codebook"):
        return
    from deployments.stack import api_url_from_stack

    url = api_url_from_stack()
    if url:
        os.environ["PREFECT_API_URL"] = url


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _default_api_url(args.command)
    os.environ.setdefault(EPHEMERAL_TIMEOUT_ENV, EPHEMERAL_TIMEOUT_S)  # before Prefect reads its settings
    try:
        return args.fn(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PrefectUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except Exception as err:
        if (unavailable := _ephemeral_failure(err)) is None:
            raise
        print(f"error: {unavailable}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
