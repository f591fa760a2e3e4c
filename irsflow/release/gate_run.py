"""One gate run: the eval gate judging one challenger, as library steps the Prefect flow strings
together (and tests call):

    s = EvalGateSettings(model_id=..., suites=..., gate=..., vllm=...)
    version = register_job(s, store)                       # job -> MLflow run -> version, alias challenger
    champ = evaluate(s, registry.adapter_path("champion"), out_dir / "champion")   # None: the base model
    chall = evaluate(s, registry.adapter_path(version), out_dir / "challenger")
    n = next_gate_run(registry)                            # this gate run's number
    result = decide_and_record(s, version, champ, chall, n, champ_version)   # MLflow + tags, gate_run_<n>.json
    if result["promote"]: promote_and_deploy(s, result, champ_path)         # vLLM first, then alias and card

Gate runs are numbered per registered model (``next_gate_run``: the model's ``gate_runs`` tag + 1).
Each step writes its files atomically under ``<data dir>/evals/<model>/gate_run_<n>/``. (A training
round's own eval is ``eval_round_<n>.json`` in its job dir; a gate run is not a training round.)
Adapters are the registry's local copies (``Registry.adapter_path``: downloaded through MLflow into
the cache), so a gate run works against an ``mlflow server`` whose disk this machine does not share.

A promotion serves first and moves the alias second: if vLLM cannot serve the new version the
registry is left exactly as it was (no champion where there was none, the previous one where
there was one) and the gate run fails with :class:`ServingError`, which carries the server's HTTP
status so the orchestrator retries 429/5xx and connection failures (``tasks.eval.deploy_task``)
and fails a 404 at once.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from irsflow.errors import InputError
from irsflow.evals.card import append_changelog, model_card
from irsflow.evals.gate import Decision, EvalScores, GateConfig, decide
from irsflow.evals.suites import EvalSuites, run_suites
from irsflow.release.adapter_cache import check_adapter
from irsflow.release.registry import CHAMPION, Registry, TrackingSettings
from irsflow.release.serving import VLLMClient, VLLMSettings, hot_load
from irsflow.stages import get_stage
from irsflow.store import JobStore, atomic_write_json, data_dir, utc_now

log = logging.getLogger("irsflow.evals")


class EvalGateSettings(BaseModel):
    """Everything a gate run reads; strict, validated before any model loads."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_id: str | None = Field(None, description="base model; default the job's model_id")
    load_in_4bit: bool = False
    suites: EvalSuites = Field(default_factory=EvalSuites)
    gate: GateConfig = Field(default_factory=GateConfig)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    vllm: VLLMSettings | None = Field(None, description="hot-load the champion here on promotion; None: no serving")


GATE_RUNS_TAG = "gate_runs"  # registered-model tag: how many gate runs the model has had
# A registry written before gate runs had this name counts them in the old tag: its number is
# continued, and the old tag is dropped once ``gate_runs`` replaces it.
OLD_GATE_RUNS_TAG = "gate_rounds"  # compatibility fallback: read when gate_runs is absent


def gate_run_dir(s: EvalGateSettings, n: int) -> Path:
    return data_dir() / "evals" / s.tracking.model_name / f"gate_run_{n}"


def next_gate_run(reg: Registry) -> int:
    from mlflow.exceptions import MlflowException

    try:
        rm = reg.client.get_registered_model(reg.s.model_name)
    except MlflowException:
        return 1
    return int(rm.tags.get(GATE_RUNS_TAG, rm.tags.get(OLD_GATE_RUNS_TAG, "0"))) + 1


def _count_gate_run(reg: Registry, n: int) -> None:
    reg.client.set_registered_model_tag(reg.s.model_name, GATE_RUNS_TAG, str(n))
    if OLD_GATE_RUNS_TAG in reg.client.get_registered_model(reg.s.model_name).tags:  # compatibility, see above
        reg.client.delete_registered_model_tag(reg.s.model_name, OLD_GATE_RUNS_TAG)


def register_job(s: EvalGateSettings, store: JobStore) -> str:
    stage = store.read_config()["request"].get("stage", "IRS")
    if not get_stage(stage).trains_policy:
        raise InputError(
            f"job_id: {store.job_id} trained a reward model (stage {stage}), not an adapter to serve; "
            "use it as scoring.reward_model"
        )
    adapter = store.checkpoint("final")
    check_adapter(adapter)  # a broken folder fails here, before a run, a version or an alias exists
    reg = Registry(s.tracking)
    return reg.register(reg.log_job(store, str(adapter)), store)


def scores_to_json(scores: EvalScores, details: dict) -> dict:
    return {
        "per_item": {k: [float(x) for x in v] for k, v in scores.per_item.items()},
        "scalars": scores.scalars,
        "details": details,
    }


