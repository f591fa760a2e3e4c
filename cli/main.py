"""The ``irsflow`` command.

    irsflow train --request configs/demo.json    # run a job through Prefect, print its id
    irsflow rerun JOB_ID [--from-phase SCORING]  # resume a failed job at its failed phase
    irsflow status JOB_ID                        # state, phase and metrics (the job API's status)
    irsflow metrics JOB_ID                       # metrics.jsonl as a JSON array
    irsflow validate --request FILE              # check a request and its question set, load nothing
    irsflow rewards                              # reward names usable in dw_config.initial_weights
    irsflow build-tiny DIR                       # a tiny random chat model for tests
    irsflow up | down                            # the local stack: Prefect server, pools, workers
    irsflow doctor [--repair]                    # limits, leaked GPU slots, servers
    irsflow api [--port 8080]                    # the job API (POST /api/train ...)
    irsflow codebook list|add|disable|export     # rules from human corrections, injected into prompts
    irsflow feedback etl|label-studio push|pull  # Langfuse thumbs + Label Studio corrections -> SFT rows, pairs
    irsflow teacher label|qc|prompts|export      # the teacher LLM; `irsflow inspect JOB_ID` reports a job
    irsflow weekly | eval-gate | rollback | eval # the weekly cycle, the eval gate, the eval suites

Jobs run against the Prefect server named by PREFECT_API_URL, else the local stack of `irsflow up`
when it runs, else Prefect's temporary local server.
Prefect's temporary server gets ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (default here
120 s; Prefect's own 20 s is too short for a busy 2-core machine) to start.
Exit codes: 0 ok, 1 the job failed, 2 bad input (nothing was run), 3 no Prefect server could be reached
or started.

Each command group lives in its own module (jobs, stack, codebook, feedback, teacher, eval) and
registers its subcommands; the commands that start nothing (validate, rewards, build-tiny) are here.
Run it as ``irsflow ARGS`` or ``python -m cli ARGS``.
"""

from __future__ import annotations

import argparse
import os
import sys

from cli.codebook import add_codebook_parser
from cli.eval import add_eval_parsers
from cli.feedback import add_feedback_parser
from cli.jobs import add_job_parsers, print_json
from cli.stack import (
    EPHEMERAL_TIMEOUT_ENV,
    EPHEMERAL_TIMEOUT_S,
    PrefectUnavailable,
    add_stack_parsers,
    default_api_url,
    ephemeral_failure,
)
from cli.teacher import add_teacher_parsers
from irsflow.errors import InputError

# commands that never talk to a Prefect server: no need to look for the local stack first
OFFLINE_COMMANDS = ("up", "down", "validate", "rewards", "build-tiny", "codebook")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in OFFLINE_COMMANDS:
        default_api_url()
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
        if (unavailable := ephemeral_failure(err)) is None:
            raise
        print(f"error: {unavailable}", file=sys.stderr)
        return 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="irsflow", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    add_job_parsers(sub)  # train, status, metrics, rerun
    add_stack_parsers(sub)  # up, down, doctor, api
    v = sub.add_parser("validate", help="check a request file and its question set")
    v.add_argument("--request", required=True)
    v.set_defaults(fn=cmd_validate)
    sub.add_parser("rewards", help="list reward names").set_defaults(fn=cmd_rewards)
    b = sub.add_parser("build-tiny", help="write a tiny random chat model (tests, benchmarks)")
    b.add_argument("path")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(fn=cmd_build_tiny)
    add_codebook_parser(sub)
    add_feedback_parser(sub)
    add_teacher_parsers(sub)  # teacher, inspect
    add_eval_parsers(sub)  # weekly, eval-gate, rollback, eval
    return p


def cmd_validate(args) -> int:
    from irsflow.config import load_request
    from irsflow.jobs.job import preflight

    req = load_request(args.request)
    print_json({"ok": True, **preflight(req), "request": req.model_dump(mode="json")})
    return 0


def cmd_rewards(args) -> int:
    from irsflow.rewards import known_rewards

    print("\n".join(known_rewards()))
    return 0


def cmd_build_tiny(args) -> int:
    from irsflow.models.tiny import build_tiny_model

    print(build_tiny_model(args.path, seed=args.seed))
    return 0
