"""`irsflow feedback ...`: run the feedback ETL here, print Label Studio's labeling config.

    irsflow feedback etl [--settings settings.json] [--label-studio-export export.json]
    irsflow feedback label-studio-config > config.xml
"""
from __future__ import annotations

import json


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


def add_feedback_parser(sub) -> None:
    f = sub.add_parser("feedback", help="Langfuse feedback ETL and Label Studio corrections")
    fs = f.add_subparsers(dest="feedback_command", required=True)
    e = fs.add_parser("etl", help="extract new thumbs from Langfuse into training data (through Prefect)")
    e.add_argument("--settings", default=None, help="FeedbackSettings as JSON (no keys: they come from the env)")
    e.add_argument("--label-studio-export", default=None, help="a Label Studio JSON export with corrections")
    e.set_defaults(fn=cmd_etl)
    fs.add_parser("label-studio-config", help="the labeling config for the correction tasks").set_defaults(
        fn=cmd_ls_config)