def scores_from_json(doc: dict) -> EvalScores:
    return EvalScores({k: np.asarray(v, dtype=float) for k, v in doc["per_item"].items()}, dict(doc["scalars"]))


def evaluate(
    s: EvalGateSettings, model_path: str, adapter: str | None, out: Path, teacher_api_key: str | None = None
) -> dict:
    """Run every suite on base + ``adapter`` (None: the base model itself); write ``out``.json."""
    scores, details = run_suites(
        model_path, adapter, s.suites, load_in_4bit=s.load_in_4bit, teacher_api_key=teacher_api_key
    )
    doc = {"adapter": adapter, "model": model_path, **scores_to_json(scores, details)}
    atomic_write_json(out.with_suffix(".json"), doc)
    return doc


def decide_and_record(
    s: EvalGateSettings, version: str, champion: dict, challenger: dict, n: int, champion_version: str | None
) -> dict:
    """Gate run ``n``'s decision; every number to an MLflow eval run, the version's tags and
    ``gate_run_<n>.json``. Returns the result the flow reports and deploys from."""
    d: Decision = decide(scores_from_json(champion), scores_from_json(challenger), s.gate)
    reg = Registry(s.tracking)
    run = reg.client.create_run(
        reg.experiment_id,
        run_name=f"gate-run-{n}-v{version}",
        tags={
            "irsflow.kind": "eval-gate",
            "irsflow.version": version,
            "irsflow.champion_version": champion_version or "base",
        },
    )
    rid = run.info.run_id
    for who, doc in (("champion", champion), ("challenger", challenger)):
        for k, v in doc["scalars"].items():
            reg.client.log_metric(rid, f"{who}.{k}", float(v))
    p = d.numbers["primary"]
    for k in ("mean_diff", "ci_low", "ci_high"):
        reg.client.log_metric(rid, f"gate.{k}", p[k])
    tags = {
        "gate.promote": str(d.promote).lower(),
        "gate.reasons": " | ".join(d.reasons)[:4900],
        "gate.numbers": json.dumps(d.numbers, default=float)[:4900],
        "gate.run": str(n),
        "gate.champion_version": champion_version or "base",
    }
    for k, v in tags.items():  # on the gate run's MLflow run and on the version it judged
        reg.client.set_tag(rid, k, v)
        reg.client.set_model_version_tag(reg.s.model_name, version, k, v)
    reg.finish(rid)
    _count_gate_run(reg, n)
    result = {
        "gate_run": n,
        "version": version,
        "champion_version": champion_version,
        "promote": d.promote,
        "reasons": d.reasons,
        "numbers": d.numbers,
        "mlflow_run_id": rid,
        "date": utc_now()[:10],
        "metrics": {k: (champion["scalars"].get(k), challenger["scalars"].get(k)) for k in challenger["scalars"]},
    }
    atomic_write_json(
        gate_run_dir(s, n) / f"gate_run_{n}.json",
        {
            "gate_run": n,
            "created_at": utc_now(),
            "version": version,
            "champion_version": champion_version,
            "gate": {"promote": d.promote, "reasons": d.reasons, "numbers": d.numbers},
            "champion": {"scalars": champion["scalars"], "dialogue": champion["details"].get("dialogue")},
            "challenger": {"scalars": challenger["scalars"], "dialogue": challenger["details"].get("dialogue")},
        },
    )
    return result


