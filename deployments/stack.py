"""The local stack: a Prefect server, the work pools, the deployments and one worker per pool.

    irsflow up      # or: make up      -> server on 127.0.0.1:4200 (SQLite under <data dir>/prefect),
                                          pools gpu (process, concurrency $IRSFLOW_GPU_SLOTS,
                                          default 1) and cpu (process),
                                          the gpu tag limit, every deployment in prefect.yaml,
                                          a zombie-run automation, one worker per pool; then
                                          deployments renamed since an earlier `up` are moved
                                          (RENAMED_DEPLOYMENTS), one printed line each
    irsflow down    # or: make down    -> stops exactly the processes `up` started (by PID)

State lives in ``<data dir>/stack/stack.json`` (PIDs, command lines, URLs) and the processes' logs
in ``<data dir>/stack/*.log``. ``up`` is idempotent: a healthy stack it started is reused.
With ``--api-url`` it skips the server and sets up pools, deployments and workers on that one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx

from irsflow.store import atomic_write_json, data_dir

ROOT = Path(__file__).resolve().parents[1]
POOLS = {"gpu": 1, "cpu": None}  # pool name -> flow-run concurrency (None: unlimited); gpu: pool_limits()


def pool_limits() -> dict:
    """Flow-run concurrency per pool: the gpu pool runs as many flows as there are GPU slots."""
    from tasks.limits import gpu_slots

    return {**POOLS, "gpu": gpu_slots()}


ZOMBIE_AUTOMATION = "irsflow: crash flow runs whose heartbeats stopped"
# The migration table: deployments whose full name ("<flow>/<deployment>") changed, old -> new. A server
# an earlier `up` deployed still holds the old ones, with whatever schedules users added there; `up`
# moves those onto the new deployment and deletes the old one (migrate_renamed_deployments). Add a line
# per rename; deployments/api.py also reads an old name given to it as the new one.
RENAMED_DEPLOYMENTS = {
    "weekly-round/weekly": "weekly-cycle/weekly",
    # the training flows, once named after the IRS stage though every stage runs through them
    "irs-train/irs-manual": "train/manual",
    "irs-train/irs-weekly": "train/weekly-job",
    "irs-train/onpolicy-rounds": "train/onpolicy-rounds",
    "irs-train/dpo-pairs": "train/dpo-pairs",
    "irs-train/grpo": "train/grpo",
    "irs-train/ppo-rlaif": "train/ppo-rlaif",
    "irs-train/reward-model": "train/reward-model",
    "irs-iteration/irs-iteration": "train-round/redo",
}
HEARTBEAT_S = 30  # a flow run's process beats every 30 s; 3 missed beats mark it Crashed
BIN = Path(sys.executable).parent


def stack_dir() -> Path:
    return data_dir() / "stack"


def state_path() -> Path:
    return stack_dir() / "stack.json"


def read_state() -> dict:
    p = state_path()
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return None


def alive(pid: int, cmdline: str | None = None) -> bool:
    """The PID runs, and (when given) still runs the command we started: PIDs get reused."""
    current = _cmdline(pid)
    return current is not None and (cmdline is None or current == cmdline)


def stack_env(api_url: str | None = None) -> dict[str, str]:
    """Environment for the server, the workers and the flow runs they start."""
    env = dict(os.environ)
    env.update(
        {
            "IRSFLOW_DATA_DIR": str(data_dir()),
            "IRSFLOW_HOME": str(ROOT),
            "PREFECT_HOME": env.get("PREFECT_HOME") or str(data_dir() / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),
            "TRANSFORMERS_OFFLINE": env.get("TRANSFORMERS_OFFLINE", "1"),
            "TOKENIZERS_PARALLELISM": "false",
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
            "PREFECT_WORKER_QUERY_SECONDS": env.get("PREFECT_WORKER_QUERY_SECONDS", "5"),
        }
    )
    env.pop("PREFECT_LOGGING_EXTRA_LOGGERS", None)  # tasks/logs.py routes irsflow logs itself
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _spawn(name: str, argv: list[str], env: dict) -> dict:
    stack_dir().mkdir(parents=True, exist_ok=True)
    log = open(stack_dir() / f"{name}.log", "ab")
    # a session of its own: `down` signals the whole group (a worker's flow-run children included)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    time.sleep(0.2)
    return {"pid": proc.pid, "cmdline": _cmdline(proc.pid) or " ".join(argv), "log": str(stack_dir() / f"{name}.log")}


def start_server(port: int, env: dict, timeout: float = 120) -> tuple[str, dict]:
    api_url = f"http://127.0.0.1:{port}/api"
    if healthy(api_url):
        raise RuntimeError(
            f"port {port}: a Prefect server not started by this stack already listens there; "
            f"use it with --api-url {api_url} or pick another --port"
        )
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    # the UI asks /ui-settings where the API is; without this it says 127.0.0.1:4200 whatever the port
    env = {**env, "PREFECT_UI_API_URL": api_url}
    proc = _spawn("server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env)
    deadline = time.time() + timeout
    while not healthy(api_url):
        if not alive(proc["pid"]):
            tail = Path(proc["log"]).read_text(errors="replace")[-1500:]
            raise RuntimeError(f"prefect server exited during start-up:\n{tail}")
        if time.time() > deadline:
            raise RuntimeError(f"prefect server not healthy after {timeout:.0f} s (log: {proc['log']})")
        time.sleep(0.5)
    return api_url, proc


def ensure_pools(client) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    for name, limit in pool_limits().items():
        try:
            client.read_work_pool(name)
            client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=limit))
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    concurrency_limit=limit,
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="irsflow: one GPU flow run at a time" if name == "gpu" else "irsflow: CPU-only flows",
                )
            )


def ensure_zombie_automation(client) -> None:
    """Mark a flow run Crashed when its heartbeats stop (its worker was killed): a Running run
    cannot be retried, a Crashed one can, from the UI or `prefect flow-run retry`."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    if client.read_automations_by_name(ZOMBIE_AUTOMATION):
        return
    ends = {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")}
    client.create_automation(
        AutomationCore(
            name=ZOMBIE_AUTOMATION,
            trigger=EventTrigger(
                after={"prefect.flow-run.heartbeat"},
                expect={"prefect.flow-run.heartbeat", *ends},
                match={"prefect.resource.id": ["prefect.flow-run.*"]},
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(seconds=3 * HEARTBEAT_S),
            ),
            actions=[
                ChangeFlowRunState(
                    state=StateType.CRASHED, message="Flow run marked Crashed: its heartbeats stopped (worker died?)"
                )
            ],
        )
    )


def deploy_all(env: dict) -> str:
    out = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(f"prefect deploy --all failed:\n{(out.stdout + out.stderr)[-3000:]}")
    return out.stdout


def _describe(schedule) -> str:
    """A schedule as a person reads it: ``cron '30 3 * * 1' Asia/Shanghai``, ``every 3600 s``, ``rrule ...``."""
    s = schedule.schedule
    if getattr(s, "cron", None):
        what = f"cron '{s.cron}' {s.timezone or 'UTC'}"
    elif getattr(s, "interval", None):
        what = f"every {s.interval.total_seconds():g} s"
    else:
        what = f"rrule '{getattr(s, 'rrule', s)}'"
    return what + ("" if schedule.active else " (inactive)")


def _schedule_key(schedule) -> str:
    """Two schedules are the same when they fire at the same times with the same parameters."""
    return json.dumps([schedule.schedule.model_dump(mode="json"), schedule.parameters], sort_keys=True, default=str)


def migrate_renamed_deployments(client, renamed: dict[str, str] | None = None) -> list[str]:
    """Move every deployment of ``renamed`` (default RENAMED_DEPLOYMENTS) that still exists under its
    old name onto its new one, which ``prefect deploy`` has just created: each old schedule the new
    deployment lacks is copied (active or not, with its parameters), a schedule both have keeps the
    old one's on/off state, a schedule of the new one that the old one lacks (prefect.yaml's, which the
    user changed or removed) is switched off, a paused old deployment pauses the new one, and the old
    deployment is deleted (its past flow runs stay, under the old flow's name). Returns one line per deployment
    moved; an old name no longer on the server is nothing to do, so a second call returns []."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.exceptions import ObjectNotFound

    lines = []
    for old_name, new_name in (RENAMED_DEPLOYMENTS if renamed is None else renamed).items():
        try:
            old = client.read_deployment_by_name(old_name)
        except ObjectNotFound:
            continue
        try:
            new = client.read_deployment_by_name(new_name)
        except ObjectNotFound:  # never delete what users set up when there is nowhere to move it
            lines.append(f"deployment {old_name} left as it is: {new_name} is not deployed")
            continue
        have = {_schedule_key(s): s for s in new.schedules}
        slugs = {s.slug for s in new.schedules if s.slug}
        copied, switched = [], []
        for s in old.schedules:
            same = have.get(_schedule_key(s))
            if same is None:
                client.create_deployment_schedules(
                    new.id,
                    [
                        DeploymentScheduleCreate(
                            schedule=s.schedule,
                            active=s.active,
                            max_scheduled_runs=s.max_scheduled_runs,
                            parameters=s.parameters,
                            slug=s.slug if s.slug not in slugs else None,
                        )
                    ],
                )
                copied.append(_describe(s))
            elif same.active != s.active:  # switched on or off by hand on the old deployment
                client.update_deployment_schedule(new.id, same.id, active=s.active)
                switched.append(_describe(s))
        # a prefect.yaml schedule the old deployment did not run was changed or removed by the user: the
        # old deployment's schedules replace it, so an edited cron does not run beside the default one
        olds = {_schedule_key(s) for s in old.schedules}
        off = [s for s in new.schedules if _schedule_key(s) not in olds and s.active]
        for s in off:
            client.update_deployment_schedule(new.id, s.id, active=False)
        moved = [f"schedules copied: {', '.join(copied)}"] if copied else []
        moved += [f"schedules switched as before: {', '.join(switched)}"] if switched else []
        moved += (
            [f"switched off, as the old one did not run them: {', '.join(_describe(s) for s in off)}"] if off else []
        )
        if old.paused and not new.paused:
            client.pause_deployment(new.id)
            moved.append("paused, as the old one was")
        client.delete_deployment(old.id)
        lines.append(
            f"deployment {old_name} -> {new_name}: {'; '.join(moved) or 'nothing set on it to copy'}; "
            f"{old_name} deleted"
        )
    return lines


def redeploy_if_renamed(api_url: str) -> list[str]:
    """A running stack started by an older irsflow still serves deployments under their old names: deploy
    the current ones and move the old ones over (``migrate_renamed_deployments``). Nothing to do, and
    nothing deployed, when no old name is left on the server."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    def present(client, name: str) -> bool:
        try:
            client.read_deployment_by_name(name)
            return True
        except ObjectNotFound:
            return False

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        if not any(present(client, old) for old in RENAMED_DEPLOYMENTS):
            return []
    deploy_all(stack_env(api_url))
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return migrate_renamed_deployments(client)


def spawn_worker(pool: str, env: dict) -> dict:
    """One `prefect worker start` for ``pool`` (flow-run concurrency as the pool's)."""
    argv = [
        str(BIN / "prefect"),
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        "process",
        "--name",
        f"irsflow-{pool}-{os.uname().nodename}-{time.time_ns() % 10**8}",
    ]
    limit = pool_limits().get(pool)
    return _spawn(f"worker-{pool}", argv + (["--limit", str(limit)] if limit else []), env)


def up(port: int = 4200, api_url: str | None = None, workers: bool = True) -> dict:
    """Start (or reuse) the stack; returns its state (URLs, PIDs)."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    state = read_state()
    if state and healthy(state["api_url"]) and all(alive(p["pid"], p["cmdline"]) for p in state["procs"].values()):
        return {**state, "reused": True, "migrated": redeploy_if_renamed(state["api_url"])}
    if state:
        down()  # half-dead leftovers of an earlier stack: stop what is ours before starting again
    env = stack_env()
    procs: dict[str, dict] = {}
    try:
        if api_url is None:
            api_url, procs["server"] = start_server(port, env)
        elif not healthy(api_url):
            raise RuntimeError(f"--api-url {api_url}: no healthy Prefect server there")
        env = stack_env(api_url)
        with temporary_settings({PREFECT_API_URL: api_url}):
            from tasks.limits import ensure_gpu_limit

            with get_client(sync_client=True) as client:
                ensure_pools(client)
                ensure_zombie_automation(client)
            ensure_gpu_limit()
        deploy_all(env)
        with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            migrated = migrate_renamed_deployments(client)
        if workers:
            for pool in POOLS:
                procs[f"worker-{pool}"] = spawn_worker(pool, env)
    except BaseException:
        _stop_all(procs)
        raise
    ui = api_url.removesuffix("/api")
    state = {
        "api_url": api_url,
        "ui_url": ui,
        "data_dir": str(data_dir()),
        "prefect_home": env["PREFECT_HOME"],
        "procs": procs,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(state_path(), state)
    return {**state, "migrated": migrated}  # not kept in the state file: said once, by the `up` that moved them


def _stop_all(procs: dict[str, dict], timeout: float = 20) -> list[str]:
    stopped = []
    # workers before the server, so they do not log connection errors on the way out
    for name in sorted(procs, key=lambda n: n == "server"):
        p = procs[name]
        if not alive(p["pid"], p["cmdline"]):
            continue
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
            try:
                os.killpg(p["pid"], sig)
            except ProcessLookupError:
                break
            deadline = time.time() + wait
            while time.time() < deadline and alive(p["pid"], p["cmdline"]):
                time.sleep(0.2)
            if not alive(p["pid"], p["cmdline"]):
                break
        stopped.append(f"{name} (pid {p['pid']})")
    return stopped


def down() -> list[str]:
    """Stop the processes recorded by `up` (only those, by PID and command line)."""
    state = read_state()
    stopped = _stop_all(state.get("procs", {}))
    state_path().unlink(missing_ok=True)
    return stopped


def api_url_from_stack() -> str | None:
    """The running local stack's API URL, for commands run without PREFECT_API_URL."""
    state = read_state()
    url = state.get("api_url")
    return url if url and healthy(url, timeout=1.0) else None
