"""Which codebook rules apply to a question, and how they enter the prompt.

Score of an enabled rule for a question:
- rule with example questions: max cosine(question, example) under the similarity backend
  (MiniLM by default, each example encoded once) + ``keyword_weight`` x the share of the rule's
  keywords found in the question;
- keyword-only rule: 1.0 if any of its keywords occurs in the question, else 0.0.
Rules scoring >= ``threshold`` are kept, best ``top_k`` first. With the heuristic backend (word
overlap) the same formula applies, so keywords carry most of the signal there.

    sim = load_similarity(req.scoring)
    retriever = CodebookRetriever(Codebook().rules(), sim, top_k=3, threshold=0.5)
    matches = retriever.retrieve(["How do I treat a small burn?"])[0]      # [Match(rule, score)]
    system = inject(req.system_prompt, [m.rule for m in matches])

``select_for_questions`` is what the generate phase calls: one snapshot, rules per question id,
and what to record in candidates.jsonl.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from irsflow.codebook.store import Codebook, Rule, Snapshot

RULES_HEADER = "Rules from reviewed corrections (follow them when they apply):"
RULES_FOOTER = "(End of rules.)"
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def _stem(word: str) -> str:
    # plural-insensitive matching ("burns" ~ "burn") without a stemming library
    w = word.lower()
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


def _stems(text: str) -> tuple[str, ...]:
    return tuple(_stem(w) for w in _WORD.findall(text))


def keyword_hits(question: str, keywords: Sequence[str]) -> int:
    """How many keywords occur in the question (multi-word keywords as whole phrases)."""
    words = _stems(question)
    joined = f" {' '.join(words)} "
    hits = 0
    for kw in keywords:
        k = _stems(kw)
        if k and (f" {' '.join(k)} " in joined if len(k) > 1 else k[0] in words):
            hits += 1
    return hits


@dataclass(frozen=True)
class Match:
    rule: Rule
    score: float


class CodebookRetriever:
    """Scores enabled ``rules`` against questions; see the module docstring for the formula."""

    def __init__(
        self, rules: Sequence[Rule], similarity, top_k: int = 3, threshold: float = 0.5, keyword_weight: float = 0.2
    ):
        self.rules = [r for r in rules if r.enabled]
        self.similarity = similarity
        self.top_k, self.threshold, self.keyword_weight = top_k, threshold, keyword_weight
        self._owner = np.array([i for i, r in enumerate(self.rules) for _ in r.examples], dtype=int)
        self._examples = [e for r in self.rules for e in r.examples]
        # embedding backends: encode every rule example once, reuse for all questions
        self._emb = similarity.encode(self._examples) if hasattr(similarity, "encode") and self._examples else None

    def _example_scores(self, questions: Sequence[str]) -> np.ndarray:
        """(n_questions, n_examples) similarity."""
        if not self._examples:
            return np.zeros((len(questions), 0))
        if self._emb is not None:
            return self.similarity.encode(list(questions)) @ self._emb.T
        n, m = len(questions), len(self._examples)
        flat = self.similarity.cosine([q for q in questions for _ in range(m)], self._examples * n)
        return np.asarray(flat, dtype=float).reshape(n, m)

    def scores(self, questions: Sequence[str]) -> np.ndarray:
        """(n_questions, n_rules) rule scores."""
        out = np.zeros((len(questions), len(self.rules)))
        if not questions or not self.rules:
            return out
        ex = self._example_scores(questions)
        for j, rule in enumerate(self.rules):
            cols = np.flatnonzero(self._owner == j)
            for i, q in enumerate(questions):
                hits = keyword_hits(q, rule.keywords)
                if cols.size:
                    kw = hits / len(rule.keywords) if rule.keywords else 0.0
                    out[i, j] = float(ex[i, cols].max()) + self.keyword_weight * kw
                else:
                    out[i, j] = 1.0 if hits else 0.0
        return out

    def retrieve(self, questions: Sequence[str]) -> list[list[Match]]:
        """Per question, the rules at or above ``threshold``, best first, at most ``top_k``."""
        s = self.scores(questions)
        result = []
        for i in range(len(questions)):
            order = sorted(range(len(self.rules)), key=lambda j: (-s[i, j], j))
            result.append(
                [Match(self.rules[j], round(float(s[i, j]), 4)) for j in order if s[i, j] >= self.threshold][
                    : self.top_k
                ]
            )
        return result


def rules_block(rules: Sequence[Rule]) -> str:
    """The delimited block appended to a system prompt ("" when no rule applies)."""
    if not rules:
        return ""
    return "\n\n" + RULES_HEADER + "\n" + "\n".join(f"- {r.text}" for r in rules) + "\n" + RULES_FOOTER


def inject(system_prompt: str, rules: Sequence[Rule]) -> str:
    return system_prompt + rules_block(rules)


@dataclass
class CodebookSelection:
    """The rules chosen for each question of a phase, from one codebook snapshot."""

    path: str
    snapshot: Snapshot
    matches: dict[str, list[Match]] = field(default_factory=dict)  # question id -> matches

    @property
    def extra_system(self) -> dict[str, str]:
        return {qid: rules_block([m.rule for m in ms]) for qid, ms in self.matches.items() if ms}

    def record(self, question_id: str) -> dict:
        """What a candidates.jsonl row keeps: enough to rebuild the prompt from the codebook file."""
        ms = self.matches.get(question_id, [])
        return {
            "path": self.path,
            "version": self.snapshot.version,
            "content_hash": self.snapshot.content_hash(),
            "rule_ids": [m.rule.id for m in ms],
            "scores": [m.score for m in ms],
        }


def open_snapshot(settings) -> tuple[Codebook, Snapshot]:
    """The snapshot a job uses: ``settings.version`` if pinned, else the latest."""
    cb = Codebook(settings.path, create=False)
    return cb, cb.snapshot(settings.version)


def select_for_questions(settings, similarity, questions) -> CodebookSelection:
    """``settings``: the request's ``codebook`` block; ``questions``: dataset ``Question`` objects."""
    cb, snap = open_snapshot(settings)
    retriever = CodebookRetriever(snap.enabled, similarity, top_k=settings.top_k, threshold=settings.threshold)
    found = retriever.retrieve([q.question for q in questions])
    return CodebookSelection(str(cb.path), snap, {q.id: ms for q, ms in zip(questions, found)})


def key_parts(settings, scoring) -> dict:
    """What of the codebook determines generated prompts (for the GENERATING cache key)."""
    _, snap = open_snapshot(settings)
    return {
        "content_hash": snap.content_hash(),
        "top_k": settings.top_k,
        "threshold": settings.threshold,
        "similarity": [scoring.backend, scoring.embedder],
    }
