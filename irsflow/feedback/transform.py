"""Transform: a Langfuse trace with a thumb becomes clean chat ``messages`` and export rows.

    msgs = to_messages(trace["input"], trace["output"], TransformSettings())   # or raises Skip(reason)
    sharegpt_row(msgs), alpaca_row(msgs)                                        # the other two export formats

Traces come from many agent frameworks, so inputs are normalised from the shapes seen in
practice: an OpenAI-style ``messages`` list (string or content-part contents), ``{"messages": [...]}``,
a plain string, or ``{"input"|"query"|"question": str}``; outputs from a string, an assistant
message, ``{"content": ...}``, ``{"output": ...}`` or an OpenAI completion (``choices[0].message``).
Tool calls and tool results are agent plumbing, not conversation: dropped by default.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ROLES = ("system", "user", "assistant")


class Skip(Exception):
    """This row cannot become training data; the message is the counted reason."""


class TransformSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    system_prompt: Literal["keep", "drop", "replace"] = Field(
        "keep", description="keep the trace's system prompt, drop it, or replace it with `replacement_system`")
    replacement_system: str = ""
    drop_tools: bool = Field(True, description="drop tool calls, tool results and tool-only assistant turns")
    max_turns: int | None = Field(None, ge=1, description="keep only the last N user turns of long dialogues")
    min_answer_chars: int = Field(1, ge=1)


def _text(content: Any) -> str | None:
    """Message content as text: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") in ("text", "input_text",
                                                                                               "output_text")]
        parts += [p for p in content if isinstance(p, str)]
        return "\n".join(x for x in parts if x) if parts else None
    return None


def _input_messages(raw: Any) -> list[dict]:
    if isinstance(raw, dict):
        for key in ("messages", "input", "query", "question", "prompt"):
            if key in raw:
                return _input_messages(raw[key])
        raise Skip("non-chat input")
    if isinstance(raw, str):
        if not raw.strip():
            raise Skip("empty input")
        return [{"role": "user", "content": raw}]
    if isinstance(raw, list) and raw and all(isinstance(m, dict) and "role" in m for m in raw):
        return raw
    raise Skip("non-chat input")


def _output_message(raw: Any) -> dict:
    if raw is None:
        raise Skip("no output")
    if isinstance(raw, str):
        return {"role": "assistant", "content": raw}
    if isinstance(raw, dict):
        if isinstance(raw.get("choices"), list) and raw["choices"]:
            return _output_message(raw["choices"][0].get("message"))
        if "role" in raw or "content" in raw:
            return {"role": "assistant", "content": raw.get("content"), **({"tool_calls": raw["tool_calls"]}
                                                                         if raw.get("tool_calls") else {})}
        if "output" in raw:
            return _output_message(raw["output"])
    if isinstance(raw, list) and raw and isinstance(raw[-1], dict):
        return _output_message(raw[-1])  # some frameworks log the whole dialogue as the output
    raise Skip("unrecognised output")


def to_messages(raw_input: Any, raw_output: Any, settings: TransformSettings = TransformSettings()) -> list[dict]:
    """Clean ``[{"role", "content"}]`` ending with the assistant's answer, or raise :class:`Skip`."""
    answer = _output_message(raw_output)
    msgs: list[dict] = []
    for m in _input_messages(raw_input) + [answer]:
        role = m.get("role")
        if role == "developer":
            role = "system"
        if role in ("tool", "function") or (m.get("tool_calls") and not _text(m.get("content"))):
            if settings.drop_tools:
                continue
            raise Skip("tool messages present (drop_tools is off)")
        if role not in ROLES:
            raise Skip(f"unknown role {role!r}")
        text = _text(m.get("content"))
        if text is None:
            raise Skip(f"{role} message without text content")
        msgs.append({"role": role, "content": text.strip()})
    if settings.system_prompt != "keep":
        msgs = [m for m in msgs if m["role"] != "system"]
        if settings.system_prompt == "replace" and settings.replacement_system:
            msgs.insert(0, {"role": "system", "content": settings.replacement_system})
    if not msgs or msgs[-1]["role"] != "assistant" or len(msgs[-1]["content"]) < settings.min_answer_chars:
        raise Skip("empty answer")
    if not any(m["role"] == "user" for m in msgs):
        raise Skip("no user message")
    if settings.max_turns:
        users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
        if len(users) > settings.max_turns:
            cut = users[-settings.max_turns]
            msgs = [m for m in msgs[:cut] if m["role"] == "system"] + msgs[cut:]
    return msgs


def prompt_key(msgs: list[dict]) -> str:
    """Identity of the prompt an answer replied to (everything before the final answer)."""
    blob = json.dumps([[m["role"], " ".join(m["content"].split()).lower()] for m in msgs[:-1]], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def sharegpt_row(msgs: list[dict], **meta: Any) -> dict:
    who = {"system": "system", "user": "human", "assistant": "gpt"}
    return {"conversations": [{"from": who[m["role"]], "value": m["content"]} for m in msgs], **meta}


def alpaca_row(msgs: list[dict], **meta: Any) -> dict:
    """Alpaca with history: the last user turn is the instruction, earlier turns are [q, a] pairs."""
    system = "\n".join(m["content"] for m in msgs if m["role"] == "system")
    turns = [m for m in msgs if m["role"] != "system"]
    history, pending = [], None
    for m in turns[:-2]:
        if m["role"] == "user":
            pending = m["content"]
        elif pending is not None:
            history.append([pending, m["content"]])
            pending = None
    return {"instruction": turns[-2]["content"] if len(turns) >= 2 else "", "input": "", "output": turns[-1]["content"],
            "system": system, "history": history, **meta}
