"""Draft codebook rules from human corrections, built without a model.

    draft = rule_from_correction(question, model_answer, corrected_answer, provenance={"trace_id": t})
    Codebook().add_draft(draft)          # stored disabled until a reviewer enables it

Scope = the question as an example plus its salient words as keywords; text = the question's gist
and the corrected answer's first sentence. The Label Studio ETL drafts one per correction
(``irsflow.feedback.corrections``); a reviewer rewrites it into a general instruction.
"""

from __future__ import annotations

import re

from irsflow.codebook.store import RuleDraft
from irsflow.errors import InputError
from irsflow.rewards.similarity import content_words

# common words that say nothing about a question's topic (on top of the similarity stop words)
_GENERIC = frozenset(
    "please tell explain know want need really much many get make like way thing things someone "
    "something anyone anything there here about into also just very after before during while "
    "again still even ever every other some any most more less only same right first last "
    "best good bad new old".split()
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def salient_keywords(question: str, limit: int = 5) -> tuple[str, ...]:
    """Content words of ``question`` in order (stop words, generic verbs and short words dropped)."""
    words = [w.lower() for w in re.findall(r"[^\W_]+", question)]
    keep = content_words(question) - _GENERIC
    return tuple(dict.fromkeys(w for w in words if w in keep and len(w) >= 3))[:limit]


def rule_from_correction(
    question: str,
    original_answer: str,
    corrected_answer: str,
    *,
    source: str = "label-studio",
    provenance: dict | None = None,
    author: str | None = None,
) -> RuleDraft:
    """A disabled draft rule from one human correction, built without a model: scope = the question
    as example plus its salient words as keywords; text = the question's gist and the corrected
    answer's first sentence. A reviewer is expected to rewrite it into a general instruction."""
    if not isinstance(question, str) or not question.strip():
        raise InputError("question: must not be empty")
    if not isinstance(corrected_answer, str) or not corrected_answer.strip():
        raise InputError("corrected_answer: must not be empty")
    if " ".join((original_answer or "").split()) == " ".join(corrected_answer.split()):
        raise InputError("corrected_answer: same as the original answer, nothing to learn")
    first = _SENTENCE.split(corrected_answer.strip(), maxsplit=1)[0]
    text = f'For questions like "{_clip(question, 120)}": {_clip(first, 300)}'
    prov = {
        "kind": "correction",
        "original_answer": _clip(original_answer or "", 1000),
        "corrected_answer": _clip(corrected_answer, 1000),
        **(provenance or {}),
    }
    return RuleDraft(
        text=text,
        keywords=salient_keywords(question),
        examples=(" ".join(question.split()),),
        source=source,
        provenance=prov,
        author=author,
    )
