"""Transform of Langfuse traces into chat rows, the three export formats, preference pairs, and the
Label Studio round trip (tasks out, an export with corrections back in)."""

import hashlib
import json

import pytest

from irsflow.errors import InputError
from irsflow.feedback.label_studio import FROM_NAME, LABEL_CONFIG, TO_NAME, golden_row, pair_row, read_export
from irsflow.feedback.outputs import RunOutputs
from irsflow.feedback.transform import Skip, TransformSettings, alpaca_row, sharegpt_row, to_messages

DIALOGUE = [
    {"role": "system", "content": "You are a helpful tutor."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": [{"type": "text", "text": "And 3+3?"}]},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{}"}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "6"},
]


def test_shapes_seen_in_practice_become_clean_messages():
    msgs = to_messages(DIALOGUE, {"role": "assistant", "content": "6."})
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant"]
    assert msgs[3]["content"] == "And 3+3?" and msgs[-1]["content"] == "6."
    assert to_messages({"messages": DIALOGUE[1:2]}, "four") == [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "four"},
    ]
    assert to_messages("hi", {"choices": [{"message": {"role": "assistant", "content": "hello"}}]})[-1] == {
        "role": "assistant",
        "content": "hello",
    }
    assert to_messages({"question": "q?"}, {"output": "a."})[0] == {"role": "user", "content": "q?"}
    dropped = to_messages(DIALOGUE, "6.", TransformSettings(system_prompt="drop"))
    assert dropped[0]["role"] == "user"
    replaced = to_messages(DIALOGUE, "6.", TransformSettings(system_prompt="replace", replacement_system="Be brief."))
    assert replaced[0] == {"role": "system", "content": "Be brief."}
    last = to_messages(DIALOGUE, "6.", TransformSettings(max_turns=1))
    assert [m["role"] for m in last] == ["system", "user", "assistant"] and last[1]["content"] == "And 3+3?"
    with pytest.raises(Skip, match="tool messages"):
        to_messages(DIALOGUE, "6.", TransformSettings(drop_tools=False))


def _lc(kind, content, **extra):  # a LangChain message as the Langfuse SDK's serializer records it (model_dump)
    return {
        "content": content,
        "additional_kwargs": {},
        "response_metadata": {},
        "type": kind,
        "name": None,
        "id": None,
        "example": False,
        **extra,
    }


QA = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4."}]


@pytest.mark.parametrize(
    "raw_in,raw_out",
    [
        # @observe: {"args", "kwargs"} (langfuse _client/observe.py), the return value as output
        ({"args": ["2+2?"], "kwargs": {}}, "4."),
        ({"args": [], "kwargs": {"question": "2+2?", "user_id": "u1"}}, "4."),
        ({"args": [3, "2+2?"], "kwargs": {"temperature": 0.2}}, "4."),
        (
            {"args": [[{"role": "user", "content": "2+2?"}]], "kwargs": {"model": "m"}},
            {"role": "assistant", "content": "4."},
        ),
        ({"args": [], "kwargs": {"messages": [{"role": "user", "content": "2+2?"}], "model": "m"}}, "4."),
        (
            {"args": [{"messages": [_lc("human", "2+2?")]}], "kwargs": {}},
            {"messages": [_lc("human", "2+2?"), _lc("ai", "4.")]},
        ),
        # OpenAI integration with tools (langfuse/openai.py _extract_chat_prompt): {"messages", "tools"}
        (
            {"messages": [{"role": "user", "content": "2+2?"}], "tools": [{"type": "function"}]},
            {"role": "assistant", "content": "4.", "tool_calls": None},
        ),
        # LangGraph state through the LangChain callback, three serialised forms of a message
        ({"messages": [_lc("human", "2+2?")]}, {"messages": [_lc("human", "2+2?"), _lc("ai", "4.", tool_calls=[])]}),
        (
            {
                "messages": [
                    {
                        "lc": 1,
                        "type": "constructor",
                        "id": ["langchain", "schema", "messages", "HumanMessage"],
                        "kwargs": {"content": "2+2?", "type": "human"},
                    }
                ]
            },
            {
                "messages": [
                    {
                        "lc": 1,
                        "type": "constructor",
                        "id": ["langchain_core", "messages", "ai", "AIMessage"],
                        "kwargs": {"content": [{"type": "text", "text": "4."}]},
                    }
                ]
            },
        ),
        ({"messages": [["human", "2+2?"]]}, {"messages": [["human", "2+2?"], ["ai", "4."]]}),
        ([{"role": "user", "content": "2+2?"}], [_lc("ai", "4.")]),  # a whole dialogue as the output
    ],
)
def test_what_the_langfuse_sdk_records_becomes_clean_messages(raw_in, raw_out):
    assert to_messages(raw_in, raw_out) == QA


def test_agent_tool_rounds_are_dropped_and_a_state_must_end_with_the_answer():
    state_in = {"messages": [_lc("system", "Use tools."), _lc("human", "Weather?")]}
    call = _lc("ai", "", tool_calls=[{"name": "weather", "args": {}, "id": "c1", "type": "tool_call"}])
    done = {"messages": [*state_in["messages"], call, _lc("tool", "sunny", tool_call_id="c1"), _lc("ai", "Sunny.")]}
    assert to_messages(state_in, done) == [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Sunny."},
    ]
    with pytest.raises(Skip, match="does not end with an assistant"):
        to_messages(state_in, {"messages": [*state_in["messages"], call, _lc("tool", "sunny", tool_call_id="c1")]})
    with pytest.raises(Skip, match="@observe arguments"):
        to_messages({"args": ["first text", "second text"], "kwargs": {}}, "x")


