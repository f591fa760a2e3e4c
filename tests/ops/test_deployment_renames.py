"""Deployments renamed since an earlier `irsflow up`, on the session's real Prefect server: `up` moves
the old `weekly-round/weekly` (with a schedule a user added in the UI) onto `weekly-cycle/weekly`, and
the old training deployment `irs-train/irs-weekly` (with a user's schedule whose parameters hold a
request) onto `train/weekly-job`, prints what moved where, deletes the old ones, and says nothing the
next time; a paused deployment and a schedule switched off by hand stay so; an old deployment with
nowhere to go is left alone; a schedule the user changed replaces prefect.yaml's rather than running
beside it."""

import os
import subprocess
import uuid

import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.exceptions import ObjectNotFound
from prefect.flows import load_flow_from_entrypoint

from deployments.stack import RENAMED_DEPLOYMENTS, migrate_renamed_deployments
from irsflow.config import TrainRequest
from tests.support.local import ROOT, VENV_BIN

WEEKLY = CronSchedule(cron="30 3 * * 1", timezone="Asia/Shanghai")  # what prefect.yaml declares
ADDED_IN_UI = CronSchedule(cron="0 12 * * 3", timezone="UTC")


def deployment(client, full_name: str, schedules=(), paused=False):
    flow, name = full_name.split("/")
    return client.create_deployment(
        flow_id=client.create_flow_from_name(flow),
        name=name,
        paused=paused,
        schedules=[DeploymentScheduleCreate(schedule=s, active=a) for s, a in schedules],
    )


def remove(client, *full_names: str) -> None:
    """Delete the made-up deployments a test created (the session's server is shared with other tests)."""
    for full_name in full_names:
        try:
            client.delete_deployment(client.read_deployment_by_name(full_name).id)
        except ObjectNotFound:
            pass


def crons(d) -> set[tuple[str, str, bool]]:
    return {
        (s.schedule.cron, s.schedule.timezone, s.active) for s in d.schedules if isinstance(s.schedule, CronSchedule)
    }


def test_every_new_name_is_a_deployment_of_prefect_yaml():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployed = set()
    for dep in spec["deployments"]:
        path, fn = dep["entrypoint"].split(":")
        deployed.add(f"{load_flow_from_entrypoint(f'{ROOT / path}:{fn}').name}/{dep['name']}")
    assert set(RENAMED_DEPLOYMENTS.values()) <= deployed
    assert not set(RENAMED_DEPLOYMENTS) & deployed  # an old name deployed again would be moved on every `up`
    # every training deployment, made under the flows' old names by an earlier `up`, has its line
    training = {d for d in deployed if d.startswith(("train/", "train-round/"))}
    old_training = ("irs-train/", "irs-iteration/")
    assert training == {new for old, new in RENAMED_DEPLOYMENTS.items() if old.startswith(old_training)}


