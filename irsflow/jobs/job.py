"""Job lifecycle and the read API (a job's status and its metrics), from the job dir.

store = create_job(request)                # validates inputs, writes config.json
store, req = load_job(job_id)              # an existing job and its request
job_status(store.job_id)                   # {"job_id", "stage", "state", "detail": {"current_round", ...}}
job_metrics(store.job_id)                  # metrics.jsonl as a list
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from irsflow.config import TrainRequest, parse_request, stored_request
from irsflow.dataset import load_questions, questions_hash, resolve_dataset
from irsflow.errors import InputError
from irsflow.loop.questions import job_questions
from irsflow.models import check_4bit, check_model
from irsflow.store import JobStore, data_dir, new_job_id, utc_now


def preflight(req: TrainRequest) -> dict:
    """Everything checkable before a model loads: schema, question set, 4-bit on this machine,
    that the model id resolves to a readable config, the adapter to start from, and the stage's
    own data files (each bad line named)."""
    from irsflow.stages import get_stage

    questions = load_questions(req.dataset, req.n_questions)
    check_4bit(req.shared.load_in_4bit)
    model_path = check_model(req.model_id)
    train, heldout = job_questions(req)
    if req.early_stop is not None and not heldout:
        raise InputError(
            f"early_stop: the job holds no questions out (stage {req.stage}, {len(questions)} questions; "
            f"the split needs heldout.min_questions = {req.heldout.min_questions} and a stage whose "
            "adapter answers chat), so nothing would decide when to stop"
        )
    get_stage(req.stage).check_files(req, train)
    facts = {
        "model_path": model_path,
        "dataset_path": str(resolve_dataset(req.dataset)),
        "n_questions_used": len(questions),
        "questions_sha256": questions_hash(questions),
    }
    if heldout:  # the questions no round trains on (answered by the start model and each round's adapter)
        facts.update(heldout_ids=[q.id for q in heldout])
    if req.init_adapter:
        from irsflow.release.adapter_cache import resolve_adapter
        from irsflow.store import hash_path

        try:
            path = resolve_adapter(req.init_adapter)
        except InputError as err:
            raise InputError(f"init_adapter: {err}") from None
        facts.update(init_adapter_path=path, init_adapter_sha256=hash_path(Path(path)))
    return facts


def create_job(request: TrainRequest | dict, job_id: str | None = None) -> JobStore:
    req = parse_request(request)
    facts = preflight(req)
    store = JobStore(job_id or new_job_id())
    if store.exists():
        raise InputError(f"job id: {store.job_id} already exists at {store.dir}")
    store.create({"job_id": store.job_id, "created_at": utc_now(), "request": req.model_dump(mode="json"), **facts})
    store.update_status(
        state="queued",
        stage=req.stage,
        current_round=0,
        total_rounds=req.shared.n_iterations,
        current_phase=None,
        phase_progress=0.0,
    )
    return store


def open_job(job_id: str) -> JobStore:
    store = JobStore(job_id)
    if not store.exists():
        raise InputError(f"job id: no job {job_id!r} under {store.dir.parent}")
    return store


def job_request(store: JobStore) -> TrainRequest:
    """The request a job was created with (jobs of any version of irsflow)."""
    return TrainRequest.model_validate(stored_request(store.read_config()["request"]))


def load_job(job_id: str) -> tuple[JobStore, TrainRequest]:
    """An existing job and the request it was created with (what a phase task starts from)."""
    store = open_job(job_id)
    return store, job_request(store)


def find_job_by_flow_run(flow_run_id: str) -> JobStore | None:
    """The job a flow run made (a retried deployment run carries no job id, only its run id)."""
    for status in sorted((data_dir() / "jobs").glob("train_*/status.json")):
        try:
            if json.loads(status.read_text(encoding="utf-8")).get("flow_run_id") == flow_run_id:
                return JobStore(status.parent.name)
        except (OSError, ValueError):
            continue
    return None


def open_or_create(
    request: TrainRequest | dict | None, job_id: str | None, flow_run_id: str | None = None
) -> tuple[JobStore, TrainRequest]:
    """Resume the named job (or the job this flow run made before a retry), else create one.
    A request given for an existing job must be the one it was created with."""
    store = JobStore(job_id) if job_id else (find_job_by_flow_run(flow_run_id) if flow_run_id else None)
    if store is not None and store.exists():
        stored = job_request(store)
        given = parse_request(request) if request is not None else None
        if given is not None and "heldout" not in store.read_config()["request"]:
            given = given.model_copy(update={"heldout": stored.heldout})  # a job from before the split: none
        if given is not None and given != stored:
            raise InputError(
                f"request: job {store.job_id} exists with a different request; "
                "rerun it without a request or start a new job"
            )
        return store, stored
    if request is None:
        raise InputError(f"request: required to start a job ({job_id or 'no job id'} does not exist yet)")
    store = create_job(request, job_id)
    return store, job_request(store)


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_process(status: dict) -> bool:
    """A job that says running, on this host, whose process is gone (killed, OOM-killed, power cut)."""
    return (
        status.get("state") == "running"
        and status.get("host") == socket.gethostname()
        and not process_alive(status.get("pid"))
    )


def job_status(job_id: str) -> dict:
    """The status API's shape, read from status.json (kept current by every phase). A running job
    whose process died says failed, since nobody else will write that."""
    store = open_job(job_id)
    s = store.read_status()
    if dead_process(s):
        s = {
            **s,
            "state": "failed",
            "error": f"the job's process (pid {s.get('pid')}) died; `irsflow rerun {store.job_id}` resumes it",
        }
    detail = {
        # status files written before the rename say current_iteration/total_iterations (compatibility fallback)
        "current_round": s.get("current_round", s.get("current_iteration", 0)),
        "total_rounds": s.get("total_rounds", s.get("total_iterations")),
        "current_phase": s.get("current_phase"),
        "phase_progress": s.get("phase_progress", 0.0),
        "metrics": s.get("metrics", {"avg_reward": None, "reward_breakdown": {}, "current_weights": {}}),
        "runtime": s.get("runtime", {"device": None, "unsloth_available": None, "gpu_mem_used": None}),
        # which round became checkpoints/final, and why the job stopped before its last round
        **{k: s[k] for k in ("final_round", "rounds_run", "final_by", "stopped_early") if s.get(k) is not None},
    }
    out = {"job_id": store.job_id, "stage": s.get("stage", "IRS"), "state": s.get("state", "unknown"), "detail": detail}
    if s.get("error"):
        out["error"] = s["error"]
    if s.get("flow_run_id"):
        out["flow_run_id"] = s["flow_run_id"]
    return out


def job_metrics(job_id: str) -> list[dict]:
    return open_job(job_id).read_metrics()
