"""``irsflow doctor``: is the Prefect stack fit to run jobs, and is the GPU slot really free?

    irsflow doctor [--repair] [--json]             # cli/stack.py
    python -m deployments.doctor [--repair] [--json]

Checks, in order (each ``{"name", "ok", "detail", "repairable"}``; exit code 0 when all are ok):

- ``prefect-api``    PREFECT_API_URL answers /health. Without it the other Prefect checks are skipped.
- ``gpu-limit``      the ``gpu`` tag limit (Prefect stores it as global limit ``tag:gpu``) exists and
                     is active; without it gpu-tagged tasks run unlimited, silently. Repair creates it
                     with IRSFLOW_GPU_SLOTS (default 1) or re-activates it.
- ``gpu-slots``      leaked slots on ``tag:gpu``. Repair frees them (see ``_repair_gpu_slots``).
- ``work-pool:gpu``  process pool, concurrency $IRSFLOW_GPU_SLOTS (default 1), with an ONLINE worker;
                     ``work-pool:cpu`` likewise without the concurrency rule. Report only: ``make up``
                     creates pools and workers.
- ``service:*``      IRSFLOW_MLFLOW_URI, IRSFLOW_VLLM_URL, LANGFUSE_HOST, IRSFLOW_TEACHER_BASE_URL, if
                     set: any HTTP answer within 3 s counts as reachable. Credentials are never shown.

What the gpu-slots check can see (Prefect 3.8.8). The task engine takes the slot with a 60 s lease
held by ``task_run:<id>`` and renews it from a thread; leases live in the server's memory and only
their holders' ids are exposed (``GET /concurrency_limits/tag/gpu``), not lease ids or expiry times.
A holder is *leaked* when Prefect's own states prove it gone: its task run is missing or final, or
its flow run or any ancestor flow run is final (a process worker marks the run it started Crashed
when the process dies). Slots counted on the limit but held by no lease (a server restart drops all
leases but keeps the count; a ``concurrency-limit reset`` does not lower it) are leaked too; so
would be a lease taken without a holder (a hand-written ``concurrency("tag:gpu")``), which irsflow
never does: its code takes the slot only through the task tag.
A process killed with ``kill -9`` leaves its runs RUNNING until something marks them (a process
worker on exit; the zombie automation of ``irsflow up`` after 3 missed 30 s heartbeats), and the
server does not say whether a lease is still being renewed, so until then doctor lists that holder
as held. No staleness rule of doctor's own does better: the lease lapses 60 s after its last
renewal and the server's repossessor (every 15 s) frees the slot by itself (measured: the next gpu
task started 70 s after the kill), while any age threshold would also free a live, long SFT step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from prefect.client.schemas.objects import StateType, WorkerStatus
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings

from tasks.limits import CPU_TAG, GPU_TAG, ensure_gpu_limit, gpu_slots

LIMIT_NAME = f"tag:{GPU_TAG}"
POOLS = {GPU_TAG: 1, CPU_TAG: None}  # pool -> required concurrency limit (None: not checked)
SERVICES = {
    "mlflow": "IRSFLOW_MLFLOW_URI",
    "vllm": "IRSFLOW_VLLM_URL",
    "langfuse": "LANGFUSE_HOST",
    "teacher": "IRSFLOW_TEACHER_BASE_URL",
}
FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}


def _check(name: str, ok: bool, detail: str, repairable: bool = False) -> dict:
    return {"name": name, "ok": ok, "detail": detail, "repairable": repairable and not ok}


def check_api() -> dict:
    url = get_current_settings().api.url
    if not url:
        return _check(
            "prefect-api",
            False,
            "PREFECT_API_URL is not set: without it every process runs its "
            "own temporary server, whose slots and runs no other process sees; point it at the "
            "server your jobs and workers use",
        )
    try:  # plain httpx with a short timeout: the Prefect client would wait its 60 s request timeout
        r = httpx.get(url.rstrip("/") + "/health", timeout=5, headers=_auth_headers())
        r.raise_for_status()
    except httpx.HTTPError as err:
        return _check(
            "prefect-api",
            False,
            f"{_redact(url)} unreachable ({type(err).__name__}): start the "
            "server (`make up` or `prefect server start`) or fix PREFECT_API_URL",
        )
    return _check("prefect-api", True, f"{_redact(url)} healthy")


def _auth_headers() -> dict:
    api = get_current_settings().api
    if api.key:
        return {"Authorization": f"Bearer {api.key.get_secret_value()}"}
    if api.auth_string:
        import base64

        return {"Authorization": "Basic " + base64.b64encode(api.auth_string.get_secret_value().encode()).decode()}
    return {}


def _read_limit(client):
    try:
        return client.read_global_concurrency_limit_by_name(LIMIT_NAME)
    except ObjectNotFound:
        return None


def check_gpu_limit(client) -> dict:
    gcl = _read_limit(client)
    if gcl is None:
        return _check(
            "gpu-limit",
            False,
            f"tag limit '{GPU_TAG}' is missing: gpu-tagged tasks run unlimited, "
            f"so several models can load at once (repair creates it = {gpu_slots()})",
            True,
        )
    if not gcl.active:
        return _check("gpu-limit", False, f"{LIMIT_NAME} is inactive, so it is not enforced", True)
    if gcl.limit == 0:  # the operator's number to choose; doctor does not guess one
        return _check(
            "gpu-limit",
            False,
            f"{LIMIT_NAME} = 0: gpu tasks wait forever (prefect concurrency-limit create {GPU_TAG} N)",
        )
    return _check("gpu-limit", True, f"{LIMIT_NAME} = {gcl.limit}")


def _holders(client) -> list[str]:
    try:
        return sorted(map(str, client.read_concurrency_limit_by_tag(GPU_TAG).active_slots))
    except ObjectNotFound:
        return []


def _slot_state(client):
    """(v2 limit row or None, lease holder ids). Holders come from the v1 view, the slot count from
    the v2 row; two holder reads around the count read must agree, so a task that takes or returns
    the slot in between is not mistaken for a leak."""
    for _ in range(3):
        before, gcl, after = _holders(client), _read_limit(client), _holders(client)
        if before == after:
            break
    return gcl, after


def _holder_verdict(client, task_run_id: str) -> tuple[bool, str]:
    """(leaked, why) for one lease holder. Only final states count as proof: the engine takes the
    lease while the task run is still PENDING and sets RUNNING afterwards."""
    try:
        tr = client.read_task_run(task_run_id)
    except ObjectNotFound:
        return True, "task run no longer exists"
    what = f"{tr.name} {tr.state_type.value if tr.state_type else '?'}"
    if tr.state_type in FINAL:
        return True, what
    flow_run_id = tr.flow_run_id
    for _ in range(10):  # walk up: a worker marks only the top-level run it started as Crashed
        if flow_run_id is None:
            break
        try:
            fr = client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            return True, f"{what}, its flow run no longer exists"
        if fr.state_type in FINAL:
            return True, f"{what}, but flow run {fr.name} is {fr.state_type.value}"
        try:
            flow_run_id = client.read_task_run(fr.parent_task_run_id).flow_run_id if fr.parent_task_run_id else None
        except ObjectNotFound:
            break
    held = f" for {(datetime.now(UTC) - tr.start_time).total_seconds():.0f} s" if tr.start_time else ""
    return False, f"{what}{held}"


def check_gpu_slots(client) -> dict | None:
    gcl, holders = _slot_state(client)
    if gcl is None:
        return None  # gpu-limit reports it
    verdicts = {h: _holder_verdict(client, h) for h in holders}
    leaked = [h for h, (dead, _) in verdicts.items() if dead]
    unleased = max(0, gcl.active_slots - len(holders))
    parts = [f"{gcl.active_slots}/{gcl.limit} in use"]
    parts += [f"{'LEAKED' if dead else 'held'} by task run {h} ({why})" for h, (dead, why) in verdicts.items()]
    if unleased:
        parts.append(f"LEAKED {unleased} counted without a lease (server restart, or a reset without a count fix)")
    if len(leaked) < len(holders):
        parts.append(
            "a holder whose process was killed and whose run nobody marked looks held here; "
            "its lease lapses by itself 60-75 s after the kill"
        )
    ok = not leaked and not unleased
    return _check("gpu-slots", ok, "; ".join(parts), repairable=True)


def _decrement(client, slots: int) -> None:
    # Relative, clamped at 0 by the server: an acquisition racing with doctor keeps its +1, which an
    # absolute `PATCH active_slots=N` (prefect gcl update) would overwrite.
    client.request("POST", "/v2/concurrency_limits/decrement", json={"names": [LIMIT_NAME], "slots": slots})


def _repair_gpu_slots(client) -> str | None:
    """Free leaked slots; returns what was done, or None.

    The API cannot revoke one lease: lease ids are never exposed. ``POST /concurrency_limits/tag/gpu/reset``
    revokes ALL leases of the limit (without lowering the count) and re-leases each id in
    ``slot_override`` (+1 each). So live holders go into ``slot_override``, keeping the GPU exclusive
    while they run, and afterwards exactly the revoked leases' slots are taken back. The price: the
    re-created lease has the v1 TTL (~100 years), the task engine's own lease renewal now fails
    (silently: it runs with ``raise_on_lease_renewal_failure=False``, the task keeps running) and its
    release on exit targets the revoked lease, a no-op. The override lease outlives the task and the
    next ``doctor --repair`` frees it (its task run is then final). Dropping live holders instead would
    let a second model load beside a running one. With the default limit of 1 a leaked holder and a
    live one cannot coexist, so this only arises with IRSFLOW_GPU_SLOTS > 1.
    """
    gcl, holders = _slot_state(client)
    if gcl is None:
        return None
    done = []
    live = [h for h in holders if not _holder_verdict(client, h)[0]]
    if len(live) < len(holders):
        client.reset_concurrency_limit_by_tag(GPU_TAG, slot_override=live or None)
        _decrement(client, len(holders))
        done.append(
            f"revoked the leases of {len(holders) - len(live)} leaked holder(s)"
            + (f", re-leased {len(live)} live one(s)" if live else "")
        )
    gcl, holders = _slot_state(client)
    if gcl.active_slots > len(holders):
        # A lease that expired but that the repossessor has not collected yet is no longer listed as a
        # holder, yet still counted; the repossessor will return that slot itself. Take back only
        # what survives one repossessor pass, else the slot is returned twice and two models load.
        excess = gcl.active_slots - len(holders)
        time.sleep(get_current_settings().server.services.repossessor.loop_seconds + 1)
        gcl, holders = _slot_state(client)
        excess = min(excess, gcl.active_slots - len(holders))
        if excess > 0:
            _decrement(client, excess)
            done.append(f"released {excess} slot(s) counted without a lease")
    return "; ".join(done) or None


def check_pool(client, name: str, want_limit: int | None) -> dict:
    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        return _check(
            f"work-pool:{name}",
            False,
            f"missing (`make up` creates it: prefect work-pool create {name} --type process)",
        )
    problems = []
    if pool.type != "process":
        problems.append(f"type {pool.type}, expected process")
    if want_limit is not None and pool.concurrency_limit != want_limit:
        problems.append(f"concurrency limit {pool.concurrency_limit}, expected {want_limit}")
    if pool.is_paused:
        problems.append("paused")
    online = [w.name for w in client.read_workers_for_work_pool(name) if w.status == WorkerStatus.ONLINE]
    if not online:
        problems.append(f"no ONLINE worker, deployment runs stay Scheduled (prefect worker start --pool {name})")
    return _check(f"work-pool:{name}", not problems, "; ".join(problems) or f"online workers: {', '.join(online)}")


def _redact(url: str) -> str:
    """The URL without password, query or fragment (they may carry keys)."""
    p = urlsplit(url)
    host = (p.hostname or "") + (f":{p.port}" if p.port else "")
    user = f"{p.username}:***@" if p.password else (f"{p.username}@" if p.username else "")
    return urlunsplit((p.scheme, user + host, p.path, "", ""))


def check_services(timeout: float = 3.0) -> list[dict]:
    out = []
    for label, var in SERVICES.items():
        raw = os.environ.get(var, "").strip()
        if not raw:
            continue
        shown = f"{var}={_redact(raw)}"
        if urlsplit(raw).scheme not in ("http", "https"):  # e.g. an MLflow store in a local file or SQLite
            out.append(_check(f"service:{label}", True, f"{shown}: not an HTTP server, not checked"))
            continue
        try:  # any HTTP answer, even 401 or 404, means something is listening there
            r = httpx.get(raw, timeout=timeout)
            out.append(_check(f"service:{label}", True, f"{shown}: HTTP {r.status_code}"))
        except httpx.HTTPError as err:  # the type only: messages can echo the URL
            out.append(_check(f"service:{label}", False, f"{shown}: unreachable ({type(err).__name__})"))
    return out


def check_all() -> list[dict]:
    checks = [check_api()]
    if checks[0]["ok"]:
        with get_client(sync_client=True) as client:
            checks.append(check_gpu_limit(client))
            checks += [c for c in [check_gpu_slots(client)] if c]
            checks += [check_pool(client, name, want) for name, want in {**POOLS, GPU_TAG: gpu_slots()}.items()]
    return checks + check_services()


def repair_checks(checks: list[dict]) -> dict[str, str]:
    """Fix what ``checks`` marks repairable; returns {check name: what was done}."""
    todo = {c["name"] for c in checks if c["repairable"]}
    done = {}
    with get_client(sync_client=True) as client:
        if "gpu-limit" in todo:
            gcl = _read_limit(client)
            if gcl is None:
                done["gpu-limit"] = f"created {LIMIT_NAME} = {ensure_gpu_limit()}"
            elif not gcl.active:
                client.update_global_concurrency_limit(LIMIT_NAME, GlobalConcurrencyLimitUpdate(active=True))
                done["gpu-limit"] = f"activated {LIMIT_NAME}"
        if "gpu-slots" in todo and (what := _repair_gpu_slots(client)):
            done["gpu-slots"] = what
    return done


def run_doctor(repair: bool = False) -> tuple[list[dict], int]:
    """All checks (after repairing, when asked) and the exit code: 0 all ok, 1 problems remain."""
    checks = check_all()
    if repair and any(c["repairable"] for c in checks):
        done = repair_checks(checks)
        checks = check_all()
        for c in checks:
            if c["name"] in done:
                c["detail"] = f"repaired: {done[c['name']]}; now {c['detail']}"
    return checks, 0 if all(c["ok"] for c in checks) else 1


def format_report(checks: list[dict]) -> str:
    width = max(len(c["name"]) for c in checks)
    lines = [f"{'ok' if c['ok'] else 'FAIL':4}  {c['name']:{width}}  {c['detail']}" for c in checks]
    bad = [c for c in checks if not c["ok"]]
    fixable = sum(c["repairable"] for c in bad)
    lines.append(f"{len(bad)} problem(s), {fixable} repairable with --repair" if bad else "all checks passed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="doctor", description=__doc__.splitlines()[0])
    ap.add_argument("--repair", action="store_true", help="fix what is repairable, then check again")
    ap.add_argument("--json", action="store_true", help="print the checks as a JSON array")
    args = ap.parse_args(argv)
    checks, code = run_doctor(repair=args.repair)
    print(json.dumps(checks, indent=2) if args.json else format_report(checks))
    return code


if __name__ == "__main__":
    sys.exit(main())
