"""The job API in front of the training deployment (default ``train/manual``).

    POST /api/train                    body: a TrainRequest -> 202 {"job_id", "flow_run_id", "state"}
    GET  /api/train/status/{job_id}    state, detail (current_round, total_rounds, phase, metrics, runtime);
                                       ``state`` from the Prefect flow run
    GET  /api/train/{job_id}/metrics   metrics.jsonl as a JSON array
    GET  /api/health                   no auth: Prefect reachability and the deployment

A POST validates the body with the one request schema, preflights it (question set, model id,
4-bit), writes the job dir (state "queued") and creates a flow run of the deployment with
parameters {"request": <request JSON>, "job_id": <job id>}. A worker then runs ``train_job``
(``flows/train.py``), which finds the job dir by id and keeps status.json / metrics.jsonl current.

Run it (the Prefect server, a worker and the deployment must be up: `make up`):

    IRSFLOW_API_TOKEN=secret python -m deployments.api --host 127.0.0.1 --port 8080

Settings: IRSFLOW_API_TOKEN (bearer token of at least 16 characters, no whitespace; required: without
it the API refuses to start unless started with ``--no-auth``, which then binds 127.0.0.1 only),
IRSFLOW_TRAIN_DEPLOYMENT (default train/manual; the older IRSFLOW_IRS_DEPLOYMENT is read when it is
unset, and a deployment name renamed since is read as its new name, each with a logged note),
IRSFLOW_DATA_DIR (must be the workers' data dir), IRSFLOW_ALLOWED_ROOTS (extra folders a request may
name files in), IRSFLOW_API_MAX_BODY_BYTES (default 1 MiB; a larger body is 413), PREFECT_API_URL.
The token is read from the environment only, never from the command line (visible in `ps`).
Validation reads files (rule files, question sets): it runs in a worker thread, so a slow file
never stalls other requests or /api/health.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shutil
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from irsflow.config import TrainRequest, format_validation_error
from irsflow.errors import DatasetError, InputError, ModelLoadError
from irsflow.jobs.job import create_job, job_metrics, job_status

DEFAULT_DEPLOYMENT = "train/manual"
DEPLOYMENT_ENV = "IRSFLOW_TRAIN_DEPLOYMENT"
OLD_DEPLOYMENT_ENV = "IRSFLOW_IRS_DEPLOYMENT"  # its name before the training flows were renamed: a fallback
MIN_TOKEN_LENGTH = 16
DEFAULT_MAX_BODY_BYTES = 2**20
# Job ids are made by irsflow.store.new_job_id ("20260203T120000Z-1a2b"); job dirs and the API's
# answers add a "train_" prefix. Anything else is a 404 before it can touch the file system.
_JOB_ID = re.compile(r"^(train_)?[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_PREFECT_TIMEOUT = {"timeout": 10.0}
log = logging.getLogger("irsflow.api")

# Prefect state type -> the job state the API reports.
_STATES = {
    "SCHEDULED": "queued",
    "PENDING": "queued",
    "RUNNING": "running",
    "COMPLETED": "completed",
    "FAILED": "failed",
    "CRASHED": "failed",
    "CANCELLED": "cancelled",
    "CANCELLING": "cancelled",
    "PAUSED": "paused",
}


def job_state(prefect_state_type: str) -> str:
    """Late and AwaitingRetry are SCHEDULED types (queued); Retrying is RUNNING; Suspended is PAUSED."""
    return _STATES.get(str(prefect_state_type).rsplit(".", 1)[-1].upper(), "unknown")


def job_deployment(deployment: str | None = None) -> str:
    """The deployment POST /api/train queues on: ``deployment``, else $IRSFLOW_TRAIN_DEPLOYMENT, else the
    older $IRSFLOW_IRS_DEPLOYMENT, else ``train/manual``. A name ``irsflow up`` has since renamed
    (``RENAMED_DEPLOYMENTS``; an old .env may still hold ``irs-train/irs-manual``) is read as its new name."""
    from deployments.stack import RENAMED_DEPLOYMENTS

    name = deployment or os.environ.get(DEPLOYMENT_ENV)
    if not name and os.environ.get(OLD_DEPLOYMENT_ENV):
        name = os.environ[OLD_DEPLOYMENT_ENV]
        log.warning(
            "%s is the old name of %s: read it as that (rename it in your environment)",
            OLD_DEPLOYMENT_ENV,
            DEPLOYMENT_ENV,
        )
    name = name or DEFAULT_DEPLOYMENT
    if name in RENAMED_DEPLOYMENTS:
        log.warning(
            "deployment %s was renamed %s: queuing jobs on %s",
            name,
            RENAMED_DEPLOYMENTS[name],
            RENAMED_DEPLOYMENTS[name],
        )
        name = RENAMED_DEPLOYMENTS[name]
    return name


def field_names() -> set[str]:
    """The request's top-level keys as a body writes them (``irs_config``, not the attribute ``shared``)."""
    return {f.alias or name for name, f in TrainRequest.model_fields.items()}


