"""Test helper: hold the ``gpu`` slot the way irsflow's tasks do, then sleep.

    python -m tests.support.helpers.hold_gpu_slot MARKER SECONDS

A top-level flow runs a child flow whose gpu-tagged task (the shape of train -> train-round
-> generate/sft) writes MARKER as JSON {task_run_id, flow_run_id, root_flow_run_id, t} once it holds
the slot, then sleeps SECONDS. Tests kill it with SIGKILL to leave the slot behind.
"""

import json
import os
import sys
import time

from prefect import flow, task
from prefect.runtime import flow_run, task_run

from tasks.limits import GPU_TAG


@task(tags=[GPU_TAG])
def hold(marker: str, seconds: float) -> None:
    info = {
        "task_run_id": task_run.get_id(),
        "flow_run_id": flow_run.get_id(),
        "root_flow_run_id": flow_run.get_root_flow_run_id(),
        "t": time.time(),
    }
    with open(marker + ".tmp", "w") as f:
        json.dump(info, f)
    os.replace(marker + ".tmp", marker)
    time.sleep(seconds)


@flow(name="hold-gpu-child")
def child(marker: str, seconds: float) -> None:
    hold(marker, seconds)


@flow(name="hold-gpu")
def parent(marker: str, seconds: float) -> None:
    child(marker, seconds)


if __name__ == "__main__":
    parent(sys.argv[1], float(sys.argv[2]))
