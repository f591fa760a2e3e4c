"""Each reward on its own: the contract, formulas, abstentions, the encode-once cache,
the heuristic fallback and the optional cross-encoder path."""

import numpy as np
import pytest

from irsflow.rewards import RewardBatch, RewardEnv, build_rewards, known_rewards, register_reward
from irsflow.rewards.settings import ScoringConfig
from irsflow.rewards.similarity import EmbeddingSimilarity, HeuristicSimilarity, load_similarity
from irsflow.rewards.text import Concision

Q = "How long should a minor burn be cooled under running water?"
CTX = (
    "Cool a minor burn under cool running water for about twenty minutes. "
    "Do not use ice, butter or toothpaste on a burn."
)
GOOD = "Cool it under cool running water for about twenty minutes, and do not use ice."
OFF = "Bread rises because yeast produces carbon dioxide gas."


@pytest.fixture(scope="module")
def minilm_env():
    settings = ScoringConfig(backend="embedding")
    return RewardEnv(settings=settings, similarity=load_similarity(settings))


def test_builtin_names():
    assert {"rel", "faith", "conc", "ref"} <= set(known_rewards())


def test_concision_formula_and_abstention():
    out = Concision(None)(
        RewardBatch(questions=["q"] * 3, answers=["abcde", "x" * 30, "a"], contexts=["x" * 20, "x" * 20, ""])
    )
    assert out == [pytest.approx(0.75), 0.0, None]


def test_relevance_and_faithfulness_rank_the_grounded_answer_first(minilm_env):
    r = build_rewards(["rel", "faith", "ref"], minilm_env)
    batch = RewardBatch(questions=[Q, Q], answers=[GOOD, OFF], contexts=[CTX, CTX], references=[GOOD, None])
    rel, faith, ref = (r[n](batch) for n in ("rel", "faith", "ref"))
    assert rel[0] > rel[1] + 0.2 and faith[0] > faith[1] + 0.2
    assert all(0.0 <= v <= 1.0 for v in rel + faith)
    assert ref[0] == pytest.approx(1.0, abs=1e-4) and ref[1] is None


def test_faith_abstains_without_context(minilm_env):
    faith = build_rewards(["faith"], minilm_env)["faith"]
    assert faith(RewardBatch(questions=[Q, Q], answers=[GOOD, GOOD], contexts=["", CTX]))[0] is None


def test_bertscore_faith_is_configurable(minilm_env):
    env = RewardEnv(settings=ScoringConfig(backend="embedding", faith="bertscore"), similarity=minilm_env.similarity)
    f = build_rewards(["faith"], env)["faith"](RewardBatch(questions=[Q, Q], answers=[GOOD, OFF], contexts=[CTX, CTX]))
    assert f[0] > f[1] and all(0 <= v <= 1 for v in f)


def test_each_unique_text_is_encoded_once(minilm_env):
    sim = EmbeddingSimilarity(minilm_env.similarity.model)
    env = RewardEnv(settings=minilm_env.settings, similarity=sim)
    r = build_rewards(["rel", "faith"], env)
    n = 6
    answers = [f"{GOOD} Variant {i}." for i in range(n)]
    batch = RewardBatch(questions=[Q] * n, answers=answers, contexts=[CTX] * n)
    r["rel"](batch)
    r["faith"](batch)
    assert sim.encoded == n + 2  # six answers, one question, one context


def test_heuristic_fallback_when_the_embedder_cannot_load(tmp_path):
    sim = load_similarity(ScoringConfig(backend="auto", embedder=str(tmp_path / "missing")))
    assert isinstance(sim, HeuristicSimilarity)
    with pytest.raises(FileNotFoundError, match="missing"):  # asked for by name: no quiet fallback
        load_similarity(ScoringConfig(backend="embedding", embedder=str(tmp_path / "missing")))
    r = build_rewards(["rel", "faith"], RewardEnv(settings=ScoringConfig(), similarity=sim))
    batch = RewardBatch(questions=[Q, Q], answers=[GOOD, OFF], contexts=[CTX, CTX])
    rel, faith = r["rel"](batch), r["faith"](batch)
    assert rel[0] > rel[1] and faith[0] > faith[1] and faith[1] == 0.0


def test_cross_encoder_is_used_when_a_reranker_path_is_set(tmp_path, minilm_env):
    """No trained reranker is available offline: a tiny random BERT cross-encoder stands in, and
    the test checks the path is taken and scores come back in [0, 1] as sigmoids of its logits."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from irsflow.rewards.similarity import resolve_embedder

    folder = tmp_path / "reranker"
    tok = BertTokenizerFast.from_pretrained(resolve_embedder("builtin:minilm"))
    torch.manual_seed(0)
    BertForSequenceClassification(
        BertConfig(
            vocab_size=tok.vocab_size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=1,
        )
    ).save_pretrained(folder)
    tok.save_pretrained(folder)
    env = RewardEnv(settings=ScoringConfig(reranker_path=str(folder)), similarity=minilm_env.similarity)
    rel = build_rewards(["rel"], env)["rel"]
    batch = RewardBatch(questions=[Q, Q], answers=[GOOD, OFF])
    got = rel(batch)
    logits = CrossEncoder(str(folder)).predict([(Q, GOOD), (Q, OFF)], activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-np.asarray(logits))), rtol=1e-4)


def test_plugged_in_reward_follows_the_contract():
    class Exclaim:
        name = "exclaim"

        def __init__(self, env):
            pass

        def __call__(self, batch):
            return [a.count("!") / max(1, len(a)) if a else None for a in batch.answers]

    register_reward("exclaim", Exclaim)
    assert "exclaim" in known_rewards()
    out = build_rewards(["exclaim"], RewardEnv())["exclaim"](RewardBatch(questions=["q"] * 2, answers=["a!", ""]))
    assert out == [0.5, None]
    with pytest.raises(ValueError, match="RewardBatch.contexts: 1 items, answers has 2"):
        RewardBatch(questions=["q", "q"], answers=["a", "b"], contexts=["c"])


def test_tutoring_rewards_of_seed_004():
    from irsflow.rewards import RewardBatch, RewardEnv, build_rewards
    from irsflow.rewards.settings import ScoringConfig

    r = build_rewards(["question_ratio", "length_limit", "followup"], RewardEnv(settings=ScoringConfig(length_limit=3)))
    b = RewardBatch(
        questions=["q"] * 4,
        answers=[
            "Fractions add when denominators match. What is 1/2 + 1/4?",
            "Why?",
            "It is 4.",
            "one two three four five",
        ],
    )
    assert r["question_ratio"](b) == [0.5, 1.0, 0.0, 0.0]
    assert r["followup"](b) == [1.0, 0.5, 0.0, 0.0]  # explain, then ask; a bare question; no question
    assert r["length_limit"](b)[:3] == [0.0, 1.0, 1.0] and r["length_limit"](b)[3] == pytest.approx(1 / 3)
