"""JSONL is split on "\\n" only. ``json.dumps(ensure_ascii=False)`` writes U+2028, U+2029 and U+0085
raw inside strings, and ``str.splitlines()`` splits on them: a question holding one used to pass
validation and then break the job at SCORING with a bare JSONDecodeError."""

import csv
import json

import pytest

from irsflow.config import TrainRequest
from irsflow.dataset import load_questions
from irsflow.errors import InputError
from irsflow.jobs.job import create_job
from irsflow.loop.phases import run_generate, run_score
from irsflow.store import JobStore, append_jsonl, iter_jsonl, read_jsonl, write_jsonl
from tests.support.jobs import tiny_request

# every character str.splitlines() splits on besides \n and \r
SEPARATORS = "\u2028\u2029\u0085\x0b\x0c\x1c\x1d\x1e"
ODD = "Line\u2028separator, paragraph\u2029separator and NEL\u0085in one question?"


def test_store_round_trip_keeps_line_separators_inside_strings(tmp_path):
    rows = [{"id": f"q{i}", "question": f"before{c}after", "contexts": [c, f"x{c}"]} for i, c in enumerate(SEPARATORS)]
    p = tmp_path / "rows.jsonl"
    write_jsonl(p, rows[:4])
    append_jsonl(p, rows[4:])
    assert "\u2028" in p.read_text(encoding="utf-8")  # written raw, so the reader must cope
    assert read_jsonl(p) == rows


def test_crlf_and_blank_lines_are_read(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_bytes(b'{"a": 1}\r\n\r\n{"a": "x\xe2\x80\xa8y"}\r\n')
    assert read_jsonl(p) == [{"a": 1}, {"a": "x\u2028y"}]


def test_a_malformed_line_names_the_file_and_line(tmp_path):
    p = tmp_path / "scores.jsonl"
    p.write_text('{"a": 1}\n\n{"a": \n{"a": 3}\n', encoding="utf-8")
    with pytest.raises(InputError, match=rf"{p}:3: malformed JSON \(Expecting value at column 7\)"):
        read_jsonl(p)
    with pytest.raises(InputError, match="x.jsonl:2: malformed JSON"):
        list(iter_jsonl('{"a": 1}\n{"a"\u2028: 2}\n', "x.jsonl"))  # a separator outside a string is still bad JSON


def test_question_set_with_raw_line_separators_loads(tmp_path):
    p = tmp_path / "qs.jsonl"
    p.write_text(
        json.dumps({"id": "odd", "question": ODD, "contexts": [ODD]}, ensure_ascii=False)
        + "\n"
        + json.dumps({"question": "plain?"})
        + "\n",
        encoding="utf-8",
    )
    qs = load_questions(str(p))
    assert [(q.id, q.question, q.contexts) for q in qs] == [("odd", ODD, (ODD,)), ("q-2", "plain?", ())]


def test_a_job_scores_questions_holding_line_separators(tiny_model, data_dir):
    """The issue's case: the question file escapes U+2028 (valid JSON), the job's own files hold it raw."""
    qs = data_dir / "qs.jsonl"
    data_dir.mkdir(parents=True, exist_ok=True)
    qs.write_text("".join(json.dumps({"id": f"q{i}", "question": f"{ODD} ({i})"}) + "\n" for i in range(3)))
    req = TrainRequest.model_validate(
        tiny_request(
            tiny_model,
            dataset=str(qs),
            n_questions=3,
            irs_config={"n_candidates": 2, "max_new_tokens": 8, "n_iterations": 1},
        )
    )
    store = create_job(req)
    run_generate(store, req, 1, None)
    out = run_score(store, req, 1, dict(req.shared.dw_config.initial_weights), [])
    assert out["avg_reward"] == out["avg_reward"]  # not NaN
    samples = read_jsonl(store.samples_path)
    assert {s["question"] for s in samples} <= {f"{ODD} ({i})" for i in range(3)} and samples
    assert [r["id"] for r in read_jsonl(store.phase_dir(1) / "scores.jsonl")] == [s["id"] for s in samples]


def test_ppo_rewards_csv_keeps_an_id_with_a_line_separator(tmp_path):
    from irsflow.stages.ppo import _rebuild_ppo_reports

    store = JobStore("j", root=tmp_path)
    for it, qid in ((1, "a\u2028b"), (2, "c\nd")):
        d = store.phase_dir(it)
        d.mkdir(parents=True)
        with open(d / "rollouts.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["round", "id", "candidate", "reward", "kl", "kl_penalty", "logp_change"])
            w.writerow([it, qid, 0, "0.5", "0.1", "-0.02", "0.0"])
        (d / "kl.json").write_text(json.dumps({"round": it, "target_kl": 6.0}))
    _rebuild_ppo_reports(store, 2)
    with open(store.dir / "rewards.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["round"], r["id"], r["reward"]) for r in rows] == [("1", "a\u2028b", "0.5"), ("2", "c\nd", "0.5")]
