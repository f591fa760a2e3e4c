"""``irsflow up|down|doctor|api``, and which Prefect server the other commands reach.

    irsflow up [--port 4200] [--api-url URL] [--no-workers]   # the local stack (deployments/stack.py)
    irsflow down                                             # stop what `up` started
    irsflow doctor [--repair] [--json]                       # limits, leaked GPU slots, servers
    irsflow api [--host H] [--port 8080] [--no-auth]         # the job API (deployments/api.py)

Without PREFECT_API_URL, commands talk to the local stack of ``irsflow up`` when it runs (so their
runs show in its UI), else Prefect starts a temporary server, which gets
``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` to come up.

The ``deployments`` modules are imported by the command that needs them, not at import time:
they load httpx, Prefect and FastAPI, which ``irsflow --help`` does not need.
"""

from __future__ import annotations

import json
import os

EPHEMERAL_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
EPHEMERAL_TIMEOUT_S = "120"


class PrefectUnavailable(Exception):
    """Prefect's temporary server did not start in time (and no server was configured)."""


def ephemeral_failure(err: BaseException) -> PrefectUnavailable | None:
    """The error Prefect raises when its temporary server does not come up, anywhere in the chain."""
    seen = err
    while seen is not None:
        if "attempting to connect to ephemeral Prefect API server" in str(seen):
            return PrefectUnavailable(
                f"Prefect's temporary server did not start within {os.environ.get(EPHEMERAL_TIMEOUT_ENV)} s "
                f"(this machine may be busy). Start the local stack once with `make up` (or `irsflow up`) so "
                f"jobs use it, point PREFECT_API_URL at a running server, or raise {EPHEMERAL_TIMEOUT_ENV}."
            )
        seen = seen.__cause__ or seen.__context__
    return None


def _local_stack():
    """``deployments.stack``, imported on first use (up, down, and finding a running stack)."""
    import deployments.stack

    return deployments.stack


def default_api_url() -> None:
    """Without PREFECT_API_URL, talk to the local stack when one runs (so runs show in its UI)."""
    if os.environ.get("PREFECT_API_URL"):
        return
    url = _local_stack().api_url_from_stack()
    if url:
        os.environ["PREFECT_API_URL"] = url


def cmd_up(args) -> int:
    st = _local_stack().up(port=args.port, api_url=args.api_url, workers=not args.no_workers)
    print(f"{'reusing' if st.get('reused') else 'started'} the irsflow stack")
    for line in st.get("migrated", []):  # deployments renamed since an earlier `up`, moved by this one
        print(f"  {line}")
    for name, p in st["procs"].items():
        print(f"  {name}: pid {p['pid']}  log {p['log']}")
    print(f"Prefect UI:  {st['ui_url']}\nexport PREFECT_API_URL={st['api_url']}")
    return 0


def cmd_down(args) -> int:
    stopped = _local_stack().down()
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


def add_stack_parsers(sub) -> None:
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
    a = sub.add_parser("api", help="serve the job API (POST /api/train, GET /api/train/status/JOB_ID)")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=8080)
    a.add_argument(
        "--no-auth", action="store_true", help="serve without IRSFLOW_API_TOKEN (refused otherwise), on 127.0.0.1 only"
    )
    a.set_defaults(fn=cmd_api)