class ServingError(RuntimeError):
    """vLLM could not serve the new champion; the registry was left as it was before the gate run.
    ``status_code``: the server's HTTP status (None: no answer), which ``irsflow.retry.failure_kind``
    reads to retry 429/5xx and connection errors and fail anything else at once. Never an
    ``InputError``: the adapter passed its checks, the server is what failed."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


def _http_status(err: BaseException) -> int | None:
    """The HTTP status behind a serving failure (``DeployError.status_code``; None: no HTTP answer)."""
    code = getattr(err, "status_code", None)
    return code if isinstance(code, int) else None


def promote_and_deploy(s: EvalGateSettings, result: dict, previous_path: str | None) -> dict:
    """Serve the version in vLLM (verified), then move ``champion`` and write the card.

    A serving failure raises :class:`ServingError` before the registry changes (``hot_load`` has
    put the previous adapter back, or unloaded the new one when there was none). If moving the
    alias fails after vLLM switched, the server is switched back so that both still agree.
    Safe to retry: loading the same path again and promoting the champion again change nothing."""
    reg = Registry(s.tracking)
    version = str(result["version"])
    path = reg.adapter_path(version)  # the local copy: what vLLM loads (the cache is on its volume)
    if path is None:
        raise InputError(f"promote: {reg.s.model_name} has no version {version}")
    served = None
    if s.vllm is not None:
        try:
            served = hot_load(s.vllm, path, previous=previous_path)
        except Exception as err:
            champ = reg.version(CHAMPION)
            raise ServingError(
                f"serving version {version} failed: {err}; the registry is unchanged (champion: "
                f"{'version ' + str(champ.version) if champ else 'none'})",
                _http_status(err),
            ) from err
    try:
        reg.promote(version)
    except Exception:
        if s.vllm is not None:
            _serve_back(s.vllm, previous_path)
        raise
    card = reg.write_card(version, model_card(_card_info(reg, result)))
    return {"champion": version, "path": path, "served": served, "card": str(card)}


def _serve_back(v: VLLMSettings, previous_path: str | None) -> None:
    """Put vLLM back on ``previous_path`` (None: unload the serving name)."""
    try:
        if previous_path:
            hot_load(v, previous_path)
        else:
            client = VLLMClient(v)
            try:
                client.unload()
            finally:
                client.close()
    except Exception as err:  # noqa: BLE001 - the registry error is the one to raise
        log.error("vLLM: could not switch back to %s: %s", previous_path or "no adapter", err)


def _card_info(reg: Registry, result: dict) -> dict:
    """What the model card and the changelog say about a gate run's version."""
    mv = reg.version(result["version"])
    return {
        "version": result["version"],
        "base_model": mv.tags.get("base_model", ""),
        "job_id": mv.tags.get("job_id", ""),
        "gate_run": result["gate_run"],
        "date": result["date"],
        "data": {k: v for k, v in mv.tags.items() if k.endswith("sha256")},
        "metrics": result["metrics"],
        "decision": {"promote": result["promote"], "reasons": result["reasons"]},
    }


def changelog(s: EvalGateSettings, result: dict) -> Path:
    path = data_dir() / "evals" / s.tracking.model_name / "CHANGELOG.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    append_changelog(path, _card_info(Registry(s.tracking), result))
    return path


def rollback(s: EvalGateSettings) -> dict:
    """``champion`` back to the previous one: vLLM reloaded with it first (if configured), then the
    alias moved; a serving failure leaves both on the current champion."""
    reg = Registry(s.tracking)
    current, previous = reg.previous_champion()
    cur_path, prev_path = reg.adapter_path(current), reg.adapter_path(previous)
    served = None
    if s.vllm is not None:
        try:
            served = hot_load(s.vllm, prev_path, previous=cur_path)
        except Exception as err:
            raise ServingError(
                f"rollback to version {previous} failed: {err}; the registry is unchanged "
                f"(champion: version {current})",
                _http_status(err),
            ) from err
    try:
        reg.rollback()
    except Exception:
        if s.vllm is not None:
            _serve_back(s.vllm, cur_path)
        raise
    return {"from": current, "to": previous, "path": prev_path, "served": served}


def gate_markdown(result: dict) -> str:
    p = result["numbers"]["primary"]
    lines = [
        f"# Eval gate, gate run {result['gate_run']}: version {result['version']} vs "
        f"{'version ' + result['champion_version'] if result['champion_version'] else 'the base model'}",
        "",
        f"**{'PROMOTED' if result['promote'] else 'NOT promoted'}**",
        "",
        *[f"- {r}" for r in result["reasons"]],
        "",
        f"Primary `{p['metric']}`: champion {p['champion']:.4f}, challenger {p['challenger']:.4f}, gain "
        f"{p['mean_diff']:+.4f}, {p['confidence']:.0%} CI [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}] over {p['n']} "
        f"paired items ({p['n_boot']} resamples).",
        "",
        "| metric | champion | challenger |",
        "|---|---|---|",
    ]
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"
    lines += [f"| {k} | {fmt(a)} | {fmt(b)} |" for k, (a, b) in result["metrics"].items()]
    for name, v in result["numbers"]["safety"].items():
        lines.append(f"\nSafety `{name}`: drop {v['drop']:+.4f} (tolerance {v['tolerance']:.4f})")
    return "\n".join(lines) + "\n"


def require_challenger(reg: Registry, version: str | None) -> str:
    mv = reg.version(version or "challenger")
    if mv is None:
        raise InputError(f"eval gate: no version {version or 'aliased challenger'} in {reg.s.model_name}")
    return str(mv.version)


__all__ = [
    "EvalGateSettings",
    "ServingError",
    "register_job",
    "evaluate",
    "decide_and_record",
    "promote_and_deploy",
    "changelog",
    "rollback",
    "gate_markdown",
    "next_gate_run",
    "gate_run_dir",
    "require_challenger",
]