@pytest.mark.slow
def test_up_moves_the_old_weekly_deployment_and_its_schedules(prefect_server, tmp_path):
    old_name, new_name = "weekly-round/weekly", RENAMED_DEPLOYMENTS["weekly-round/weekly"]
    old_job, new_job = "irs-train/irs-weekly", RENAMED_DEPLOYMENTS["irs-train/irs-weekly"]
    request = {"stage": "DPO", "n_questions": 8, "irs_config": {"n_iterations": 1}}  # as a user scheduled it
    with get_client(sync_client=True) as client:
        # what an earlier `irsflow up` deployed, plus a schedule the user added in the UI
        deployment(client, old_name, [(WEEKLY, True), (ADDED_IN_UI, True)])
        old = deployment(client, old_job)
        client.create_deployment_schedules(
            old, [DeploymentScheduleCreate(schedule=ADDED_IN_UI, active=True, parameters={"request": request})]
        )
    env = {**os.environ, "IRSFLOW_DATA_DIR": str(tmp_path / "data")}
    try:
        out = subprocess.run(
            [str(VENV_BIN / "irsflow"), "up", "--api-url", prefect_server, "--no-workers"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        moved = [line.strip() for line in out.stdout.splitlines() if line.strip().startswith("deployment ")]
        assert moved == [
            f"deployment {old_name} -> {new_name}: schedules copied: cron '0 12 * * 3' UTC; {old_name} deleted",
            f"deployment {old_job} -> {new_job}: schedules copied: cron '0 12 * * 3' UTC; {old_job} deleted",
        ], out.stdout
        with get_client(sync_client=True) as client:
            new = client.read_deployment_by_name(new_name)
            # prefect.yaml's own schedule once (not a copy of it), and the user's
            assert crons(new) == {("30 3 * * 1", "Asia/Shanghai", True), ("0 12 * * 3", "UTC", True)}
            assert len(new.schedules) == 2 and not new.paused
            # the training job's schedule kept its request, which the renamed flow still accepts
            (copied,) = client.read_deployment_by_name(new_job).schedules
            assert copied.parameters == {"request": request} and copied.active
            assert TrainRequest.model_validate(copied.parameters["request"]).shared.n_iterations == 1
            for gone in (old_name, old_job):
                with pytest.raises(ObjectNotFound):
                    client.read_deployment_by_name(gone)
            # the next `up` finds nothing to move and changes nothing
            assert migrate_renamed_deployments(client) == []
            assert client.read_deployment_by_name(new_name).schedules == new.schedules
    finally:  # the session's other tests expect prefect.yaml's schedules alone
        with get_client(sync_client=True) as client:
            for name in (new_name, new_job):
                try:
                    new = client.read_deployment_by_name(name)
                except ObjectNotFound:
                    continue
                for s in new.schedules:
                    if s.schedule != WEEKLY:
                        client.delete_deployment_schedule(new.id, s.id)


def test_a_paused_deployment_and_a_schedule_switched_off_stay_so(prefect_server):
    tag = uuid.uuid4().hex[:8]
    old_name, new_name, stray = f"old-{tag}/d", f"new-{tag}/d", f"gone-{tag}/d"
    hourly = IntervalSchedule(interval=3600)
    with get_client(sync_client=True) as client:
        deployment(client, old_name, [(WEEKLY, False), (hourly, True)], paused=True)
        deployment(client, new_name, [(WEEKLY, True)])
        deployment(client, stray, [(ADDED_IN_UI, True)])
        table = {old_name: new_name, stray: f"nowhere-{tag}/d"}
        lines = migrate_renamed_deployments(client, table)
        assert lines == [
            f"deployment {old_name} -> {new_name}: schedules copied: every 3600 s; schedules switched "
            f"as before: cron '30 3 * * 1' Asia/Shanghai (inactive); paused, as the old one was; "
            f"{old_name} deleted",
            f"deployment {stray} left as it is: nowhere-{tag}/d is not deployed",
        ]
        new = client.read_deployment_by_name(new_name)
        assert new.paused and crons(new) == {("30 3 * * 1", "Asia/Shanghai", False)} and len(new.schedules) == 2
        assert any(
            s.schedule.interval.total_seconds() == 3600 and s.active
            for s in new.schedules
            if isinstance(s.schedule, IntervalSchedule)
        )
        with pytest.raises(ObjectNotFound):
            client.read_deployment_by_name(old_name)
        assert crons(client.read_deployment_by_name(stray)) == {("0 12 * * 3", "UTC", True)}  # untouched
        assert migrate_renamed_deployments(client, {old_name: new_name}) == []
        remove(client, new_name, stray)


def test_a_schedule_the_user_changed_replaces_prefect_yamls_instead_of_running_beside_it(prefect_server):
    tag = uuid.uuid4().hex[:8]
    old_name, new_name = f"old-{tag}/d", f"new-{tag}/d"
    with get_client(sync_client=True) as client:
        deployment(client, old_name, [(ADDED_IN_UI, True)])  # the user moved the weekly run to Wednesday noon
        deployment(client, new_name, [(WEEKLY, True)])  # prefect.yaml's Monday default
        lines = migrate_renamed_deployments(client, {old_name: new_name})
        assert lines == [
            f"deployment {old_name} -> {new_name}: schedules copied: cron '0 12 * * 3' UTC; switched "
            f"off, as the old one did not run them: cron '30 3 * * 1' Asia/Shanghai; {old_name} deleted"
        ]
        new = client.read_deployment_by_name(new_name)
        assert crons(new) == {("0 12 * * 3", "UTC", True), ("30 3 * * 1", "Asia/Shanghai", False)}
        assert migrate_renamed_deployments(client, {old_name: new_name}) == []
        remove(client, new_name)


def test_a_running_stack_from_an_older_irsflow_is_redeployed_and_migrated_once(prefect_server, monkeypatch):
    """`irsflow up` on a healthy stack reuses it; old names still on its server are deployed anew and moved."""
    import deployments.stack as stack

    old_name = "irs-iteration/irs-iteration"
    with get_client(sync_client=True) as client:
        deployment(client, old_name)
    assert stack.redeploy_if_renamed(prefect_server) == [
        f"deployment {old_name} -> {RENAMED_DEPLOYMENTS[old_name]}: nothing set on it to copy; {old_name} deleted"
    ]

    def no_deploy(env):
        raise AssertionError("nothing was left to migrate, so nothing should have been deployed")

    monkeypatch.setattr(stack, "deploy_all", no_deploy)
    assert stack.redeploy_if_renamed(prefect_server) == []
