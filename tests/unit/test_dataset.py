"""Question sets: format, line-numbered errors, the shipped demo set."""

import json

import pytest

from irsflow.dataset import load_questions, parse_questions, questions_hash
from irsflow.errors import DatasetError


def test_demo_set_has_at_least_16_questions_with_contexts():
    qs = load_questions("builtin:demo")
    assert len(qs) >= 16
    assert all(q.contexts and q.reference and q.question.endswith("?") for q in qs)
    assert len({q.id for q in qs}) == len(qs)


def test_rows_parse_with_optional_fields_and_generated_ids():
    text = '{"question": "Why?"}\n\n{"id": 7, "question": "How?", "contexts": ["a", "b", "c"], "meta": {"k": 1}}\n'
    qs = parse_questions(text)
    assert [q.id for q in qs] == ["q-1", "7"]
    assert qs[1].top_contexts(2) == ("a", "b") and qs[1].meta == {"k": 1}


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"question": "ok"}\n{"question": "broken"\n', "x.jsonl:2: malformed JSON"),
        ('{"question": "  "}\n', "x.jsonl:1: 'question' must be a non-empty string"),
        (
            '{"id": "a", "question": "q1"}\n{"id": "b", "question": "q2"}\n{"id": "a", "question": "q3"}\n',
            "x.jsonl:3: duplicate id 'a' (first on line 1)",
        ),
        ('{"question": "q", "contexts": "not a list"}\n', "x.jsonl:1: 'contexts' must be a list of strings"),
        ('{"question": "q", "answer": "x"}\n', "x.jsonl:1: unknown field 'answer'"),
        ('["question"]\n', "x.jsonl:1: expected a JSON object"),
        ("", "x.jsonl: no questions"),
    ],
)
def test_problems_are_reported_with_the_line(text, message):
    with pytest.raises(DatasetError) as err:
        parse_questions(text, source="x.jsonl")
    assert message in str(err.value)


def test_missing_file_and_limit(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_questions(str(tmp_path / "nope.jsonl"))
    p = tmp_path / "qs.jsonl"
    p.write_text("\n".join(json.dumps({"question": f"q{i}?"}) for i in range(5)))
    assert len(load_questions(str(p), limit=3)) == 3
    assert questions_hash(load_questions(str(p), 3)) != questions_hash(load_questions(str(p), 4))
