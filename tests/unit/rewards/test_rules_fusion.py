"""Rule rewards (chain, emergency, risk), the rlaif fusion and its conflicts, on hand-made answers."""

import json

import pytest

from irsflow.config import parse_request
from irsflow.errors import ConfigError
from irsflow.rewards import RewardBatch, RewardEnv, build_rewards
from irsflow.rewards.fusion import fuse
from irsflow.rewards.rules import load_rules
from irsflow.rewards.settings import ScoringConfig

THINK = (
    "<think>Chest pain with sweating may be a heart attack; age, risk factors, radiation to the arm, "
    "breathlessness and duration all matter, so urgent assessment is safest.</think> "
)


def test_chain_coverage():
    r = load_rules()
    assert r.chain_score("Drink water.") == 0.0
    full = r.chain_score(THINK + "Call 911 now.")
    assert full == 1.0
    assert r.chain_score(THINK) == pytest.approx(0.5)  # no final answer after the block
    assert r.chain_score("<think>ok ok ok ok ok ok ok ok</think> Fine.") == pytest.approx(1 / 20)  # distinct words
    assert r.chain_score("<think>胸痛可能是心脏问题需要马上评估</think>请立即就医") == pytest.approx(
        15 / 20
    )  # CJK chars


def test_emergency_coverage_and_abstention():
    r = load_rules()
    q = "I have chest pain and shortness of breath since an hour"
    assert r.raised_flags(q) == ["chest_pain", "breathing"]
    assert r.emergency("Call 911 or go to the emergency room right away.", q) == 1.0
    assert r.emergency("Try to rest and drink tea.", q) == 0.0
    assert r.emergency("Anything", "Why is the sky blue?") is None
    assert r.emergency("Please talk to a crisis line now.", "I want to end my life") == 1.0  # the flag's own list
    assert r.emergency("孩子需要立即就医", "孩子胸痛") == 1.0
    assert r.raised_flags("water is good") == []  # "ER" style substrings never match inside words
    em = build_rewards(["emergency"], RewardEnv(settings=ScoringConfig()))["emergency"]
    # retrieved context listing warning signs does not make the user's question an emergency
    assert em(
        RewardBatch(
            questions=["How do I stop a nosebleed?"],
            answers=["Pinch the nose."],
            contexts=["See a doctor if there is difficulty breathing."],
        )
    ) == [None]


def test_risky_prescription_penalty():
    r = load_rules()
    kid = "My 4 year-old child has a fever"
    assert r.risk("Give her aspirin.", kid) == 1.0
    assert r.risk("Do not give aspirin to children.", kid) == 0.0  # `unless`
    assert r.risk("Give her aspirin.", "I have a headache") == 0.0  # `when`
    assert r.risk_hits("Just double the dose and stop taking your medication.") == ["double_dose", "stop_medication"]
    assert r.risk("Just double the dose and stop taking your medication.") == pytest.approx(1.0)  # capped
    assert r.risk("Take ibuprofen.", "I'm pregnant with a headache") == pytest.approx(0.8)


def test_custom_rules_file_is_validated_with_the_entry_named(tmp_path):
    good = json.loads(load_rules().model_dump_json())
    bad = {**good, "risk_patterns": [{"name": "x", "pattern": "(unclosed", "weight": 0.5}]}
    p = tmp_path / "rules.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"risk_patterns\.0\.pattern: pattern is not a valid regular expression"):
        load_rules(p)
    p.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_rules(p)
    with pytest.raises(ConfigError, match="scoring.rules"):
        parse_request({"scoring": {"rules": str(tmp_path / "missing.json")}})
    mine = {
        **good,
        "version": "mine-1",
        "red_flags": [{"name": "bee", "triggers": ["bee sting"]}],
        "urgent_care": ["see a doctor today"],
    }
    p.write_text(json.dumps(mine))
    env = RewardEnv(settings=ScoringConfig(rules=str(p)))
    em = build_rewards(["emergency"], env)["emergency"]
    assert em(
        RewardBatch(questions=["bee sting on my arm", "bee sting"], answers=["See a doctor today.", "Ice it."])
    ) == [1.0, 0.0]


def test_fusion_formula_abstention_and_conflicts():
    w = {"chain": 0.35, "emergency": 0.25, "risk": -0.15, "teacher": 0.25}
    f = fuse({"chain": 1.0, "emergency": 1.0, "risk": 0.0, "teacher": 0.8}, w, 0.4)
    assert f.value == pytest.approx(0.35 + 0.25 + 0.25 * 0.8)  # the seed's R
    assert f.rules_score == pytest.approx(1.0) and not f.conflict
    f = fuse({"chain": 1.0, "emergency": None, "risk": 1.0, "teacher": 0.1}, w, 0.4)
    scale = 0.85 / 0.60  # the absent emergency weight is spread over chain and teacher
    assert f.value == pytest.approx((0.35 + 0.25 * 0.1) * scale - 0.15)
    assert f.rules_score == pytest.approx(1.0 - 0.15 / 0.85) and f.conflict
    assert fuse({"chain": None, "teacher": None}, {"chain": 1.0, "teacher": 1.0}, 0.4).value is None


