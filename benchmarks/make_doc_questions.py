"""Build the learning benchmark's question set from real text: the long descriptions (READMEs) that
the packages installed in this virtualenv ship in their ``*.dist-info/METADATA``.

Each README section with a heading and at least two sentences of prose becomes one question: the
heading itself where it is a question ("Why should I use websockets?"), else "What does <package>'s
documentation say about <heading>?"; its contexts are the section's paragraphs, its reference the
section's first sentences, both verbatim. ``meta.topic`` is the package, so a train/held-out split
by topic shares no package. The output is shipped (``benchmarks/data/doc_questions.jsonl``) so runs
do not depend on what happens to be installed; rebuild it with

    .venv/bin/python benchmarks/make_doc_questions.py --out benchmarks/data/doc_questions.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
from importlib.metadata import distributions
from pathlib import Path

HEADING_MD = re.compile(r"^(#{1,4})\s+(.+?)\s*#*\s*$")
UNDERLINE = re.compile(r"^([=\-~^*+#])\1{2,}\s*$")
SKIP = re.compile(
    r"(?i)^(licen[cs]e|install(ation|ing)?|contribut|credits|authors?|copyright)|chang(es|elog)|"
    r"release|\d+\.\d+"
)
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
NOISE = re.compile(r"(https?://|\[!\[|<img|<a |\|.*\||^\s*[-*+] |^\s*\d+\. |^\s*>|::|`{3}|^\s{4,}\S|\{\{|^\.\. )")


def sections(text: str):
    """(heading, paragraphs) for each section of a Markdown or reStructuredText README."""
    lines = text.splitlines()
    heading, paras, buf, in_code = None, [], [], False

    def flush_para():
        if buf:
            paras.append(" ".join(s.strip() for s in buf))
            buf.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            in_code = not in_code
            flush_para()
            i += 1
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        md = HEADING_MD.match(line) if not in_code else None
        if md or (not in_code and line.strip() and UNDERLINE.match(nxt) and len(nxt.strip()) >= len(line.strip()) - 2):
            flush_para()
            if heading is not None:
                yield heading, paras
            heading, paras = (md.group(2) if md else line.strip()), []
            i += 1 if md else 2
            continue
        if in_code or NOISE.search(line):
            flush_para()
        elif line.strip():
            buf.append(line)
        else:
            flush_para()
        i += 1
    flush_para()
    if heading is not None:
        yield heading, paras


def clean(s: str) -> str:
    s = re.sub(r"`+([^`]+)`+", r"\1", s)
    s = re.sub(r"\*\*?([^*]+)\*\*?", r"\1", s)
    s = re.sub(r":[a-z]+:`([^`]+)`", r"\1", s)
    return re.sub(r"\s+", " ", s).strip()


def prose(p: str) -> bool:
    words = p.split()
    return (
        not p.startswith(("[", "(", "<"))
        and len(words) >= 12
        and sum(w.isalpha() for w in words) / len(words) > 0.7
        and p.rstrip()[-1:] in ".!?:"
    )


def questions_of(name: str, version: str, text: str) -> list[dict]:
    out = []
    for heading, paras in sections(text):
        heading = clean(heading)
        body = [clean(p) for p in paras if prose(clean(p))]
        words = heading.split()
        if not body or not 2 <= len(words) <= 12 or SKIP.search(heading):
            continue
        sentences = SENTENCE.split(" ".join(body))
        if len(sentences) < 2:
            continue
        question = heading if heading.endswith("?") else f'What does {name}\'s documentation say about "{heading}"?'
        if heading.endswith("?") and name.lower() not in heading.lower():
            question = f"{name}: {heading}"
        out.append(
            {
                "question": question,
                "contexts": body[:3],
                "reference": " ".join(sentences[:2]),
                "meta": {"topic": name, "source": f"{name} {version} METADATA", "heading": heading},
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-package", type=int, default=4, help="most questions taken from one package")
    args = ap.parse_args(argv)
    rows, seen = [], set()
    for dist in sorted(distributions(), key=lambda d: d.metadata["Name"].lower()):
        name, version = dist.metadata["Name"], dist.version
        if name.lower() in seen or name.lower() in ("irsflow", "pip", "setuptools"):
            continue
        seen.add(name.lower())
        text = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        qs = questions_of(name, version, str(text))[: args.per_package]
        rows += qs
    for i, r in enumerate(rows):
        r["id"] = f"doc-{i + 1:03d}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "".join(
            json.dumps({"id": r["id"], **{k: v for k, v in r.items() if k != "id"}}, ensure_ascii=False) + "\n"
            for r in rows
        ),
        encoding="utf-8",
    )
    topics = {r["meta"]["topic"] for r in rows}
    print(f"{len(rows)} questions from {len(topics)} packages -> {args.out}")


if __name__ == "__main__":
    main()