@pytest.mark.parametrize(
    "raw_in,raw_out,reason",
    [
        ("q?", None, "no output"),
        (42, "a", "non-chat input"),
        ({"foo": "bar"}, "a", "non-chat input"),
        ("q?", {"role": "assistant", "content": "  "}, "empty answer"),
        ([{"role": "robot", "content": "x"}], "a", "unknown role"),
    ],
)
def test_bad_traces_are_skipped_with_a_reason(raw_in, raw_out, reason):
    with pytest.raises(Skip, match=reason):
        to_messages(raw_in, raw_out)


def test_export_formats():
    msgs = to_messages(DIALOGUE, "6.")
    sg = sharegpt_row(msgs, trace_id="t1")
    assert [c["from"] for c in sg["conversations"]] == ["system", "human", "gpt", "human", "gpt"] and sg[
        "trace_id"
    ] == "t1"
    al = alpaca_row(msgs, trace_id="t1")
    assert (al["instruction"], al["output"], al["system"]) == ("And 3+3?", "6.", "You are a helpful tutor.")
    assert al["history"] == [["What is 2+2?", "4."]]


def _record(tid, label, question, answer, value=None):
    return {
        "trace_id": tid,
        "score_id": f"s-{tid}",
        "label": label,
        "score_value": value,
        "trace": {"id": tid, "input": [{"role": "user", "content": question}], "output": answer},
    }


def test_run_outputs_route_rows_pair_prompts_and_hash_files(tmp_path):
    out = RunOutputs(tmp_path, TransformSettings())
    out.add(_record("t1", "up", "Capital of France?", "Paris."))
    out.add(_record("t2", "down", "capital of  france?", "Lyon."))  # same prompt, normalised
    out.add(_record("t3", "down", "Capital of Spain?", "Madrid?"))
    out.add(_record("t4", None, "x", "y", value=0.5))
    out.add({"trace_id": "t5", "label": "up", "trace": {"input": "q", "output": None}})
    files = out.close()
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert pairs == [
        {
            "prompt": [{"role": "user", "content": "Capital of France?"}],
            "chosen": "Paris.",
            "rejected": "Lyon.",
            "source": "thumbs",
            "chosen_trace_id": "t1",
            "rejected_trace_id": "t2",
        }
    ]
    assert files["sft.messages.jsonl"]["rows"] == 1 and files["annotation_queue.jsonl"]["rows"] == 2
    assert dict(out.skipped) == {"unknown score value": 1, "no output": 1}
    for name, f in files.items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == f["sha256"], name
    tasks = json.loads((tmp_path / "label_studio_tasks.json").read_text())
    assert [t["data"]["trace_id"] for t in tasks] == ["t2", "t3"]
    pred = tasks[0]["predictions"][0]["result"][0]
    assert (pred["from_name"], pred["to_name"], pred["value"]["text"]) == (FROM_NAME, TO_NAME, ["Lyon."])
    assert f'name="{FROM_NAME}"' in LABEL_CONFIG and "$messages" in LABEL_CONFIG


def _annotation(aid, text=None, cancelled=False, updated="2026-11-20T10:00:00Z"):
    result = (
        []
        if text is None
        else [
            {
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "textarea",
                "value": {"text": [text]},
                "origin": "manual",
            }
        ]
    )
    return {
        "id": aid,
        "completed_by": 7,
        "result": result,
        "was_cancelled": cancelled,
        "updated_at": updated,
        "created_at": updated,
        "lead_time": 12.5,
    }


def test_label_studio_round_trip(tmp_path):
    out = RunOutputs(tmp_path, TransformSettings())
    for i, (q, a) in enumerate([("Capital of Spain?", "Madrid?"), ("2+2?", "5"), ("Hello?", "Hi."), ("Why?", "No.")]):
        out.add(_record(f"t{i}", "down", q, a))
    out.close()
    tasks = json.loads((tmp_path / "label_studio_tasks.json").read_text())
    # what Label Studio exports after annotation: its ids, our data, the annotations
    tasks[0] |= {
        "id": 1,
        "annotations": [
            _annotation(10, "Madrid is the capital of Spain.", updated="2026-11-20T09:00:00Z"),
            _annotation(11, "Madrid."),
        ],
    }  # the later one wins
    tasks[1] |= {"id": 2, "annotations": [_annotation(12, "4", cancelled=True)]}
    tasks[2] |= {"id": 3, "annotations": [_annotation(13, "Hi.")]}  # approved unchanged
    tasks[3] |= {"id": 4, "annotations": [_annotation(14, None)]}  # submitted empty
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    found, skipped = read_export(export)
    golden, pairs = [golden_row(c) for c in found], [pair_row(c) for c in found]
    assert [(g["trace_id"], g["messages"][-1]["content"]) for g in golden] == [("t0", "Madrid.")]
    assert golden[0]["messages"][:-1] == [{"role": "user", "content": "Capital of Spain?"}]
    assert pairs == [
        {
            "prompt": [{"role": "user", "content": "Capital of Spain?"}],
            "chosen": "Madrid.",
            "rejected": "Madrid?",
            "trace_id": "t0",
            "ls_task_id": 1,
            "ls_annotation_id": "11",
            "ls_updated_at": "2026-11-20T10:00:00Z",
            "annotator": 7,
            "source": "label-studio",
            "chosen_trace_id": "t0",
            "rejected_trace_id": "t0",
        }
    ]
    # unchanged ("Hi." approved as it is) and empty corrections teach nothing: counted, not taken
    assert dict(skipped) == {"cancelled": 1, "empty correction": 1, "correction same as the answer": 1}
    broken = tmp_path / "broken.json"
    broken.write_text('[{"data": ')
    with pytest.raises(InputError, match="broken.json"):
        read_export(broken)