def test_penalties_and_recursion_are_refused_in_requests():
    with pytest.raises(ConfigError, match="'risk' is a penalty"):
        parse_request({"irs_config": {"dw_config": {"initial_weights": {"risk": 1.0}}}})
    with pytest.raises(ConfigError, match="scoring.fusion.weights: 'risk' is a penalty"):
        parse_request({"scoring": {"fusion": {"weights": {"chain": 1, "risk": 0.2}}}})
    with pytest.raises(ConfigError, match="recursive reward 'rlaif'"):
        parse_request({"scoring": {"fusion": {"weights": {"rlaif": 1}}}})
    with pytest.raises(ConfigError, match="reward 'teacher' needs a `teacher` block"):
        parse_request({"irs_config": {"dw_config": {"initial_weights": {"teacher": 1.0}}}})
    with pytest.raises(ConfigError, match="teacher.api_key: unknown field"):  # keys never live in requests
        parse_request({"teacher": {"api_key": "sk-x"}})


def test_rlaif_without_teacher_scores_with_rules_only():
    env = RewardEnv(settings=ScoringConfig())
    r = build_rewards(["rlaif"], env)["rlaif"]
    q = "Crushing chest pain, what now?"
    vals = r(RewardBatch(questions=[q, q], answers=[THINK + "Call 911 now.", "Sleep it off and double the dose."]))
    assert vals[0] == pytest.approx(0.85)  # chain 1, emergency covered, no risk; teacher's share spread
    assert vals[1] == pytest.approx(-0.15 * 0.8)  # nothing earned; double_dose (weight 0.8) penalised
    assert r.conflicts == []  # no teacher, nothing to disagree with


@pytest.fixture
def teacher(monkeypatch, tmp_path):
    """A teacher speaking DeepSeek's wire format on 127.0.0.1 and its settings (cache in tmp_path)."""
    from irsflow.teacher import TeacherSettings
    from tests.support.fake_openai import FakeOpenAI

    with FakeOpenAI(api_key="sk-fusion") as srv:
        yield (
            srv,
            TeacherSettings(
                base_url=srv.base_url,
                api_key="sk-fusion",
                backoff_s=0.01,
                max_retries=1,
                cache_path=tmp_path / "cache.sqlite",
            ),
        )


def test_teacher_judges_under_the_samples_ids(teacher, tmp_path):
    from irsflow.loop.scoring import score_candidates
    from irsflow.teacher import JudgementCache

    srv, s = teacher
    env = RewardEnv(settings=ScoringConfig(), extras={"teacher": s})
    rewards = build_rewards(["rlaif"], env)
    q = "Crushing chest pain, what now?"
    rows = [
        {"id": "1:q7", "question": q, "context": "", "candidates": [THINK + "Call 911 now.", "Rest."]},
        {"id": "1:q9", "question": "Sore throat?", "context": "", "candidates": ["Tea.", "Rest."]},
    ]
    result = score_candidates(rows, rewards, {"rlaif": 1.0})
    judged = rewards["rlaif"].parts["teacher"].last
    assert [j.id for j in judged] == ["1:q7/0", "1:q7/1", "1:q9/0", "1:q9/1"]  # not batch positions
    assert srv.count == 4 and all(j.teacher_score == 0.75 for j in judged)
    assert result.matrix[0][0][0] == pytest.approx(0.35 + 0.25 + 0.25 * 0.75)
    JudgementCache(s.resolved_cache_path()).export_jsonl(tmp_path / "j.jsonl")
    assert {json.loads(line)["id"] for line in (tmp_path / "j.jsonl").read_text().splitlines()} == {
        "1:q7/0",
        "1:q7/1",
        "1:q9/0",
        "1:q9/1",
    }
    # a batch without ids (GRPO): ids from the content, a repeat told apart, one call per content
    r = build_rewards(["teacher"], env)["teacher"]
    r(RewardBatch(questions=["Why?", "Why?"], answers=["New answer.", "New answer."]))
    a, b = (j.id for j in r.last)
    assert a.startswith("answer-") and b == a + "#2" and srv.count == 5


def test_a_teacher_outage_fails_scoring_instead_of_fusing_rules_alone(teacher):
    from irsflow.retry import failure_kind
    from irsflow.teacher import TeacherUnavailable

    srv, s = teacher
    srv.default = {"kind": "status", "status": 503}
    batch = RewardBatch(
        questions=["Crushing chest pain, what now?"] * 2,
        answers=[THINK + "Call 911 now.", "Sleep it off and double the dose."],
    )
    fused = build_rewards(["rlaif"], RewardEnv(settings=ScoringConfig(), extras={"teacher": s}))["rlaif"]
    with pytest.raises(TeacherUnavailable, match="2 of 2 judgements failed") as err:
        fused(batch)
    assert err.value.failed == 2 and failure_kind(err.value) == "transient" and srv.count == 4  # 1 retry each
    # a report that records failures instead gets the rules-only values, as with no teacher at all
    recorded = build_rewards(
        ["rlaif"], RewardEnv(settings=ScoringConfig(), extras={"teacher": s, "teacher_allow_failures": True})
    )["rlaif"]
    assert recorded(batch) == pytest.approx([0.85, -0.15 * 0.8])
    assert [j.status for j in recorded.parts["teacher"].last] == ["failed", "failed"]
    # a share of failures may be allowed
    srv.default = {"kind": "ok"}
    srv.route = lambda req: (
        {"kind": "status", "status": 503} if "double the dose" in req["messages"][1]["content"] else None
    )
    lenient = s.model_copy(update={"max_failed_share": 0.5})
    vals = build_rewards(["rlaif"], RewardEnv(settings=ScoringConfig(), extras={"teacher": lenient}))["rlaif"](batch)
    assert vals[0] == pytest.approx(0.35 + 0.25 + 0.25 * 0.75) and vals[1] == pytest.approx(-0.15 * 0.8)
