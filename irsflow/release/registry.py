"""MLflow tracking and the adapter registry: every job and eval is a run; finished jobs register
their adapter as a new model version; aliases `challenger` / `champion` drive the gate and serving.

    reg = Registry(TrackingSettings())                 # SQLite + artifacts under <data dir>/mlflow
    run_id = reg.log_job(store)                       # params, per-iteration metrics, hashes, adapter
    v = reg.register(run_id, store)                   # new version, tagged, aliased `challenger`
    reg.adapter_path(v)                               # its local copy: <cache dir>/<model>/v<N>-<key>
    reg.promote(v)                                    # `champion` -> v (the old champion remembered)
    reg.rollback()                                    # `champion` -> the previous champion

Tracking URI: ``TrackingSettings.tracking_uri``, else ``$IRSFLOW_MLFLOW_URI``, else SQLite under the
data dir. With an ``mlflow server`` (artifact proxy on, its default) artifact URIs are
``mlflow-artifacts:/...``: they are never paths, and the client need not share the server's disk.

Whatever reads an adapter gets a checked local copy from the adapter cache, never the artifact
URI (``irsflow.release.adapter_cache``: where the copies live, and how vLLM must see them).

Finished runs are never written to: the model card is the version's description in the registry
and a file beside the cache (``card_path``), not a README inside the run's artifacts.

The champion history lives in the registered model's tag ``champion_history`` (a JSON list of
versions), so rollback needs nothing but the registry. Adapters are logged as files
(``log_artifacts``); ``mlflow.transformers.log_model`` is not used (with a PeftModel it was seen to
reload base weights). MLflow prints "View run ..." links on stdout when a run ends against a
server; they are sent to stderr here, so commands that print JSON print only JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from irsflow.errors import InputError
from irsflow.release.adapter_cache import AdapterCache, check_adapter
from irsflow.release.adapter_cache import cache_root as adapter_cache_root
from irsflow.store import JobStore, atomic_write_text, data_dir, hash_path, read_jsonl

log = logging.getLogger("irsflow.release.registry")
CHALLENGER, CHAMPION = "challenger", "champion"


class TrackingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tracking_uri: str | None = Field(
        None, description="MLflow server URI; default $IRSFLOW_MLFLOW_URI, else sqlite:///<data dir>/mlflow/mlflow.db"
    )
    artifact_root: str | None = Field(None, description="default <data dir>/mlflow/artifacts (server: its own)")
    experiment: str = "irsflow"
    model_name: str = Field("irsflow-adapter", min_length=1, description="the registered model")
    cache_dir: str | None = Field(
        None,
        description="local copies of registered adapters (what evaluation and "
        "vLLM read); default $IRSFLOW_ADAPTER_CACHE, else "
        "<data dir>/adapter_cache. vLLM must see it at the same path",
    )

    def uri(self) -> str:
        return (
            self.tracking_uri
            or os.environ.get("IRSFLOW_MLFLOW_URI")
            or f"sqlite:///{data_dir() / 'mlflow' / 'mlflow.db'}"
        )

    def cache_root(self) -> Path:
        return adapter_cache_root(self.cache_dir)


class Registry:
    def __init__(self, settings: TrackingSettings | None = None):
        import mlflow
        from mlflow import MlflowClient

        self.s = settings or TrackingSettings()
        self.uri = uri = self.s.uri()
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.mlflow = mlflow
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.cache = AdapterCache(self.s.cache_root(), self.s.model_name, uri)
        exp = self.client.get_experiment_by_name(self.s.experiment)
        if exp is None:
            root = self.s.artifact_root or (
                None if not uri.startswith("sqlite") else (data_dir() / "mlflow" / "artifacts").as_uri()
            )
            self.experiment_id = self.client.create_experiment(self.s.experiment, artifact_location=root)
        else:
            self.experiment_id = exp.experiment_id

    # --- tracking -----------------------------------------------------------------------------
    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        """End a run. Against a server MLflow writes "View run ..." links to stdout here: they go to
        stderr, so a command's stdout stays machine-readable."""
        with contextlib.redirect_stdout(sys.stderr):
            self.client.set_terminated(run_id, status)

    def job_run(self, store: JobStore) -> str | None:
        """The run this job was already logged as (status.json's mlflow_run_id), if it still exists."""
        from mlflow.exceptions import MlflowException

        rid = store.read_status().get("mlflow_run_id")
        if not rid:
            return None
        try:
            self.client.get_run(rid)
            return rid
        except MlflowException:
            return None

    def log_job(self, store: JobStore, adapter: str | None = None) -> str:
        """One run per job: request params, per-iteration METRICS rows (and TRAINING/EVALUATING rows
        as ``train.*``/``eval.*``), data hashes, the adapter.
        A job already logged returns its run (a rerun or a gate run does not log it twice)."""
        existing = self.job_run(store)
        if existing:
            return existing
        cfg = store.read_config()
        req = cfg["request"]
        adapter = adapter or str(store.checkpoint("final"))
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"job-{store.job_id}",
            tags={"irsflow.kind": "job", "irsflow.job_id": store.job_id},
        )
        rid = run.info.run_id
        try:
            params = _flatten(req)
            for k, v in params.items():
                self.client.log_param(rid, k, str(v)[:6000])
            for row in read_jsonl(store.metrics_path):
                phase = row.get("phase")
                # rewards per round, and each stage's training/eval figures (loss, DPO margin, PPO KL, ...)
                prefix = {"METRICS": "", "TRAINING": "train.", "EVALUATING": "eval."}.get(phase)
                if prefix is None or (prefix and set(row) <= {"ts", "iter", "phase", "progress"}):
                    continue
                step = int(row.get("iter", 0))
                for k, v in row.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("iter", "progress"):
                        self.client.log_metric(rid, f"{prefix}{k}", float(v), step=step)
                for k, v in (row.get("reward_breakdown") or {}).items():
                    if v is not None:
                        self.client.log_metric(rid, f"r_{k}", float(v), step=step)
            for k, v in self.data_hashes(store).items():
                self.client.set_tag(rid, k, v)
            self.client.log_artifacts(rid, adapter, "adapter")
            self.finish(rid)
            store.update_status(mlflow_run_id=rid)
        except BaseException:
            self.finish(rid, "FAILED")
            raise
        return rid

    def log_eval(self, name: str, params: dict, scalars: dict[str, float], details: Path | None = None) -> str:
        """A standalone evaluation as a run (``irsflow.kind`` = eval): params, metrics, details file."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags={"irsflow.kind": "eval"})
        rid = run.info.run_id
        for k, v in _flatten(params).items():
            self.client.log_param(rid, k, str(v)[:6000])
        for k, v in scalars.items():
            self.client.log_metric(rid, k, float(v))
        if details is not None:
            self.client.log_artifact(rid, str(details))
        self.finish(rid)
        return rid

    @staticmethod
    def data_hashes(store: JobStore) -> dict[str, str]:
        cfg = store.read_config()
        out = {"irsflow.questions_sha256": cfg.get("questions_sha256", "")}
        if store.samples_path.exists():
            out["irsflow.train_data_sha256"] = hash_path(store.samples_path)
        return out

    # --- model cards ----------------------------------------------------------------------------
    def card_path(self, version: str) -> Path:
        """The model card of a version: beside the cache, never inside the run's artifacts."""
        return self.s.cache_root() / self.s.model_name / "cards" / f"v{version}.md"

    def write_card(self, version: str, text: str) -> Path:
        """The card as the version's description in the registry (every client sees it) and as a file.
        MLflow's SQL stores hold 5000 characters of description: a longer card is cut there only."""
        self.client.update_model_version(self.s.model_name, str(version), description=text[:5000])
        path = self.card_path(version)
        atomic_write_text(path, text)
        return path

    # --- registry -----------------------------------------------------------------------------
    def register(self, run_id: str, store: JobStore) -> str:
        """New version from the run's ``adapter`` artifacts, checked first (as downloaded back from
        the artifact store), then aliased challenger; the checked download becomes its cache copy.
        A run registered before (a retried gate) gets its version back instead of a duplicate."""
        from mlflow.exceptions import MlflowException

        try:
            done = self.client.search_model_versions(f"name='{self.s.model_name}' and run_id='{run_id}'")
        except MlflowException:
            done = []
        if done:
            version = str(max(int(v.version) for v in done))
            if not self.client.get_model_version(self.s.model_name, version).tags.get("gate.promote"):
                self.client.set_registered_model_alias(self.s.model_name, CHALLENGER, version)
            log.info("run %s is already version %s of %s", run_id, version, self.s.model_name)
            return version
        run = self.client.get_run(run_id)
        source = f"{run.info.artifact_uri}/adapter"
        with self.cache.scratch(".register.") as tmp:
            got = self.cache.download_checked(source, tmp, f"of run {run_id} ({source})")
            try:
                self.client.get_registered_model(self.s.model_name)
            except MlflowException:
                self.client.create_registered_model(self.s.model_name, description="irsflow LoRA adapters")
            req = store.read_config()["request"]
            tags = {
                "base_model": req["model_id"],
                "job_id": store.job_id,
                "stage": req.get("stage", "IRS"),
                **{k.removeprefix("irsflow."): v for k, v in self.data_hashes(store).items()},
            }
            mv = self.client.create_model_version(self.s.model_name, source=source, run_id=run_id, tags=tags)
            self.cache.install(got, self.cache.slot(str(mv.version), mv.source))
        self.client.set_registered_model_alias(self.s.model_name, CHALLENGER, mv.version)
        log.info("registered %s version %s (job %s) as %s", self.s.model_name, mv.version, store.job_id, CHALLENGER)
        return str(mv.version)

    def version(self, alias_or_version: str):
        from mlflow.exceptions import MlflowException

        try:
            if alias_or_version.isdigit():
                return self.client.get_model_version(self.s.model_name, alias_or_version)
            return self.client.get_model_version_by_alias(self.s.model_name, alias_or_version)
        except MlflowException:
            return None

    def adapter_path(self, alias_or_version: str) -> str | None:
        """The local copy of a version's adapter (downloaded into the cache on first use); None when
        the registry has no such version or alias."""
        mv = self.version(alias_or_version)
        return str(self.cache.local_copy(str(mv.version), mv.source)) if mv else None

    def champion_history(self) -> list[str]:
        from mlflow.exceptions import MlflowException

        try:
            rm = self.client.get_registered_model(self.s.model_name)
        except MlflowException:
            return []
        return json.loads(rm.tags.get("champion_history", "[]"))

    def promote(self, version: str) -> str | None:
        """Move ``champion`` to ``version``; returns the previous champion's version (or None).
        Promoting the current champion again (a retried deploy) changes nothing."""
        version = str(version)
        check_adapter(self.adapter_path(version) or "", name=f"{self.s.model_name} version {version}")
        prev = self.version(CHAMPION)
        if prev is not None and str(prev.version) == version:
            history = self.champion_history()
            return history[-2] if len(history) > 1 else None
        history = self.champion_history() + [version]
        self.client.set_registered_model_alias(self.s.model_name, CHAMPION, version)
        self.client.set_registered_model_tag(self.s.model_name, "champion_history", json.dumps(history))
        return str(prev.version) if prev else None

    def previous_champion(self) -> tuple[str, str]:
        """(current, previous) champion versions, as ``rollback`` would move them; nothing moves."""
        history = self.champion_history()
        if len(history) < 2:
            raise InputError(f"rollback: {self.s.model_name} has no previous champion (history {history})")
        return history[-1], history[-2]

    def rollback(self) -> tuple[str, str]:
        """``champion`` back to the previous champion: returns (from, to) versions."""
        current, previous = self.previous_champion()
        history = self.champion_history()
        self.client.set_registered_model_alias(self.s.model_name, CHAMPION, previous)
        self.client.set_registered_model_tag(self.s.model_name, "champion_history", json.dumps(history[:-1]))
        self.client.set_model_version_tag(self.s.model_name, current, "rolled_back", "true")
        return current, previous


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if (
            isinstance(v, dict)
            and v
            and all(isinstance(x, (dict, str, int, float, bool, type(None))) for x in v.values())
        ):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (dict, list)) else v
    return out
