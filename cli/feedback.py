"""`irsflow feedback ...`: run the feedback ETL here; push correction tasks to Label Studio and pull
its export back; print Label Studio's labeling config.

    irsflow feedback etl [--settings settings.json] [--label-studio-export export.json]
    irsflow feedback label-studio-config > config.xml
    irsflow feedback label-studio push --project ID [--url URL] [--tasks FILE | --run RUN_ID]
    irsflow feedback label-studio pull --project ID [--url URL] [--out export.json]

The Label Studio key comes from $LABEL_STUDIO_API_KEY, else the Prefect Secret block
label-studio-api-key; the URL from --url or $LABEL_STUDIO_URL. `pull` saves the project's JSON
export (every task, cumulative); the ETL takes each correction in it once (an edited one again).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from irsflow.errors import InputError


def cmd_etl(args) -> int:
    from irsflow.feedback.etl import FeedbackSettings

    settings = FeedbackSettings.model_validate_json(open(args.settings).read()) if args.settings else FeedbackSettings()
    from flows.feedback_etl import feedback_etl

    print(json.dumps(feedback_etl(settings=settings, label_studio_export=args.label_studio_export), indent=2))
    return 0


def cmd_ls_config(args) -> int:
    from irsflow.feedback.label_studio import LABEL_CONFIG

    print(LABEL_CONFIG, end="")
    return 0


def _key() -> str | None:
    from irsflow.feedback.label_studio_api import KEY_ENV

    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    if not os.environ.get("PREFECT_API_URL"):  # no Prefect server to hold a Secret block: say so at once
        raise InputError(
            f"{KEY_ENV}: not set (and no Prefect server, PREFECT_API_URL or `irsflow up`, "
            "whose Secret block label-studio-api-key could hold it)"
        )
    from tasks.feedback import label_studio_key  # the Secret block, through Prefect

    return label_studio_key()


def _tasks_file(args) -> Path:
    from irsflow.feedback.etl import feedback_dir

    if args.tasks:
        return Path(args.tasks)
    if args.run:
        return feedback_dir() / args.run / "label_studio_tasks.json"
    runs = sorted((p.parent for p in feedback_dir().glob("*/manifest.json")), key=lambda d: d.stat().st_mtime)
    with_tasks = [
        d
        for d in runs
        if (d / "label_studio_tasks.json").exists()
        and json.loads((d / "manifest.json").read_text())["files"]["label_studio_tasks.json"]["rows"]
    ]
    if not with_tasks:
        raise InputError(f"--run: no feedback run under {feedback_dir()} has Label Studio tasks; give --tasks FILE")
    return with_tasks[-1] / "label_studio_tasks.json"


def _unreachable(fn):
    """A server that does not answer is said in one line (exit 1), not a traceback."""

    def run(args) -> int:
        try:
            return fn(args)
        except ConnectionError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1

    return run


@_unreachable
def cmd_ls_push(args) -> int:
    from irsflow.feedback.label_studio_api import push_tasks

    path = _tasks_file(args)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"--tasks: {path}: not a readable JSON list of tasks ({err})") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and isinstance(t.get("data"), dict) for t in tasks):
        raise InputError(f"--tasks: {path}: expected a JSON list of tasks with 'data' (label_studio_tasks.json)")
    got = push_tasks(args.url or os.environ.get("LABEL_STUDIO_URL"), _key(), args.project, tasks)
    print(json.dumps({**got, "tasks_file": str(path)}, indent=2))  # tasks already in the project: not pushed again
    return 0


@_unreachable
def cmd_ls_pull(args) -> int:
    from irsflow.feedback.corrections import exports_dir
    from irsflow.feedback.label_studio_api import pull_export
    from irsflow.store import new_job_id

    out = Path(args.out) if args.out else exports_dir() / f"project-{args.project}-{new_job_id()}.json"
    got = pull_export(args.url or os.environ.get("LABEL_STUDIO_URL"), _key(), args.project, out)
    print(
        json.dumps(
            {"project": args.project, **got, "next": f"irsflow feedback etl --label-studio-export {got['path']}"},
            indent=2,
        )
    )
    return 0


def add_feedback_parser(sub) -> None:
    f = sub.add_parser("feedback", help="Langfuse feedback ETL and Label Studio corrections")
    fs = f.add_subparsers(dest="feedback_command", required=True)
    e = fs.add_parser("etl", help="extract new thumbs from Langfuse into training data (through Prefect)")
    e.add_argument("--settings", default=None, help="FeedbackSettings as JSON (no keys: they come from the env)")
    e.add_argument("--label-studio-export", default=None, help="a Label Studio JSON export with corrections")
    e.set_defaults(fn=cmd_etl)
    fs.add_parser("label-studio-config", help="the labeling config for the correction tasks").set_defaults(
        fn=cmd_ls_config
    )
    ls = fs.add_parser("label-studio", help="push correction tasks to a Label Studio project, pull its export")
    lss = ls.add_subparsers(dest="label_studio_command", required=True)
    for name, fn, text in (
        ("push", cmd_ls_push, "import the thumbs-down tasks of a feedback run into the project"),
        ("pull", cmd_ls_pull, "save the project's JSON export (then: feedback etl --label-studio-export)"),
    ):
        c = lss.add_parser(name, help=text)
        c.add_argument("--project", type=int, required=True, help="the Label Studio project id")
        c.add_argument("--url", default=None, help="the server (default $LABEL_STUDIO_URL)")
        if name == "push":
            c.add_argument(
                "--tasks",
                default=None,
                help="a tasks file (default: the newest feedback run's label_studio_tasks.json)",
            )
            c.add_argument("--run", default=None, help="take label_studio_tasks.json of this feedback run")
        else:
            c.add_argument("--out", default=None, help="where to save it (default <data dir>/label-studio/exports/)")
        c.set_defaults(fn=fn)
