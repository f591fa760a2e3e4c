"""The DW-GRPO rewards of seed 000 section 3.1, each in [0, 1]:

- ``rel``   relevance of answer to question: a cross-encoder when ``reranker_path`` is set
            (sigmoid of its logit), else cosine(question, answer) of the bi-encoder, clipped at 0.
- ``faith`` faithfulness of answer to the question's contexts: BERTScore F1 or embedding cosine
            (``scoring.faith``); abstains when the question has no context.
- ``conc``  concision: ``1 - len(answer) / len(context)`` clipped to [0, 1]; abstains without context.
- ``ref``   similarity to the reference answer, where the question set has one.
"""

from __future__ import annotations

import numpy as np

from irsflow.rewards import RewardBatch, RewardEnv, register_reward


def _clip01(x) -> list[float]:
    return [float(v) for v in np.clip(np.asarray(x, dtype=float), 0.0, 1.0)]


def _masked(values: list[float], keep: list[bool]) -> list[float | None]:
    return [v if k else None for v, k in zip(values, keep)]


class Relevance:
    name = "rel"

    def __init__(self, env: RewardEnv):
        self.env = env
        self._reranker = None
        path = getattr(env.settings, "reranker_path", None)
        if path:
            from sentence_transformers import CrossEncoder

            self._reranker = CrossEncoder(path, device=env.settings.device)

    def __call__(self, batch: RewardBatch) -> list[float | None]:
        if self._reranker is not None:
            logits = np.asarray(
                self._reranker.predict(list(zip(batch.questions, batch.answers)), show_progress_bar=False), dtype=float
            )
            in_unit = logits.min(initial=0) >= 0 and logits.max(initial=0) <= 1
            return _clip01(logits if in_unit else 1 / (1 + np.exp(-logits)))
        return _clip01(self.env.similarity.cosine(list(batch.answers), list(batch.questions)))


class Faithfulness:
    name = "faith"

    def __init__(self, env: RewardEnv):
        self.env = env
        self._bertscorer = None

    def _bertscore(self, answers: list[str], contexts: list[str]) -> np.ndarray:
        if self._bertscorer is None:
            from bert_score import BERTScorer

            from irsflow.rewards.similarity import resolve_embedder

            self._bertscorer = BERTScorer(
                model_type=resolve_embedder(self.env.settings.embedder), num_layers=6, device=self.env.settings.device
            )
        _, _, f1 = self._bertscorer.score(answers, contexts)
        return f1.numpy()

    def __call__(self, batch: RewardBatch) -> list[float | None]:
        keep = [bool(c) for c in batch.contexts]
        idx = [i for i, k in enumerate(keep) if k]
        values = [0.0] * len(batch)
        if idx:
            a = [batch.answers[i] for i in idx]
            c = [batch.contexts[i] for i in idx]
            use_bert = getattr(self.env.settings, "faith", "embedding") == "bertscore"
            if use_bert and self.env.similarity.kind == "embedding":
                sims = self._bertscore(a, c)
            else:
                sims = self.env.similarity.cosine(c, a)  # heuristic: share of answer words found in context
            for i, v in zip(idx, _clip01(sims)):
                values[i] = v
        return _masked(values, keep)


class Concision:
    name = "conc"

    def __init__(self, env: RewardEnv):
        pass

    def __call__(self, batch: RewardBatch) -> list[float | None]:
        return [
            None if not c else float(min(1.0, max(0.0, 1.0 - len(a) / len(c))))
            for a, c in zip(batch.answers, batch.contexts)
        ]


class ReferenceMatch:
    name = "ref"

    def __init__(self, env: RewardEnv):
        self.env = env

    def __call__(self, batch: RewardBatch) -> list[float | None]:
        keep = [bool(r) for r in batch.references]
        idx = [i for i, k in enumerate(keep) if k]
        values = [0.0] * len(batch)
        if idx:
            sims = self.env.similarity.cosine([batch.answers[i] for i in idx], [batch.references[i] for i in idx])
            for i, v in zip(idx, _clip01(sims)):
                values[i] = v
        return _masked(values, keep)


for _cls in (Relevance, Faithfulness, Concision, ReferenceMatch):
    register_reward(_cls.name, _cls)
