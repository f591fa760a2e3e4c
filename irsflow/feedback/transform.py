"""Transform: a Langfuse trace with a thumb becomes clean chat ``messages`` and export rows.

    msgs = to_messages(trace["input"], trace["output"], TransformSettings())   # or raises Skip(reason)
    sharegpt_row(msgs), alpaca_row(msgs)                                        # the other two export formats

Traces come from many agent frameworks, so inputs are normalised from the shapes the Langfuse
SDK records (langfuse/langfuse-python, read at commit c3c6a09, 2026-08-06):
- its OpenAI integration (``langfuse/openai.py``): a GENERATION whose input is the chat messages
  (or ``{"messages", "tools"}``) and whose output is the assistant message ``{"role", "content"}``;
- ``@observe`` (``_client/observe.py``): input ``{"args": [...], "kwargs": {...}}``, output the
  function's return value (a string is sent as is). The chat is the one argument that is a
  message list or ``{"messages"}``, else the one text argument (``kwargs`` named like ``question``,
  ``query``, ``prompt``, ``input``, ``message`` first);
- LangChain/LangGraph (``langchain/CallbackHandler.py``): the root chain's input and output are
  the graph state ``{"messages": [...]}``, its messages serialised by pydantic (``{"type": "human"|
  "ai"|"system"|"tool", "content", "tool_calls"}``), as LangChain's ``to_json`` (``{"lc": 1, "id":
  [..., "HumanMessage"], "kwargs": {...}}``) or as ``["human", "text"]`` tuples; an LLM run's
  messages are ``{"role", "content"}`` dicts. The answer is the state's last message.
Also a plain string, ``{"input"|"query"|"question": str}``; outputs from a string, an assistant
message, ``{"content": ...}``, ``{"output": ...}``, ``{"messages": [...]}`` or an OpenAI
completion (``choices[0].message``). Tool calls and tool results are agent plumbing, not
conversation: dropped by default.
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
        "keep", description="keep the trace's system prompt, drop it, or replace it with `replacement_system`"
    )
    replacement_system: str = ""
    drop_tools: bool = Field(True, description="drop tool calls, tool results and tool-only assistant turns")
    max_turns: int | None = Field(None, ge=1, description="keep only the last N user turns of long dialogues")
    min_answer_chars: int = Field(1, ge=1)


def _text(content: Any) -> str | None:
    """Message content as text: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and p.get("type") in ("text", "input_text", "output_text")
        ]
        parts += [p for p in content if isinstance(p, str)]
        return "\n".join(x for x in parts if x) if parts else None
    return None


# LangChain message types (BaseMessage.type, and the class names of its to_json form) -> chat roles
_LC_ROLES = {
    "human": "user",
    "ai": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "function",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "HumanMessage": "user",
    "AIMessage": "assistant",
    "SystemMessage": "system",
    "ToolMessage": "tool",
    "FunctionMessage": "function",
    "HumanMessageChunk": "user",
    "AIMessageChunk": "assistant",
}
_TEXT_ARGS = ("messages", "question", "query", "prompt", "input", "message", "user_input", "text")


def _message(m: Any) -> dict | None:
    """One chat message in any of the recorded forms, as ``{"role", "content"[, "tool_calls"]}``."""
    if isinstance(m, (list, tuple)) and len(m) == 2 and isinstance(m[0], str) and m[0] in _LC_ROLES:
        return {"role": _LC_ROLES[m[0]], "content": m[1]}  # LangGraph's ("human", "hi") shorthand
    if not isinstance(m, dict):
        return None
    if m.get("lc") == 1 and isinstance(m.get("kwargs"), dict):  # LangChain to_json()
        kind = (m.get("id") or [""])[-1]
        return _message({**m["kwargs"], "type": m["kwargs"].get("type") or kind, "role": _LC_ROLES.get(kind)})
    role = m.get("role")
    if role is None and "type" in m and "content" in m:  # pydantic dump of a LangChain message
        role = _LC_ROLES.get(m["type"], m["type"])
        if role == "chat":
            role = m.get("role")
    if role is None:
        return None
    out = {"role": _LC_ROLES.get(role, role), "content": m.get("content")}
    if m.get("tool_calls"):
        out["tool_calls"] = m["tool_calls"]
    return out


def _messages(raw: Any) -> list[dict] | None:
    if isinstance(raw, list) and raw:
        msgs = [_message(m) for m in raw]
        return msgs if all(msgs) else None
    return None


def _observe_call(args: Any, kwargs: Any) -> list[dict]:
    """The chat inside an ``@observe`` function's recorded arguments."""
    args = args if isinstance(args, list) else []
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    for v in [*kwargs.values(), *args]:  # a message list, or a state/request dict holding one
        if _messages(v) or (isinstance(v, dict) and _messages(v.get("messages"))):
            return _input_messages(v)
    for key in _TEXT_ARGS:
        if isinstance(kwargs.get(key), str) and kwargs[key].strip():
            return [{"role": "user", "content": kwargs[key]}]
    texts = [v for v in [*args, *kwargs.values()] if isinstance(v, str) and v.strip()]
    if len(texts) == 1:
        return [{"role": "user", "content": texts[0]}]
    raise Skip("non-chat input (@observe arguments hold no message list and not exactly one text)")


def _input_messages(raw: Any) -> list[dict]:
    if isinstance(raw, dict):
        if "args" in raw and "kwargs" in raw and set(raw) <= {"args", "kwargs"}:
            return _observe_call(raw["args"], raw["kwargs"])
        for key in ("messages", "input", "query", "question", "prompt"):
            if key in raw:
                return _input_messages(raw[key])
        raise Skip("non-chat input")
    if isinstance(raw, str):
        if not raw.strip():
            raise Skip("empty input")
        return [{"role": "user", "content": raw}]
    msgs = _messages(raw)
    if msgs is not None:
        return msgs
    raise Skip("non-chat input")


def _output_message(raw: Any) -> dict:
    if raw is None:
        raise Skip("no output")
    if isinstance(raw, str):
        return {"role": "assistant", "content": raw}
    if isinstance(raw, dict):
        if isinstance(raw.get("choices"), list) and raw["choices"]:
            return _output_message(raw["choices"][0].get("message"))
        if isinstance(raw.get("messages"), list) and raw["messages"]:  # a LangGraph state: its last message
            last = _message(raw["messages"][-1])
            if last is None or last["role"] != "assistant":
                raise Skip("agent state does not end with an assistant message")
            return last
        msg = _message(raw)
        if msg is not None or "content" in raw:
            msg = msg or {"role": "assistant", "content": raw["content"]}
            return {**msg, "role": "assistant"}
        if "output" in raw:
            return _output_message(raw["output"])
    if isinstance(raw, list) and raw and isinstance(raw[-1], (dict, list)):
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
    return {
        "instruction": turns[-2]["content"] if len(turns) >= 2 else "",
        "input": "",
        "output": turns[-1]["content"],
        "system": system,
        "history": history,
        **meta,
    }
