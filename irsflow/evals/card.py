"""Model card and changelog: a card per promoted version, a changelog entry
per gate run.

    model_card(info)                   # markdown: base model, data, metrics table, gate decision
    write_model_card(path, info)       # that card, written atomically to ``path``
    append_changelog(path, info)       # CHANGELOG.md: one entry per gate run, newest last

A card is never written into a run's artifacts: a finished run stays as it was logged. The gate
keeps it as the registered version's description and a file beside the adapter cache
(``irsflow.release.registry.Registry.write_card``).

``info``: {"version", "base_model", "job_id", "data": {hash name: value}, "metrics": {name:
(champion, challenger)}, "decision": {"promote", "reasons"}, "gate_run", "date"}.
"""

from __future__ import annotations

from pathlib import Path

from irsflow.store import atomic_write_text


def _num(v) -> str:
    return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def model_card(info: dict) -> str:
    d = info["decision"]
    lines = [
        "---",
        "library_name: peft",
        f"base_model: {info['base_model']}",
        "tags: [lora, irsflow]",
        "---",
        "",
        f"# irsflow adapter, version {info['version']}",
        "",
        f"LoRA adapter for `{info['base_model']}` trained by irsflow job `{info['job_id']}` "
        f"(gate run {info.get('gate_run', '?')}, {info.get('date', '')}).",
        "",
        "## Data",
        "",
        *[f"- {k}: `{v}`" for k, v in info.get("data", {}).items()],
        "",
        "## Evaluation (same items for both models)",
        "",
        "| metric | champion | this version |",
        "|---|---|---|",
        *[f"| {k} | {_num(a)} | {_num(b)} |" for k, (a, b) in info.get("metrics", {}).items()],
        "",
        "## Gate decision",
        "",
        f"**{'promoted to champion' if d['promote'] else 'not promoted'}**",
        "",
        *[f"- {r}" for r in d["reasons"]],
        "",
    ]
    return "\n".join(lines)


def write_model_card(path: str | Path, info: dict) -> Path:
    path = Path(path)
    atomic_write_text(path, model_card(info))
    return path


def append_changelog(path: str | Path, info: dict) -> str:
    path = Path(path)
    d = info["decision"]
    metrics = ", ".join(f"{k} {_num(a)} -> {_num(b)}" for k, (a, b) in info.get("metrics", {}).items())
    entry = (
        f"## Gate run {info.get('gate_run', '?')} ({info.get('date', '')}): version {info['version']} "
        f"{'PROMOTED' if d['promote'] else 'kept as challenger'}\n\n"
        f"- job `{info['job_id']}`, base `{info['base_model']}`\n- {metrics}\n"
        + "".join(f"- {r}\n" for r in d["reasons"])
        + "\n"
    )
    old = path.read_text(encoding="utf-8") if path.exists() else "# Changelog\n\n"
    atomic_write_text(path, old + entry)
    return entry
