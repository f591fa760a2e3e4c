"""The codebook: versioned SQLite store, retrieval (real offline MiniLM and the heuristic fallback),
injection into generation on the tiny model, and the CLI end to end.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/unit/codebook/test_codebook.py
"""

import json
import sqlite3
import subprocess
import sys
import time

import pytest

from irsflow.codebook.drafts import rule_from_correction
from irsflow.codebook.retrieval import RULES_HEADER, CodebookRetriever, inject
from irsflow.codebook.store import Codebook, default_path
from irsflow.config import TrainRequest
from irsflow.errors import InputError
from irsflow.jobs.job import create_job
from irsflow.jobs.resume import GENERATING, phase_key
from irsflow.loop.phases import run_generate
from irsflow.rewards.settings import ScoringConfig
from irsflow.rewards.similarity import load_similarity
from irsflow.store import read_jsonl
from tests.support.jobs import tiny_request
from tests.support.local import ROOT

BURN = "Cool a minor burn under running water for 20 minutes; never use ice or butter."
BOIL = "Give temperatures in both Celsius and Fahrenheit."
SKY = "Mention Rayleigh scattering when explaining the colour of the sky."


@pytest.fixture()
def cb(tmp_path):
    return Codebook(tmp_path / "cb.sqlite")


def three_rules(cb):
    return (
        cb.add(BURN, keywords=["burn"], examples=["What is the right first aid for a small burn?"]),
        cb.add(BOIL, keywords=["temperature"], examples=["At what temperature does water boil?"]),
        cb.add(SKY, examples=["Why is the sky blue?"]),
    )


def test_round_trip_normalises_and_rejects_bad_input(cb):
    r = cb.add(
        "  Say  so   when unsure. ",
        keywords=["Refund", "refund", " money back "],
        examples=["Can I get my money back?"],
        source="label-studio",
        author="ana",
        provenance={"trace_ids": ["t1"]},
    )
    got = cb.get(r.id)
    assert (got.text, got.keywords, got.examples) == (
        "Say so when unsure.",
        ("refund", "money back"),
        ("Can I get my money back?",),
    )
    assert (got.source, got.author, got.provenance, got.enabled, got.version) == (
        "label-studio",
        "ana",
        {"trace_ids": ["t1"]},
        True,
        1,
    )
    with pytest.raises(InputError, match="text: must not be empty"):
        cb.add("   ", keywords=["x"])
    with pytest.raises(InputError, match="scope: a rule needs at least one keyword or example"):
        cb.add("A rule with no scope.", keywords=[" "])
    with pytest.raises(InputError, match="at most 500"):
        cb.add("x" * 501, keywords=["x"])
    with pytest.raises(InputError, match="no rule 'r-missing'"):
        cb.set_enabled("r-missing", False)
    with pytest.raises(InputError, match="no rule 'r-missing'"):
        cb.edit("r-missing", text="new")
    with pytest.raises(InputError, match="scope"):
        cb.edit(r.id, keywords=[], examples=[])
    assert cb.version == 1, "rejected changes write no version"


def test_versions_snapshots_and_content_hash(cb):
    burn, boil, sky = three_rules(cb)
    h3 = cb.content_hash()
    cb.set_enabled(burn.id, False, note="too broad")
    assert cb.version == 4 and cb.content_hash() != h3
    assert [r.id for r in cb.rules()] == [boil.id, sky.id]
    old = cb.snapshot(3)
    assert [r.id for r in old.enabled] == [burn.id, boil.id, sky.id] and old.content_hash() == h3
    assert [r.id for r in cb.rules(version=1)] == [burn.id]
    cb.set_enabled(burn.id, True)
    assert cb.content_hash() == h3, "re-enabling restores the exact content"
    assert cb.set_enabled(burn.id, True).version == 5 and cb.version == 5, "a no-op writes no version"
    cb.edit(sky.id, text="Explain sky colour by Rayleigh scattering.", author="bo")
    assert cb.content_hash() != h3 and cb.get(sky.id, version=5).text == SKY
    hist = cb.history(burn.id)
    assert [(h.action, h.enabled, h.note) for h in hist] == [
        ("add", True, None),
        ("disable", False, "too broad"),
        ("enable", True, "too broad"),
    ]
    assert [h.version for h in cb.history(sky.id)] == [3, 6] and cb.history(sky.id)[1].changed_by == "bo"
    with pytest.raises(InputError, match=r"codebook.version: 99 is not in 0..6"):
        cb.snapshot(99)
    with sqlite3.connect(cb.path) as con, pytest.raises(sqlite3.IntegrityError, match="immutable"):
        con.execute("UPDATE rule_versions SET text = 'tampered'")


def test_persists_across_reopen_at_the_default_path(data_dir):
    first = Codebook()
    assert first.path == data_dir / "codebook.sqlite" == default_path()
    burn = first.add(BURN, keywords=["burn"])
    first.set_enabled(burn.id, False)
    again = Codebook()
    assert (again.version, again.content_hash(), again.get(burn.id).enabled) == (2, first.content_hash(), False)
    assert again.history(burn.id)[0].enabled is True
    with pytest.raises(InputError, match="no codebook at"):
        Codebook(data_dir / "other.sqlite", create=False)
    (data_dir / "notes.txt").write_text("not a database\n")
    with pytest.raises(InputError, match="is not a codebook"):
        Codebook(data_dir / "notes.txt")


