"""A real browser sees it: headless Chromium opens the Prefect UI of the test server and finds the
deployment of the local stack and a finished IRS job's trend chart artifact, rendered (an <img> whose PNG decoded).

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/ops/test_ui_browser.py

Skipped without a Chromium binary (infra/install_chromium.sh installs Debian's). Prefect 3.8.8 serves
two UIs: v2 (React) under /v2, the default a user lands on, and v1 (Vue) under /; both are checked.
"""

from __future__ import annotations

import json
import os
import re

import httpx
import pytest

from tests.support.browser import Chromium, find_chromium
from tests.support.jobs import tiny_request

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        find_chromium() is None,
        reason="no chromium on PATH: run infra/install_chromium.sh (Debian: apt-get install chromium)",
    ),
]

DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def finished_job_chart(tiny_model) -> tuple[str, str, str]:
    """Run a one-round IRS job on the tiny model; return (flow_run_id, artifact_id, artifact key)
    of its reward/weight trend chart."""
    from flows.train import train_job
    from irsflow.jobs.job import create_job
    from tasks.artifacts import artifact_key

    store = create_job(tiny_request(tiny_model, n_questions=4, irs_config={"n_iterations": 1}))
    state = train_job(job_id=store.job_id, return_state=True)
    assert state.is_completed(), state
    key = artifact_key(store.job_id, "trends")
    art = httpx.post(
        f"{os.environ['PREFECT_API_URL']}/artifacts/latest/filter", json={"artifacts": {"key": {"any_": [key]}}}
    ).json()
    assert len(art) == 1, art
    return str(state.state_details.flow_run_id), art[0]["latest_id"], key


def rendered_png(b: Chromium, src_prefix: str, timeout: float = 60) -> dict:
    """Wait for an <img> whose src starts with src_prefix to finish loading; return its src and size."""
    js = (
        f"(() => {{ const i = [...document.images].find(i => i.src.startsWith({json.dumps(src_prefix)}));"
        " return i && i.complete && {src: i.src, w: i.naturalWidth, h: i.naturalHeight}; })()"
    )
    return b.wait_for(js, timeout)


def test_ui_shows_deployment_and_chart_artifact(prefect_server, stack, tiny_model):
    ui = prefect_server.removesuffix("/api")
    # The SPA asks /ui-settings where the API is; a wrong answer leaves every page empty.
    assert httpx.get(f"{ui}/ui-settings").json()["api_url"] == prefect_server
    dep_id = httpx.get(f"{prefect_server}/deployments/name/train/manual").json()["id"]
    run_id, art_id, key = finished_job_chart(tiny_model)
    art = httpx.get(f"{prefect_server}/artifacts/{art_id}").json()
    assert art["key"] == key and art["type"] == "markdown"
    uri = DATA_URI.search(art["data"]).group(0)

    with Chromium() as b:
        for base in (f"{ui}/v2", ui):
            b.goto(f"{base}/deployments")
            # the list's first page (10 by name): prefect.yaml's dpo-pairs sorts early whatever else is deployed
            b.wait_for("document.body.innerText.includes('dpo-pairs')")
            b.goto(f"{base}/deployments/deployment/{dep_id}")
            b.wait_for("document.body.innerText.includes('manual') && document.body.innerText.includes('gpu')")
            b.goto(f"{base}/artifacts/artifact/{art_id}")
            img = rendered_png(b, "data:image/png;base64,")
            # Not sanitized away, not truncated, and the PNG decoded (a broken image has naturalWidth 0).
            assert img["src"] == uri, base
            assert (img["w"], img["h"]) == (900, 340), (base, img["w"], img["h"])
        # The finished run lists its artifact (v2; v1 lists it only after a click on the tab).
        b.goto(f"{ui}/v2/runs/flow-run/{run_id}?tab=Artifacts")
        b.wait_for(f"document.body.innerText.includes('Completed') && document.body.innerText.includes('{key}')")
