"""Label Studio's REST API over plain HTTP (no label-studio-sdk, which pulls opencv): push the
correction tasks into a project, pull the project's JSON export back.

    push_tasks(url, key, project_id, tasks)          # GET /api/tasks/?project=..  then POST /api/projects/{id}/import
    pull_export(url, key, project_id, out_path)      # GET  /api/projects/{id}/export?exportType=JSON

The key is a legacy API token (``Authorization: Token <key>``; the server must allow legacy tokens)
or a personal access token (a JWT refresh token, exchanged at ``POST /api/token/refresh/`` for an
access token sent as ``Authorization: Bearer``), as label-studio-sdk does. It comes from the
caller (the CLI and the Prefect tasks read ``LABEL_STUDIO_API_KEY`` or the Secret block
``label-studio-api-key``) and never reaches a log line or an error message.

Pushing is idempotent: a task whose answer is already in the project (same ``data.trace_id``, or
same ``data.score_id``) is not imported again, so a retried run or a repeated push adds nothing,
and one answer never gets two correction tasks.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from irsflow.errors import InputError
from irsflow.feedback.label_studio import check_format
from irsflow.store import atomic_write_bytes

log = logging.getLogger("irsflow.feedback")
KEY_ENV, URL_ENV = "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_URL"


class LabelStudioSettings(BaseModel):
    """Pull a Label Studio project's export before each feedback ETL run (no key here)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)  # a key put here is never echoed
    url: str | None = Field(None, description=f"the server, e.g. http://127.0.0.1:8080 (default env {URL_ENV})")
    project_id: int = Field(..., ge=1, description="the project holding the correction tasks")
    timeout_s: float = Field(120, gt=0, description="per request; a large export takes a while")
    push: bool = Field(
        True,
        description=(
            "after each ETL run, push its new thumbs-down tasks (label_studio_tasks.json) into the project; "
            "tasks already there (same score or trace id) are skipped"
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _no_key(cls, v: Any) -> Any:
        if isinstance(v, dict) and {"api_key", "key", "token"} & set(v):
            raise ValueError(
                f"keys do not belong in settings: set {KEY_ENV} or the Prefect Secret block label-studio-api-key"
            )
        return v

    def server(self) -> str | None:
        return self.url or os.environ.get(URL_ENV)


def _is_jwt(key: str) -> bool:
    parts = key.split(".")
    return len(parts) == 3 and all(parts) and key.startswith("eyJ")


class LabelStudio:
    """A small client for one server: InputError on a bad key, project or request (never retried);
    ``ConnectionError`` when it does not answer and ``httpx.HTTPStatusError`` on a 5xx (both
    transient: the tasks retry them)."""

    def __init__(self, url: str | None, api_key: str | None, timeout_s: float = 120):
        import httpx

        url = url or os.environ.get(URL_ENV)
        if not url:
            raise InputError(f"label_studio.url: not set (or set {URL_ENV})")
        if not api_key:
            raise InputError(f"{KEY_ENV}: not set (nor the Prefect Secret block label-studio-api-key)")
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s)
        if not _is_jwt(api_key):
            self.http.headers["Authorization"] = f"Token {api_key}"
            return
        try:
            access = self._check(self._send("POST", "/api/token/refresh/", json={"refresh": api_key}), "token refresh")
        except BaseException:
            self.http.close()
            raise
        self.http.headers["Authorization"] = f"Bearer {access.json()['access']}"

    def _send(self, method: str, path: str, **kw):
        import httpx

        try:
            return self.http.request(method, path, **kw)
        except httpx.TransportError as err:  # a builtin ConnectionError: transient, retried by the tasks
            raise ConnectionError(f"label studio {self.url}: unreachable ({type(err).__name__}: {err})") from err

    def _check(self, r, what: str):
        if r.status_code in (401, 403):
            raise InputError(
                f"label studio {self.url}: {what} refused ({r.status_code}): check {KEY_ENV} "
                "(a legacy token needs the server's legacy tokens enabled)"
            )
        if r.status_code == 404:
            raise InputError(f"label studio {self.url}: {what}: not found (404)")
        if 400 <= r.status_code < 500:
            raise InputError(f"label studio {self.url}: {what} rejected ({r.status_code}): {r.text[:300]}")
        r.raise_for_status()  # 5xx: transient
        return r

    def project(self, project_id: int) -> dict:
        return self._check(self._send("GET", f"/api/projects/{project_id}/"), f"project {project_id}").json()

    def create_project(self, title: str, label_config: str) -> dict:
        return self._check(
            self._send("POST", "/api/projects/", json={"title": title, "label_config": label_config}), "create project"
        ).json()

    def import_tasks(self, project_id: int, tasks: list[dict]) -> dict:
        return self._check(
            self._send("POST", f"/api/projects/{project_id}/import", json=tasks), f"import into project {project_id}"
        ).json()

    def task_data(self, project_id: int, page_size: int = 100):
        """Each task's ``data`` in the project, page by page: ``GET /api/tasks/?project=&page=&page_size=``
        answers ``{"total", "tasks": [...]}`` and 404 "Invalid page." past the last page
        (label_studio/data_manager/api.py: TaskListAPI, TaskPagination), so the pages stop at ``total``."""
        page, seen = 1, 0
        while True:
            r = self._send(
                "GET",
                "/api/tasks/",
                params={"project": project_id, "page": page, "page_size": page_size, "resolve_uri": "false"},
            )
            body = self._check(r, f"tasks of project {project_id}").json()
            if isinstance(body, list):  # a server that does not paginate: every task at once
                yield from (t.get("data") or {} for t in body)
                return
            tasks = body.get("tasks") or []
            for t in tasks:
                yield t.get("data") or {}
            seen += len(tasks)
            if not tasks or seen >= int(body.get("total") or 0):
                return
            page += 1

    def export(self, project_id: int, export_type: str = "JSON") -> bytes:
        # paths as the server routes them (label_studio/*/urls.py, APPEND_SLASH = False): some end in "/",
        # import and export do not
        r = self._send(
            "GET",
            f"/api/projects/{project_id}/export",
            params={"exportType": export_type, "download_all_tasks": "true"},
        )
        return self._check(r, f"export of project {project_id}").content

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> LabelStudio:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def task_keys(data: dict) -> set[str]:
    """What identifies a correction task: the trace of its answer and its thumbs-down score."""
    return {f"{k}:{data[k]}" for k in ("trace_id", "score_id") if data.get(k) not in (None, "")}


def push_tasks(
    url: str | None, api_key: str | None, project_id: int, tasks: list[dict], timeout_s: float = 120
) -> dict:
    """Import the tasks the project does not hold yet (by :func:`task_keys`; a task without a key is
    always imported). Returns ``{"project", "pushed", "already_in_project"}``."""
    with LabelStudio(url, api_key, timeout_s) as ls:
        ls.project(project_id)  # a wrong id fails naming it, before the upload
        have = {k for data in ls.task_data(project_id) for k in task_keys(data)} if tasks else set()
        new, already = [], 0
        for t in tasks:
            keys = task_keys(t.get("data") or {})
            if keys & have:
                already += 1
                continue
            have |= keys  # the same answer twice in one batch goes in once
            new.append(t)
        n = ls.import_tasks(project_id, new).get("task_count", len(new)) if new else 0
    log.info("label studio: pushed %d tasks into project %s (%d already there)", n, project_id, already)
    return {"project": project_id, "pushed": n, "already_in_project": already}


def pull_export(url: str | None, api_key: str | None, project_id: int, out: str | Path, timeout_s: float = 120) -> dict:
    """Download the project's JSON export (every task, annotated or not) to ``out``, atomically;
    returns ``{"path", "tasks", "annotated"}``."""
    out = Path(out)
    with LabelStudio(url, api_key, timeout_s) as ls:
        body = ls.export(project_id)
    try:
        tasks = json.loads(body)
    except ValueError as err:
        raise InputError(f"label studio export of project {project_id}: not JSON ({err})") from None
    check_format(tasks, f"label studio export of project {project_id}")
    atomic_write_bytes(out, body)
    annotated = sum(1 for t in tasks if t.get("annotations"))
    log.info("label studio: pulled project %s: %d tasks, %d annotated -> %s", project_id, len(tasks), annotated, out)
    return {"path": str(out), "tasks": len(tasks), "annotated": annotated}
