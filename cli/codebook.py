"""``irsflow codebook``: review and edit the rules that reviewed corrections put into prompts.

    irsflow codebook list [--all] [--version N] [--json]     # id, enabled, version, text, scope
    irsflow codebook add --text "..." --keyword burn --example "How do I treat a burn?" [--source S]
    irsflow codebook edit RULE_ID [--text ...] [--keyword ...] [--example ...]
    irsflow codebook disable RULE_ID [--note "why"]   /   enable RULE_ID [--note ...]
    irsflow codebook history RULE_ID
    irsflow codebook export --format jsonl|json --out FILE [--version N]
    irsflow codebook import FILE

Every subcommand takes ``--path FILE`` (default ``<data dir>/codebook.sqlite``). Without the console
script: ``python -m cli codebook list``. Exit codes: 0 ok, 2 bad input.
"""

from __future__ import annotations

import argparse
import json

from irsflow.codebook.store import Codebook, Rule


def _open(args, create: bool = False) -> Codebook:
    # reads never create a codebook file as a side effect: a mistyped --path is reported instead
    return Codebook(args.path, create=create)


def _line(r: Rule) -> str:
    return f"{r.id}  {'on ' if r.enabled else 'off'}  v{r.version:<4} {r.text}  [{r.scope()}]"


def cmd_list(args) -> int:
    cb = _open(args)
    snap = cb.snapshot(args.version)
    rules = snap.rules if args.all else snap.enabled
    if args.json:
        print(
            json.dumps(
                {"version": snap.version, "content_hash": snap.content_hash(), "rules": [r.to_dict() for r in rules]},
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    print(
        f"codebook {cb.path}  version {snap.version}  hash {snap.content_hash()[:12]}  "
        f"{len(snap.enabled)} enabled / {len(snap.rules)} rules"
    )
    for r in rules:
        print(_line(r))
    return 0


def cmd_add(args) -> int:
    r = _open(args, create=True).add(
        args.text,
        args.keyword,
        args.example,
        source=args.source,
        author=args.author,
        enabled=not args.disabled,
        note=args.note,
    )
    print(_line(r))
    return 0


def cmd_edit(args) -> int:
    r = _open(args).edit(
        args.rule_id, text=args.text, keywords=args.keyword, examples=args.example, note=args.note, author=args.author
    )
    print(_line(r))
    return 0


def cmd_enable(args) -> int:
    r = _open(args).set_enabled(args.rule_id, args.enable, note=args.note, author=args.author)
    print(_line(r))
    return 0


def cmd_history(args) -> int:
    for r in _open(args).history(args.rule_id):
        who = f" by {r.changed_by}" if r.changed_by else ""
        note = f"  note: {r.note}" if r.note else ""
        print(
            f"v{r.version:<4} {r.action:<7} {r.changed_at}{who}  {'on ' if r.enabled else 'off'}  {r.text}  "
            f"[{r.scope()}]{note}"
        )
    return 0


def cmd_export(args) -> int:
    cb = _open(args)
    out = cb.export(args.out, fmt=args.format, version=args.version)
    print(f"wrote {out} (version {args.version if args.version is not None else cb.version})")
    return 0


def cmd_import(args) -> int:
    cb = _open(args, create=True)
    changed = cb.import_(args.file, author=args.author)
    print(f"imported {len(changed)} change(s); codebook version {cb.version}")
    for r in changed:
        print(_line(r))
    return 0


def add_codebook_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``codebook`` and its subcommands on an ``add_subparsers()`` object."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--path", default=None, help="codebook file (default <data dir>/codebook.sqlite)")
    common.add_argument("--author", default=None, help="who makes this change (recorded in the history)")
    p = subparsers.add_parser("codebook", help="rules from reviewed corrections, injected into prompts")
    sub = p.add_subparsers(dest="codebook_command", required=True)

    s = sub.add_parser("list", parents=[common], help="enabled rules (--all: disabled too)")
    s.add_argument("--all", action="store_true")
    s.add_argument("--version", type=int, default=None, help="as of this codebook version")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("add", parents=[common], help="add a rule (enabled unless --disabled)")
    s.add_argument("--text", required=True, help="the instruction, one or two sentences")
    s.add_argument("--keyword", action="append", default=[], help="scope keyword (repeatable)")
    s.add_argument("--example", action="append", default=[], help="scope example question (repeatable)")
    s.add_argument("--source", default="cli", help="provenance, e.g. label-studio or a trace id")
    s.add_argument("--note", default=None)
    s.add_argument("--disabled", action="store_true", help="add as a draft awaiting review")
    s.set_defaults(fn=cmd_add)

    s = sub.add_parser("edit", parents=[common], help="change a rule's text or scope (new version)")
    s.add_argument("rule_id")
    s.add_argument("--text", default=None)
    s.add_argument("--keyword", action="append", default=None, help="replaces all keywords (repeatable)")
    s.add_argument("--example", action="append", default=None, help="replaces all examples (repeatable)")
    s.add_argument("--note", default=None)
    s.set_defaults(fn=cmd_edit)

    for name in ("enable", "disable"):
        s = sub.add_parser(name, parents=[common], help=f"{name} a rule (new version)")
        s.add_argument("rule_id")
        s.add_argument("--note", default=None, help="review note")
        s.set_defaults(fn=cmd_enable, enable=name == "enable")

    s = sub.add_parser("history", parents=[common], help="every version of one rule")
    s.add_argument("rule_id")
    s.set_defaults(fn=cmd_history)

    s = sub.add_parser("export", parents=[common], help="write the rules to a file")
    s.add_argument("--format", choices=["jsonl", "json"], default="jsonl")
    s.add_argument("--out", required=True)
    s.add_argument("--version", type=int, default=None)
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("import", parents=[common], help="merge an export (new versions for changed rules)")
    s.add_argument("file")
    s.set_defaults(fn=cmd_import)
    return p
