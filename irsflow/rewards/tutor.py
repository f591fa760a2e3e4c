"""The on-policy tutoring rewards of seed 004 section 2.2, each in [0, 1], text rules only:

- ``question_ratio`` share of the answer's sentences that end in a question mark (asking, not lecturing);
- ``length_limit``   1 up to ``scoring.length_limit`` words, falling linearly to 0 at twice that (short and clear);
- ``followup``       scaffolding: 1 when the answer explains and then asks a follow-up question, 0.5 for a
                     bare question, 0 with no question at all.
Words count as in ``irsflow.evals.dialogue`` (a CJK character is one word).
"""
from __future__ import annotations

from irsflow.evals.dialogue import _SENTENCES, words
from irsflow.rewards import RewardBatch, RewardEnv, register_reward

_QMARKS = ("?", "？")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCES.findall(text or "") if s.strip()]


class QuestionRatio:
    name = "question_ratio"

    def __init__(self, env: RewardEnv):
        pass

    def __call__(self, batch: RewardBatch) -> list[float | None]:
        out = []
        for a in batch.answers:
            s = _sentences(a)
            out.append(sum(x.endswith(_QMARKS) for x in s) / len(s) if s else 0.0)
        return out


class LengthLimit:
    name = "length_limit"

    def __init__(self, env: RewardEnv):
        self.limit = int(getattr(env.settings, "length_limit", 80) or 80)

    def __call__(self, batch: RewardBatch) -> list[float | None]:
        return [min(1.0, max(0.0, 2.0 - len(words(a)) / self.limit)) for a in batch.answers]


class FollowUp:
    name = "followup"

    def __init__(self, env: RewardEnv):
        pass

    def __call__(self, batch: RewardBatch) -> list[float | None]:
        out = []
        for a in batch.answers:
            s = _sentences(a)
            asks = [x.endswith(_QMARKS) for x in s]
            if not any(asks):
                out.append(0.0)
            else:
                first_q = asks.index(True)
                out.append(1.0 if first_q > 0 else 0.5)
        return out


for _cls in (QuestionRatio, LengthLimit, FollowUp):
    register_reward(_cls.name, _cls)