def validation_problems(err: ValidationError) -> list[dict]:
    """``[{"field": "irs_config.n_candidates", "message": "must be >= 2"}, ...]``, with the same
    wording as ``format_validation_error`` (the CLI's messages), one entry per problem."""
    lines = format_validation_error(err).splitlines()
    errors = err.errors()
    out = []
    for i, e in enumerate(errors):
        field = ".".join(str(p) for p in e["loc"]) or "<request>"
        line = lines[i] if len(lines) == len(errors) else f"{field}: {e['msg']}"
        out.append({"field": field, "message": line.removeprefix(f"{field}: ")})
    return out


def preflight_problem(err: InputError) -> dict:
    """Library errors start with the field path ("model_id: no such model folder: ...");
    question-set errors start with file:line and belong to the `dataset` field."""
    text = str(err)
    head, sep, rest = text.partition(": ")
    if sep and not isinstance(err, DatasetError) and head.split(".")[0] in field_names():
        return {"field": head, "message": rest}
    field = (
        "dataset" if isinstance(err, DatasetError) else "model_id" if isinstance(err, ModelLoadError) else "<request>"
    )
    return {"field": field, "message": text}


def _finite(obj: Any) -> Any:
    """NaN/inf (json.dumps writes them into metrics.jsonl) are not JSON: send null instead of a 500."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _checked_job_id(job_id: str) -> str:
    if not _JOB_ID.match(job_id) or ".." in job_id:
        raise HTTPException(404, f"no job {job_id!r}")
    return job_id


def _prefect_api_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def _prefect_client():
    # Without PREFECT_API_URL, get_client() would start an ephemeral server inside the API process,
    # which has no deployments and no workers: refuse instead.
    if not _prefect_api_url():
        raise HTTPException(503, "PREFECT_API_URL is not set: start the stack with `make up`")
    from prefect import get_client

    return get_client(httpx_settings=_PREFECT_TIMEOUT)


def _bearer_auth(token: str | None):
    expected = token.encode() if token else None
    scheme = HTTPBearer(auto_error=False)

    async def check(creds: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:
        if expected is None:
            return
        # compare_digest: the time taken does not reveal how much of the token matched.
        if creds is None or not secrets.compare_digest(creds.credentials.encode(), expected):
            raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})

    return check


LOOPBACK = "127.0.0.1"


def auth_token(no_auth: bool = False, token: str | None = None) -> str | None:
    """The bearer token the API requires: ``token``, else $IRSFLOW_API_TOKEN. Without one the API
    refuses to start (``InputError``) unless ``no_auth`` was asked for explicitly; then None."""
    token = token if token is not None else os.environ.get("IRSFLOW_API_TOKEN", "")
    if token and no_auth:
        raise InputError("--no-auth given but IRSFLOW_API_TOKEN is set: unset the token or drop --no-auth")
    if not token and not no_auth:
        raise InputError(
            "IRSFLOW_API_TOKEN is not set: the job API refuses to start without a token. "
            "Set it (clients send 'Authorization: Bearer <token>'), or pass --no-auth to "
            "serve without authentication on 127.0.0.1 only"
        )
    if token and (len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token)):
        # the value is not echoed: it may be a real (weak) secret
        raise InputError(
            f"IRSFLOW_API_TOKEN is too weak: it needs at least {MIN_TOKEN_LENGTH} characters and no "
            "whitespace (e.g. `openssl rand -hex 32`)"
        )
    return token or None


def max_body_bytes(value: int | None = None) -> int:
    """The largest request body accepted: ``value``, else $IRSFLOW_API_MAX_BODY_BYTES, else 1 MiB."""
    raw = value if value is not None else os.environ.get("IRSFLOW_API_MAX_BODY_BYTES") or DEFAULT_MAX_BODY_BYTES
    try:
        limit = int(raw)
    except ValueError:
        raise InputError(f"IRSFLOW_API_MAX_BODY_BYTES: not a number of bytes: {raw!r}") from None
    if limit < 1024:
        raise InputError(f"IRSFLOW_API_MAX_BODY_BYTES: {limit} is below 1024 bytes: no request fits")
    return limit


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it is known to exceed ``limit`` (by Content-Length, or while it streams)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"request body is over the limit of {limit} bytes")
    return bytes(body)


def bind_host(host: str, no_auth: bool) -> str:
    """Without authentication the API listens on the loopback address only."""
    if no_auth and host != LOOPBACK:
        raise InputError(
            f"--no-auth serves on {LOOPBACK} only, not --host {host}: set IRSFLOW_API_TOKEN to listen elsewhere"
        )
    return host


def create_app(
    token: str | None = None, deployment: str | None = None, no_auth: bool = False, max_body: int | None = None
) -> FastAPI:
    """``token`` defaults to $IRSFLOW_API_TOKEN and is required unless ``no_auth`` (see ``auth_token``);
    ``deployment`` to $IRSFLOW_TRAIN_DEPLOYMENT, else ``train/manual`` (see ``job_deployment``);
    ``max_body`` (bytes) to $IRSFLOW_API_MAX_BODY_BYTES, else 1 MiB."""
    token = auth_token(no_auth, token)
    body_limit = max_body_bytes(max_body)
    deployment = job_deployment(deployment)
    if token is None:
        log.warning("--no-auth: the job API accepts unauthenticated requests on %s", LOOPBACK)
    app = FastAPI(title="irsflow job API", version="1")
    jobs = APIRouter(prefix="/api/train", dependencies=[Depends(_bearer_auth(token))])

    @jobs.post("", status_code=202)
    async def submit(request: Request) -> JSONResponse:
        raw = await read_body(request, body_limit)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as err:  # RecursionError: nesting deeper than the parser goes
            raise HTTPException(422, [{"field": "<body>", "message": f"not valid JSON: {err}"}]) from None
        if not isinstance(body, dict):
            raise HTTPException(422, [{"field": "<body>", "message": "expected a JSON object"}])
        try:
            # off the event loop: validation reads files (rules, paths), which must never stall other requests
            req = await run_in_threadpool(TrainRequest.model_validate, body)
        except ValidationError as err:
            raise HTTPException(422, validation_problems(err)) from None

        from prefect.exceptions import ObjectNotFound

        async with _prefect_client() as client:
            # Look the deployment up before writing anything: the usual 503 leaves no trace.
            try:
                dep = await client.read_deployment_by_name(deployment)
            except ObjectNotFound:
                raise HTTPException(
                    503,
                    f"deployment {deployment!r} does not exist on the Prefect server: "
                    "run `make up` (server, worker pool, deployments)",
                ) from None
            except Exception as err:
                raise HTTPException(503, f"Prefect API unreachable ({type(err).__name__}): run `make up`") from None
            try:
                # Preflight reads the model config (imports transformers on first use): off the event loop.
                store = await run_in_threadpool(create_job, req)
            except InputError as err:
                raise HTTPException(422, [preflight_problem(err)]) from None
            try:
                run = await client.create_flow_run_from_deployment(
                    dep.id,
                    parameters={"request": req.model_dump(mode="json"), "job_id": store.job_id},
                    tags=["api"],
                    idempotency_key=f"irsflow-job-{store.job_id}",
                )
            except Exception as err:
                # Nobody was told this job id and no run will pick the dir up: remove it rather than
                # leave a job that says "queued" forever. (Should the request have reached Prefect after
                # all, train_job recreates the dir from its `request` parameter.)
                shutil.rmtree(store.dir, ignore_errors=True)
                raise HTTPException(
                    503,
                    f"could not create a flow run of {deployment!r} "
                    f"({type(err).__name__}: {str(err)[:300]}): check `make up`",
                ) from None
        store.update_status(flow_run_id=str(run.id))
        log.info("job %s queued as flow run %s", store.job_id, run.id)
        return JSONResponse(
            {"job_id": store.job_id, "flow_run_id": str(run.id), "state": "queued"},
            status_code=202,
            headers={"Location": f"/api/train/status/{store.job_id}"},
        )

    @jobs.get("/status/{job_id}")
    async def status(job_id: str) -> dict:
        try:
            out = job_status(_checked_job_id(job_id))
        except InputError:
            raise HTTPException(404, f"no job {job_id!r}") from None
        out["prefect_state"] = None
        if out.get("flow_run_id"):
            # The flow writes status.json, but a crashed or cancelled run cannot: Prefect's state wins.
            try:
                async with _prefect_client() as client:
                    run = await client.read_flow_run(UUID(out["flow_run_id"]))
            except Exception as err:  # Prefect down or reset: status.json is the best we have
                out["prefect_error"] = f"{type(err).__name__}: {str(err)[:200]}"
            else:
                if run.state is not None:
                    out["state"] = job_state(run.state.type.value)
                    out["prefect_state"] = run.state.name
                    if out["state"] == "failed" and not out.get("error"):
                        out["error"] = f"flow run {run.state.name}: {run.state.message or ''}".strip()
        return _finite(out)

    @jobs.get("/{job_id}/metrics")
    async def metrics(job_id: str) -> list:
        try:
            return _finite(job_metrics(_checked_job_id(job_id)))
        except InputError:
            raise HTTPException(404, f"no job {job_id!r}") from None

    @app.get("/api/health")
    async def health() -> JSONResponse:
        url = _prefect_api_url()
        out: dict[str, Any] = {
            "status": "unavailable",
            "prefect": {"api_url": url, "reachable": False},
            "deployment": {"name": deployment, "exists": None},
        }
        if url:
            from prefect import get_client
            from prefect.exceptions import ObjectNotFound

            async with get_client(httpx_settings=_PREFECT_TIMEOUT) as client:
                err = await client.api_healthcheck()
                if err is None:
                    out["prefect"]["reachable"] = True
                    try:
                        await client.read_deployment_by_name(deployment)
                        out["deployment"]["exists"] = True
                    except ObjectNotFound:
                        out["deployment"]["exists"] = False
                    except Exception as exc:  # reachable a moment ago; report rather than 500
                        out["deployment"]["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                else:
                    out["prefect"]["error"] = f"{type(err).__name__}: {str(err)[:200]}"
        if out["prefect"]["reachable"]:
            out["status"] = "ok" if out["deployment"]["exists"] else "degraded"
        return JSONResponse(out, status_code=200 if out["prefect"]["reachable"] else 503)

    app.include_router(jobs)
    return app


def serve(
    host: str = LOOPBACK,
    port: int = 8080,
    token: str | None = None,
    deployment: str | None = None,
    log_level: str = "info",
    no_auth: bool = False,
) -> None:
    """Run the API under uvicorn until interrupted. Refuses (``InputError``) to start without a token
    unless ``no_auth``, and with ``no_auth`` to bind anything but 127.0.0.1."""
    import uvicorn

    host = bind_host(host, no_auth)
    app = create_app(token, deployment, no_auth=no_auth)  # checks the token before anything listens
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(app, host=host, port=port, log_level=log_level)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument(
        "--deployment", default=None, help="FLOW/DEPLOYMENT (default $IRSFLOW_TRAIN_DEPLOYMENT, else train/manual)"
    )
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--no-auth", action="store_true", help="serve without a token, on 127.0.0.1 only")
    a = ap.parse_args()
    try:
        serve(a.host, a.port, deployment=a.deployment, log_level=a.log_level, no_auth=a.no_auth)
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
