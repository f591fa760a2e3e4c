"""Dialogue/tutoring metrics (seed 004 section 4) and answer diversity, over generated answers.

    m = dialogue_metrics(conversations)        # each: [{"role": ..., "content": ...}, ...]
    d = diversity(answers)                     # distinct-1 / distinct-2 across all answers
    write_eval_round(path, round_n, {...})     # eval_round_<n>.json

Metrics (assistant turns only; heuristics, named as such):
  question_ratio         share of assistant turns ending in "?" (the seed's definition)
  mean_answer_words      mean words per assistant turn (CJK characters count one each)
  turn_depth             mean assistant turns per conversation (multi-turn upkeep)
  question_balance       question sentences / all sentences of assistant turns (asking vs explaining)
  politeness             share of turns with a courtesy marker and no rude marker
  verbose_share          share of turns longer than ``verbose_words`` (excess verbosity)
Reward-ranked fine-tuning is known to collapse diversity, so ``distinct_1``/``distinct_2`` (unique
n-grams / all n-grams across answers) are tracked and floored by the gate.
"""

from __future__ import annotations

import re

from irsflow.store import atomic_write_json, utc_now

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
_TOKENS = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+", re.UNICODE)
_SENTENCES = re.compile(r"[^.!?。！？]+[.!?。！？]*")
POLITE = re.compile(
    r"\b(please|thank(s| you)?|sorry|glad|happy to|you're welcome|great question)\b"
    r"|请|谢谢|抱歉|不客气|감사|죄송|ありがとう",
    re.I,
)
RUDE = re.compile(r"\b(stupid|idiot|dumb|shut up|obviously you|whatever)\b|笨|闭嘴", re.I)


def words(text: str) -> list[str]:
    return _TOKENS.findall(text.lower())


def diversity(answers: list[str]) -> dict[str, float]:
    out = {}
    toks = [words(a) for a in answers]
    for n in (1, 2):
        grams = [tuple(t[i : i + n]) for t in toks for i in range(len(t) - n + 1)]
        out[f"distinct_{n}"] = len(set(grams)) / len(grams) if grams else 0.0
    return out


def dialogue_metrics(conversations: list[list[dict]], verbose_words: int = 200) -> dict[str, float]:
    turns = [m["content"] or "" for c in conversations for m in c if m.get("role") == "assistant"]
    if not turns:
        raise ValueError("dialogue metrics: no assistant turns")
    sentences = [s.strip() for t in turns for s in _SENTENCES.findall(t) if s.strip()]
    lengths = [len(words(t)) for t in turns]
    return {
        "question_ratio": sum(t.rstrip().endswith(("?", "？")) for t in turns) / len(turns),
        "mean_answer_words": sum(lengths) / len(turns),
        "turn_depth": len(turns) / len(conversations),
        "question_balance": (sum(s.endswith(("?", "？")) for s in sentences) / len(sentences)) if sentences else 0.0,
        "politeness": sum(bool(POLITE.search(t)) and not RUDE.search(t) for t in turns) / len(turns),
        "verbose_share": sum(n > verbose_words for n in lengths) / len(turns),
        "n_turns": len(turns),
        "n_conversations": len(conversations),
    }


def write_eval_round(path, round_n: int, results: dict) -> dict:
    """``eval_round_<n>.json``: the round number, when, and every suite's results."""
    doc = {"round": round_n, "created_at": utc_now(), **results}
    atomic_write_json(path, doc)
    return doc
