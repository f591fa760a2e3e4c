"""The weekly cycle's library pieces: what counts as new, the prompt set's composition and
high-risk share, strict settings, the codebook switch, the eval prompts' codebook rules, the report."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from irsflow.codebook.settings import CodebookConfig
from irsflow.codebook.store import Codebook
from irsflow.dataset import load_questions
from irsflow.errors import InputError
from irsflow.evals.suites import EvalSuites, _codebook_extra
from irsflow.release import weekly
from irsflow.store import write_jsonl


def chat(q, a):
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": q},
        {"role": "assistant", "content": a},
    ]


@pytest.fixture()
def etl_dir(data_dir):
    d = data_dir / "feedback" / "r1"
    write_jsonl(
        d / "annotation_queue.jsonl",
        [
            {"messages": chat("Why is the sky blue?", "It is painted."), "trace_id": "t1"},
            {"messages": chat("My child swallowed bleach, what now?", "Wait and see."), "trace_id": "t2"},
        ],
    )
    write_jsonl(d / "golden.messages.jsonl", [{"messages": chat("why is the sky  blue?", "Rayleigh scattering.")}])
    write_jsonl(
        d / "sft.messages.jsonl", [{"messages": chat("What is photosynthesis?", "Light to sugar."), "trace_id": "t3"}]
    )
    (d / "manifest.json").write_text(json.dumps({"counts": {"records": 3}}))
    return d


def test_new_items_counts_dedups_and_keeps_corrections_as_references(etl_dir):
    items = weekly.new_items(etl_dir)
    assert items["counts"] == {"thumbs_up": 1, "thumbs_down": 2, "corrections": 1}
    qs = {q["question"]: q for q in items["questions"]}
    assert set(qs) == {"Why is the sky blue?", "My child swallowed bleach, what now?", "What is photosynthesis?"}
    assert qs["Why is the sky blue?"]["reference"] == "Rayleigh scattering."  # the correction, not the bad answer
    assert "reference" not in qs["My child swallowed bleach, what now?"]
    assert [s["id"] for s in items["samples"]] == ["thumbs_down:t1", "thumbs_down:t2", "thumbs_up:t3"]
    assert weekly.new_items(None)["questions"] == [] and weekly.new_items(etl_dir.parent / "nope")["samples"] == []


def test_prompt_set_takes_every_new_question_then_the_high_risk_share_then_anchors(etl_dir):
    items = weekly.new_items(etl_dir)
    rows = weekly.compose_prompt_set(items, weekly.PromptSetSettings(n=10, min_high_risk_share=0.4, seed=1))
    assert len(rows) == 10 and len({r["question"] for r in rows}) == 10
    src = [r["meta"]["source"] for r in rows]
    assert src.count("thumbs_down") == 2 and src.count("thumbs_up") == 1
    assert sum(r["meta"]["high_risk"] for r in rows) >= 4 and src.count("anchor") >= 1
    assert weekly.compose_prompt_set(items, weekly.PromptSetSettings(n=10, seed=1)) == rows  # seeded
    assert all(set(r) <= {"id", "question", "contexts", "reference", "meta"} for r in rows)
    with pytest.raises(InputError, match="prompts.min_high_risk_share"):
        weekly.compose_prompt_set(items, weekly.PromptSetSettings(n=40, min_high_risk_share=0.9, red_team=None))


def test_prepare_cycle_writes_a_loadable_prompt_set(etl_dir, data_dir):
    out = weekly.prepare_cycle(weekly.WeeklySettings(prompts={"n": 8}), "r1", etl_dir)
    qs = load_questions(out["prompts"])
    assert out["n_prompts"] == len(qs) == 8 and out["new_questions"] == 3 and out["new_samples"] == 3
    # the folder the code before the rename to "cycle" wrote: a retry across an upgrade finds its files
    assert (
        weekly.cycle_dir("r1") == data_dir / "weekly" / "r1"
        and Path(out["prompts"]).parent == data_dir / "weekly" / "r1"
    )
    empty = weekly.prepare_cycle(weekly.WeeklySettings(), "r2", None)
    assert empty["new_questions"] == 0 and "prompts" not in empty
    for bad in ("", "../x", ".hidden"):
        with pytest.raises(InputError, match="cycle id"):
            weekly.cycle_dir(bad)


def test_settings_are_strict_and_refuse_a_stage_that_cannot_be_served():
    with pytest.raises(ValidationError, match="promts"):
        weekly.WeeklySettings.model_validate({"promts": {}})
    with pytest.raises(ValidationError, match="stage RM"):
        weekly.WeeklySettings.model_validate({"request": {"stage": "RM", "irs_config": {"n_iterations": 1}}})
    with pytest.raises(ValidationError, match="keys do not belong"):
        weekly.WeeklySettings.model_validate({"feedback": {"langfuse": {"secret_key": "sk"}}})
    assert weekly.WeeklySettings().request.codebook.enabled  # rules reviewers enabled are used by default


def test_codebook_is_used_once_it_exists_in_generation_and_eval_prompts(data_dir):
    s = weekly.WeeklySettings()
    assert not weekly.cycle_codebook(s).enabled  # a fresh install has no codebook: the cycle still runs
    Codebook().add(
        "Explain Rayleigh scattering when asked why the sky is blue.",
        ["sky", "blue"],
        ["Why is the sky blue?"],
        source="review",
        author="test",
    )
    assert weekly.cycle_codebook(s).enabled and weekly.gate_settings(s).suites.codebook.enabled
    req = weekly.cycle_request(s, data_dir / "p.jsonl", 3, None)
    assert req.codebook.enabled and req.n_questions == 3 and req.init_adapter is None
    qs = load_questions("builtin:demo", 4)
    extra = _codebook_extra(EvalSuites(codebook=CodebookConfig(enabled=True)), qs)
    assert "Rayleigh" in extra["demo-001"] and set(extra) == {"demo-001"}  # only the sky question matches
    assert _codebook_extra(EvalSuites(), qs) == {}


def test_report_names_what_came_in_the_table_the_decision_and_the_cost(data_dir):
    doc = {
        "cycle_id": "r9",
        "outcome": "Version 3 promoted to champion",
        "stage": "IRS",
        "came_in": {"etl_run": "r9", "traces": 5, "thumbs_up": 2, "thumbs_down": 3, "corrections": 1},
        "prompts": {"n_prompts": 10, "high_risk": 4, "by_source": {"anchor": 3, "red_team": 3, "thumbs_down": 4}},
        "training": {
            "job_id": "r9",
            "stage": "IRS",
            "started_from": "champion version 2",
            "final_adapter": "/x",
            "iterations": [{"iter": 1, "avg_reward": 0.5, "loss": 1.2}],
        },
        "gate": {"promote": True, "reasons": ["reward: gain +0.08"], "table": {"reward_mean": [0.7, 0.78]}},
        "champion_eval": None,
        "served": {"champion": "version 3 (/a)", "vllm": True, "served_name": "x", "vllm_adapter": "/a"},
        "cost": {"teacher_calls": 5, "teacher_usd": 0.0123, "gpu_minutes": 1.5},
    }
    path, md = weekly.write_report("r9", doc)
    assert path.read_text() == md and json.loads((path.parent / "report.json").read_text()) == doc
    for text in (
        "5 traces with feedback, 2 thumbs up, 3 thumbs down, 1 corrections",
        "| reward_mean | 0.7",
        "**promote**",
        "from champion version 2",
        "# Weekly cycle `r9`",
        "`/a` loaded as `x`",
        "5 calls, $0.0123",
        "1.50 min",
    ):
        assert text in md, text
