"""A real browser sees it: headless Chromium opens the Prefect UI of the test server and finds the
deployment and a finished run's PNG chart artifact, rendered (an <img> whose PNG decoded).

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/test_ui_browser.py

Skipped without a Chromium binary (infra/install_chromium.sh installs Debian's). Prefect 3.8.8 serves
two UIs: v2 (React) under /v2, the default a user lands on, and v1 (Vue) under /; both are checked.
"""
from __future__ import annotations

import base64
import io
import json
import re

import httpx
import pytest
from prefect import Flow, flow
from prefect.artifacts import create_markdown_artifact

from tests.browser import Chromium, find_chromium
from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    find_chromium() is None, reason="no chromium on PATH: run infra/install_chromium.sh (Debian: apt-get install chromium)")]

ARTIFACT_KEY = "irs-test-trends"
DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def chart_markdown(series: dict[str, list[float]]) -> str:
    """Markdown with a matplotlib PNG line chart inlined as a data URI (the form irsflow.charts uses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
    for name, ys in series.items():
        ax.plot(range(1, len(ys) + 1), ys, marker="o", label=name)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return f"### trends\n\n![trends](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})\n"


@flow(name="ui-chart-probe")
def chart_flow(key: str) -> str:
    return str(create_markdown_artifact(key=key, markdown=chart_markdown({"avg_reward": [0.2, 0.45, 0.5]}),
                                        description="test chart"))


def publish_chart() -> tuple[str, str]:
    """Finish a flow run that published a PNG chart artifact; return (flow_run_id, artifact_id).
    To check the real job instead: run irs_train on the tiny model and return its trends artifact."""
    state = chart_flow(ARTIFACT_KEY, return_state=True)
    assert state.is_completed(), state
    return str(state.state_details.flow_run_id), state.result()


def deploy_irs_manual(api: str) -> str:
    """Register flows/irs.py:irs_train as `irs-manual` on a process pool (no worker: only listed)."""
    r = httpx.post(f"{api}/work_pools/", json={"name": "ui-test", "type": "process"})
    assert r.status_code in (201, 409), r.text  # 409: made earlier in this session
    return str(Flow.from_source(source=str(ROOT), entrypoint="flows/irs.py:irs_train").deploy(
        name="irs-manual", work_pool_name="ui-test", build=False, push=False, print_next_steps=False))


def rendered_png(b: Chromium, src_prefix: str, timeout: float = 60) -> dict:
    """Wait for an <img> whose src starts with src_prefix to finish loading; return its src and size."""
    js = (f"(() => {{ const i = [...document.images].find(i => i.src.startsWith({json.dumps(src_prefix)}));"
          " return i && i.complete && {src: i.src, w: i.naturalWidth, h: i.naturalHeight}; })()")
    return b.wait_for(js, timeout)


def test_ui_shows_deployment_and_chart_artifact(prefect_server):
    ui = prefect_server.removesuffix("/api")
    # The SPA asks /ui-settings where the API is; a wrong answer leaves every page empty.
    assert httpx.get(f"{ui}/ui-settings").json()["api_url"] == prefect_server
    dep_id = deploy_irs_manual(prefect_server)
    run_id, art_id = publish_chart()
    art = httpx.get(f"{prefect_server}/artifacts/{art_id}").json()
    assert art["key"] == ARTIFACT_KEY and art["flow_run_id"] == run_id
    uri = DATA_URI.search(art["data"]).group(0)

    with Chromium() as b:
        for base in (f"{ui}/v2", ui):
            b.goto(f"{base}/deployments")
            b.wait_for("document.body.innerText.includes('irs-manual')")
            b.goto(f"{base}/deployments/deployment/{dep_id}")
            b.wait_for("document.body.innerText.includes('irs-manual') && document.body.innerText.includes('ui-test')")
            b.goto(f"{base}/artifacts/artifact/{art_id}")
            img = rendered_png(b, "data:image/png;base64,")
            # Not sanitized away, not truncated, and the PNG decoded (a broken image has naturalWidth 0).
            assert img["src"] == uri, base
            assert (img["w"], img["h"]) == (400, 240), (base, img["w"], img["h"])
        # The finished run lists its artifact (v2; v1 lists it only after a click on the tab).
        b.goto(f"{ui}/v2/runs/flow-run/{run_id}?tab=Artifacts")
        b.wait_for(f"document.body.innerText.includes('Completed') && document.body.innerText.includes('{ARTIFACT_KEY}')")
