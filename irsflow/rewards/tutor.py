"""The on-policy tutoring rewards of seed 004 section 2.2, each in [0, 1], text rules only:

- ``question_ratio`` share of the answer's sentences that end in a question mark (asking, not lecturing);
- ``length_limit``   1 up to ``scoring.length_limit`` words, falling linearly to 0 at twice that (short and clear);
- ``followup``       scaffolding: 1 when the answer explains and then asks a follow-up question, 0.5 for a
                     bare question, 0 with no question at all.
Words count as in ``irsflow.rewards.dialogue`` (a CJK character is one word).
"""

from __future__ import annotations

from irsflow.rewards import RewardBatch, RewardEnv, register_reward
from irsflow.rewards.dialogue import _SENTENCES, words

_QMARKS = ("?", "？")


def _asks(text: str) -> list[bool]:
    """Per sentence of ``text``: whether it is a question."""
    return [s.strip().endswith(_QMARKS) for s in _SENTENCES.findall(text or "") if s.strip()]


class _PerAnswer:
    """A rule reward that scores each answer on its own (``score``)."""

    def __init__(self, env: RewardEnv):
        self.env = env

    def __call__(self, batch: RewardBatch) -> list[float | None]:
        return [self.score(a) for a in batch.answers]


class QuestionRatio(_PerAnswer):
    name = "question_ratio"

    def score(self, answer: str) -> float:
        asks = _asks(answer)
        return sum(asks) / len(asks) if asks else 0.0


class LengthLimit(_PerAnswer):
    name = "length_limit"

    def score(self, answer: str) -> float:
        limit = int(getattr(self.env.settings, "length_limit", 80) or 80)
        return min(1.0, max(0.0, 2.0 - len(words(answer)) / limit))


class FollowUp(_PerAnswer):
    name = "followup"

    def score(self, answer: str) -> float:
        asks = _asks(answer)
        if not any(asks):
            return 0.0
        return 1.0 if asks.index(True) > 0 else 0.5  # something explained before the first question


for _cls in (QuestionRatio, LengthLimit, FollowUp):
    register_reward(_cls.name, _cls)