WRITER = """
import sys, time
from irsflow.codebook.store import Codebook
path, tag, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
while time.time() < start:
    time.sleep(0.002)
cb = Codebook(path)  # both processes may create the file and schema at the same moment
for i in range(40):
    cb.add(f"{tag} rule {i}", keywords=[f"{tag}{i}"])
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = tmp_path / "shared.sqlite"
    start = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), tag, str(start)], cwd=ROOT, stderr=subprocess.PIPE, text=True
        )
        for tag in ("a", "b")
    ]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    cb = Codebook(path)
    rules = cb.rules()
    assert len(rules) == 80 and len({r.id for r in rules}) == 80
    assert {r.text for r in rules} == {f"{t} rule {i}" for t in "ab" for i in range(40)}
    assert sorted(r.version for r in rules) == list(range(1, 81)) and cb.version == 80


def test_export_import_round_trip(cb, tmp_path):
    burn, boil, _ = three_rules(cb)
    cb.set_enabled(boil.id, False)
    for fmt in ("jsonl", "json"):
        out = cb.export(tmp_path / f"rules.{fmt}", fmt=fmt)
        other = Codebook(tmp_path / f"other-{fmt}.sqlite")
        assert len(other.import_(out, author="ops")) == 3
        assert other.content_hash() == cb.content_hash() and not other.get(boil.id).enabled
        assert other.import_(out) == [], "importing the same file twice changes nothing"
    doc = json.loads((tmp_path / "rules.json").read_text())
    assert (doc["version"], doc["content_hash"]) == (cb.version, cb.content_hash())
    lines = (tmp_path / "rules.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    row["text"] = "Cool burns with running water."
    (tmp_path / "edited.jsonl").write_text(json.dumps(row) + "\n")
    changed = other.import_(tmp_path / "edited.jsonl")
    assert [(r.id, r.action, r.text) for r in changed] == [(burn.id, "import", "Cool burns with running water.")]
    (tmp_path / "bad.jsonl").write_text(lines[1] + "\n{not json\n")
    with pytest.raises(InputError, match=r"bad.jsonl:2: not valid JSON"):
        other.import_(tmp_path / "bad.jsonl")
    with pytest.raises(InputError, match="format: 'csv'"):
        cb.export(tmp_path / "x.csv", fmt="csv")


def test_rule_from_correction_is_a_disabled_draft(cb):
    q = "What should I do right after burning my hand on a hot pan?"
    draft = rule_from_correction(
        q,
        "Put ice on it.",
        "Cool it under running water for 20 minutes. Do not use ice.",
        provenance={"trace_id": "tr-9"},
        author="reviewer",
    )
    assert draft.examples == (q,) and {"burning", "hand", "hot", "pan"} <= set(draft.keywords)
    assert "Cool it under running water for 20 minutes." in draft.text and "Do not use ice" not in draft.text
    rule = cb.add_draft(draft)
    assert not rule.enabled and cb.rules() == [] and rule.provenance["trace_id"] == "tr-9"
    assert rule.provenance["original_answer"] == "Put ice on it." and rule.source == "label-studio"
    with pytest.raises(InputError, match="same as the original"):
        rule_from_correction(q, "Cool it.", " Cool  it.")


def test_minilm_picks_the_rule_for_a_paraphrase_and_none_for_an_unrelated_question(cb):
    """The acceptance test: a paraphrase gets its rule, an unrelated question gets none."""
    burn, boil, _ = three_rules(cb)
    sim = load_similarity(ScoringConfig())
    assert sim.kind == "embedding"
    retriever = CodebookRetriever(cb.rules(), sim, top_k=3, threshold=0.5)
    para, unrelated, boiling = retriever.retrieve(
        [
            "I touched a hot pan and burned my finger, how should I treat it?",
            "Who wrote the novel Pride and Prejudice?",
            "What is the boiling point of water at sea level?",
        ]
    )
    assert [m.rule.id for m in para] == [burn.id] and para[0].score >= 0.5
    assert unrelated == []
    assert [m.rule.id for m in boiling] == [boil.id]
    assert sim.encoded == 3 + 3, "rule examples encoded once, then only the questions"
    cb.set_enabled(burn.id, False)
    assert CodebookRetriever(cb.rules(), sim).retrieve(["How do I care for a small kitchen burn?"]) == [[]]


def test_heuristic_fallback_still_matches_on_keywords(cb):
    refund = cb.add(
        "Refunds take 5-7 business days; never promise same-day refunds.", keywords=["refund", "money back"]
    )
    burn, _, _ = three_rules(cb)
    sim = load_similarity(ScoringConfig(backend="heuristic"))
    assert sim.kind == "heuristic"
    found = CodebookRetriever(cb.rules(), sim, threshold=0.5).retrieve(
        [
            "When will I see my refunds?",
            "Can I get my money back today?",
            "What is the first aid for a small burn?",
            "Who wrote Pride and Prejudice?",
            "Is there a moneyback guarantee?",
        ]
    )
    assert [[m.rule.id for m in ms] for ms in found] == [[refund.id], [refund.id], [burn.id], [], []]


def test_inject_appends_a_delimited_block(cb):
    burn, boil, _ = three_rules(cb)
    assert inject("Be brief.", []) == "Be brief."
    text = inject("Be brief.", [burn, boil])
    assert text.startswith("Be brief.\n\n" + RULES_HEADER) and f"- {BURN}\n- {BOIL}\n(End of rules.)" in text


def test_generation_prompts_carry_matching_rules_and_rows_record_them(tiny_model, data_dir):
    from irsflow.dataset import load_questions

    qs = load_questions("builtin:demo", 3)
    cb = Codebook()
    sky = cb.add(SKY, examples=["What makes the sky appear blue during the day?"])
    draft = cb.add_draft(rule_from_correction(qs[1].question, "It is lighter.", "Ice is less dense than water."))
    req = TrainRequest.model_validate(
        tiny_request(
            tiny_model,
            n_questions=3,
            codebook={"enabled": True},
            irs_config={"n_candidates": 2, "max_new_tokens": 6, "n_iterations": 1},
        )
    )
    store = create_job(req)
    key = phase_key(store, req, 1, GENERATING)
    run_generate(store, req, 1, None)
    rows = read_jsonl(store.phase_dir(1) / "candidates.jsonl")
    assert [r["codebook"]["rule_ids"] for r in rows] == [[sky.id], [], []], "draft rules are never injected"
    assert rows[0]["codebook"]["version"] == 2 and rows[0]["codebook"]["content_hash"] == cb.content_hash()
    system = rows[0]["prompt"][0]["content"]
    assert system.index(RULES_HEADER) < system.index(SKY) < system.index("Context:")
    assert all(RULES_HEADER not in r["prompt"][0]["content"] for r in rows[1:])

    # the cache key follows the enabled rules' content: enabling the draft changes it, disabling restores it
    cb.set_enabled(draft.id, True)
    assert phase_key(store, req, 1, GENERATING) != key
    cb.set_enabled(draft.id, False)
    assert phase_key(store, req, 1, GENERATING) == key
    off = req.model_copy(update={"codebook": req.codebook.model_copy(update={"enabled": False})})
    assert phase_key(store, off, 1, GENERATING) != key
    pinned = req.model_copy(update={"codebook": req.codebook.model_copy(update={"version": 1})})
    cb.add(BURN, examples=[qs[0].question])  # added after version 1: a pinned job must not see it
    assert phase_key(store, pinned, 1, GENERATING) == key != phase_key(store, req, 1, GENERATING)


def cli(*args, ok=True):
    p = subprocess.run(
        [sys.executable, "-m", "cli", "codebook", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert (p.returncode == 0) == ok, p.stdout + p.stderr
    return p


def test_cli_end_to_end(tmp_path):
    path = str(tmp_path / "cli.sqlite")
    cli("list", "--path", path, ok=False)
    out = cli(
        "add",
        "--path",
        path,
        "--text",
        BURN,
        "--keyword",
        "burn",
        "--keyword",
        "scald",
        "--example",
        "How do I treat a small burn?",
        "--source",
        "trace:t42",
    ).stdout
    burn_id = out.split()[0]
    boil_id = cli("add", "--path", path, "--text", BOIL, "--keyword", "temperature").stdout.split()[0]
    listing = cli("list", "--path", path).stdout
    assert "version 2" in listing and f"{burn_id}  on" in listing and "kw=burn,scald" in listing and BOIL in listing
    cli("disable", boil_id, "--path", path, "--note", "unit rule belongs in the system prompt", "--author", "ana")
    assert boil_id not in cli("list", "--path", path).stdout
    assert f"{boil_id}  off" in cli("list", "--path", path, "--all").stdout
    hist = cli("history", boil_id, "--path", path).stdout.splitlines()
    assert hist[0].startswith("v2") and "add" in hist[0] and "disable" in hist[1] and "by ana" in hist[1]
    listed = json.loads(cli("list", "--path", path, "--json").stdout)
    assert [r["id"] for r in listed["rules"]] == [burn_id] and listed["rules"][0]["source"] == "trace:t42"
    cli("export", "--path", path, "--format", "json", "--out", str(tmp_path / "cb.json"))
    exported = json.loads((tmp_path / "cb.json").read_text())
    assert exported["content_hash"] == listed["content_hash"] and len(exported["rules"]) == 2
    other = str(tmp_path / "other.sqlite")
    assert "imported 2 change(s)" in cli("import", str(tmp_path / "cb.json"), "--path", other).stdout
    assert json.loads(cli("list", "--path", other, "--json").stdout)["content_hash"] == listed["content_hash"]
    bad = cli("add", "--path", path, "--text", "No scope at all.", ok=False)
    assert bad.returncode == 2 and "scope" in bad.stderr
    assert "no rule 'r-nope'" in cli("enable", "r-nope", "--path", path, ok=False).stderr
