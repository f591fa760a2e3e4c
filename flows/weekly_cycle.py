"""The weekly cycle: one scheduled flow that closes the loop from users' feedback to a served adapter.

    feedback-etl (subflow)          Langfuse thumbs + Label Studio corrections -> training files
    prepare-cycle (cpu)             new questions -> the cycle's prompt set (red-team share, anchors)
    teacher-labelling (subflow)     the teacher judges every new rated answer (where configured)
    train (subflow)                 the configured stage (IRS by default) from the champion adapter
    eval-gate (subflow)             one gate run: champion vs challenger -> promote -> hot-load into vLLM
    report                          <data dir>/weekly/<cycle id>/report.md + a markdown artifact

Each subflow is also its own deployment. The cycle id comes from this flow run, so a retried run
(UI Retry, ``prefect flow-run retry``) reuses the ETL folder, the cached teacher judgements and the
training job of the same id: finished phases come back Cached and no teacher call is billed twice.
A week without new feedback skips training, evaluates the current champion and says so.

Run it:  irsflow weekly [--settings weekly.json]          prefect deployment run weekly-cycle/weekly
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.eval_gate import eval_gate
from flows.feedback_etl import feedback_etl
from flows.teacher_labelling import teacher_labelling
from flows.train import train_job
from irsflow.feedback.etl import feedback_dir
from irsflow.release import weekly
from irsflow.release.registry import CHAMPION, Registry
from tasks.credentials import require_teacher_key
from tasks.eval import evaluate_task
from tasks.feedback import langfuse_keys
from tasks.limits import CPU_TAG, ensure_gpu_limit
from tasks.logs import route_library_logs
from tasks.runs import stable_run_id

log = logging.getLogger("irsflow.release.weekly")


def langfuse_configured(s: weekly.WeeklySettings) -> bool:
    return bool((s.feedback.langfuse.get("host") or os.environ.get("LANGFUSE_HOST")) and langfuse_keys())


@task(name="prepare-cycle", tags=[CPU_TAG])
def prepare_task(settings: weekly.WeeklySettings, cycle_id: str, etl_dir: str | None) -> dict:
    return weekly.prepare_cycle(settings, cycle_id, Path(etl_dir) if etl_dir else None)


@flow(name="weekly-cycle", flow_run_name="weekly-{settings.request.stage}", log_prints=False)
def weekly_cycle(settings: weekly.WeeklySettings = weekly.WeeklySettings()) -> dict:
    """One weekly cycle (see the module docstring); returns the report's JSON."""
    route_library_logs()
    ensure_gpu_limit()
    cycle_id = stable_run_id()  # the same on a retry: the ETL folder, the job and the report are found again
    gate = weekly.gate_settings(settings)
    if settings.teacher is not None or settings.request.uses_teacher():
        require_teacher_key()  # before any work: a cycle that cannot label should not start
    log.info("weekly cycle %s: stage %s", cycle_id, settings.request.stage)

    # 1. what came in
    came_in = {"etl_run": None, "traces": 0, "thumbs_up": 0, "thumbs_down": 0, "corrections": 0}
    etl_dir = None
    # Langfuse thumbs, and/or the Label Studio project of settings.feedback.label_studio (pulled first,
    # the run's new thumbs-down tasks pushed after) or the export file settings.label_studio_export
    plan = weekly.feedback_plan(settings, langfuse_ready=langfuse_configured(settings))
    if plan["run"]:
        if plan["skip_langfuse"]:
            log.warning(
                "weekly cycle %s: Langfuse not read (%s); Label Studio corrections only",
                cycle_id,
                plan["skip_langfuse"],
            )
            came_in["langfuse_skipped"] = plan["skip_langfuse"]
        etl = feedback_etl(
            settings=settings.feedback,
            label_studio_export=settings.label_studio_export,
            run_id=cycle_id,
            skip_langfuse=plan["skip_langfuse"],
        )
        if etl.get("label_studio_push"):
            came_in["label_studio_push"] = etl["label_studio_push"]
        if (feedback_dir() / cycle_id / "manifest.json").exists():  # written now or by an earlier attempt
            etl_dir = str(feedback_dir() / cycle_id)
            came_in.update(etl_run=cycle_id, traces=etl["counts"].get("records", 0))
    else:
        log.warning(
            "weekly cycle %s: %s and no Label Studio source set; no new feedback to extract",
            cycle_id,
            plan["skip_langfuse"],
        )
    prep = prepare_task(settings, cycle_id, etl_dir)
    came_in.update(prep["counts"])
    reg = Registry(gate.tracking)
    champ = reg.version(CHAMPION)
    champ_version = str(champ.version) if champ else None
    champ_path = reg.adapter_path(champ_version) if champ_version else None
    cost = {"teacher_calls": 0, "teacher_usd": 0.0, "gpu_minutes": 0.0}
    doc = {
        "cycle_id": cycle_id,
        "stage": settings.request.stage,
        "came_in": came_in,
        "prompts": None,
        "training": None,
        "gate": None,
        "champion_eval": None,
        "cost": cost,
    }

    if not prep["new_questions"]:
        # 2'. no new feedback: no training, no empty model; the champion is still evaluated
        if champ_path:
            t0 = time.perf_counter()
            ev = evaluate_task(
                gate,
                settings.request.model_id,
                champ_path,
                str(weekly.cycle_dir(cycle_id) / "champion_eval"),
                "champion",
            )
            cost["gpu_minutes"] = (time.perf_counter() - t0) / 60
            doc["champion_eval"] = ev["scalars"]
        doc["outcome"] = "No new feedback: nothing trained or registered; " + (
            f"champion version {champ_version} evaluated and still served."
            if champ_path
            else "no champion yet, the base model stays served."
        )
    else:
        doc["prompts"] = {k: prep[k] for k in ("n_prompts", "high_risk", "by_source")}
        # 2. teacher labelling of the new items
        cdir = weekly.cycle_dir(cycle_id)
        if settings.teacher is not None and prep["new_samples"]:
            teacher_labelling(
                samples=str(cdir / "labelling_samples.jsonl"),
                teacher=settings.teacher,
                scoring=settings.request.scoring,
                out_dir=str(cdir / "teacher"),
            )
        # 3. training from the champion
        req = weekly.cycle_request(settings, cdir / "prompts.jsonl", prep["n_prompts"], champ_path)
        train = train_job(request=req, job_id=cycle_id)
        doc["training"] = {
            **{k: train[k] for k in ("job_id", "stage", "iterations", "final_adapter")},
            "started_from": f"champion version {champ_version}" if champ_version else None,
        }
        # 4. the gate, and vLLM on promotion
        result = eval_gate(job_id=train["job_id"], settings=gate)
        doc["gate"] = {
            "gate_run": result["gate_run"],
            "version": result["version"],
            "promote": result["promote"],
            "reasons": result["reasons"],
            "table": result["metrics"],
            "champion_before": result["champion_before"],
        }
        cost["gpu_minutes"] = (train["gpu_seconds"] + result["gpu_seconds"]) / 60
        doc["outcome"] = (
            f"Version {result['version']} promoted to champion"
            if result["promote"]
            else f"Version {result['version']} registered; the champion ({champ_version or 'base model'}) stays"
        )
        if result["promote"]:
            champ_version, champ_path = result["version"], reg.adapter_path(result["version"])
        doc["served_deploy"] = result["deployed"]
    spend = weekly.teacher_spend(
        [
            weekly.cycle_dir(cycle_id) / "teacher" / "teacher_usage.csv",
            *([Path(doc["training"]["final_adapter"]).parents[1] / "teacher_usage.csv"] if doc["training"] else []),
        ]
    )
    cost.update(teacher_calls=spend["calls"], teacher_usd=spend["usd"], gpu_minutes=round(cost["gpu_minutes"], 3))
    deployed = (doc.pop("served_deploy", None) or {}).get("served") or {}
    doc["served"] = {
        "champion": f"version {champ_version} ({champ_path})" if champ_version else None,
        "vllm": gate.vllm is not None,
        "served_name": gate.vllm.serving_name if gate.vllm else None,
        "vllm_adapter": deployed.get("path") or deployed.get("adapter"),
    }
    path, md = weekly.write_report(cycle_id, doc)
    create_markdown_artifact(markdown=md, key="weekly-cycle", description=f"weekly cycle {cycle_id}: {doc['outcome']}")
    log.info("weekly cycle %s: %s; report %s", cycle_id, doc["outcome"], path)
    return {**doc, "report": str(path)}
