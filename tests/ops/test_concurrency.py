"""Two jobs started at once against one Prefect server: their gpu-tagged task runs never
overlap (timestamps read back from Prefect); cpu-tagged scoring is free to run beside them."""

import asyncio
import os
import subprocess
import sys

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, TaskRunFilter, TaskRunFilterTags

from tests.support.jobs import tiny_request
from tests.support.local import ROOT


async def _task_runs(job_ids):
    async with get_client() as client:
        limit = await client.read_concurrency_limit_by_tag("gpu")
        runs = []
        for job_id in job_ids:
            flows = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=job_id)))
            for tag in ("gpu", "cpu"):
                trs = await client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id={"any_": [f.id for f in flows]}),
                    task_run_filter=TaskRunFilter(tags=TaskRunFilterTags(all_=[tag])),
                )
                runs += [(tag, job_id, t.name, t.start_time, t.end_time, t.state_type.value) for t in trs]
        return limit.concurrency_limit, runs


def test_gpu_tasks_of_two_jobs_never_overlap(prefect_server, tiny_model, tmp_path):
    import json

    env = {**os.environ, "IRSFLOW_DATA_DIR": str(tmp_path / "data")}
    procs, job_ids = [], []
    for i in range(2):
        req = tmp_path / f"req{i}.json"
        req.write_text(json.dumps(tiny_request(tiny_model, seed=10 + i, irs_config={"n_iterations": 2})))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "cli", "train", "--request", str(req)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        job_ids.append(next(ln.split(": ", 1)[1] for ln in out.splitlines() if ln.startswith("job_id: ")))

    limit, runs = asyncio.run(_task_runs(job_ids))
    assert limit == 1
    gpu = sorted((r for r in runs if r[0] == "gpu"), key=lambda r: r[3])
    assert len(gpu) == 2 * 2 * 2, gpu  # 2 jobs x 2 iterations x (generate, sft)
    assert {r[1] for r in gpu} == set(job_ids) and all(r[5] == "COMPLETED" for r in gpu)
    for a, b in zip(gpu, gpu[1:]):
        assert a[4] <= b[3], f"gpu tasks overlap: {a[1]}/{a[2]} ends {a[4]} after {b[1]}/{b[2]} starts {b[3]}"
    # The two jobs really ran at the same time: the spans of their gpu work overlap.
    span = {j: (min(r[3] for r in gpu if r[1] == j), max(r[4] for r in gpu if r[1] == j)) for j in job_ids}
    (a0, a1), (b0, b1) = span.values()
    assert max(a0, b0) < min(a1, b1), span
    assert sum(r[0] == "cpu" for r in runs) == 4
