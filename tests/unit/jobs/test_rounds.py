"""The job loop without a model: a stand-in round writes what a real one would (its held-out summary
and an adapter), and ``run_job`` runs rounds until the last or an early stop, lets a rerun override
that stop, copies the best round's adapter to ``checkpoints/final`` and returns the dict the flow
returns; a round's scores come from the phase that scored (SCORING, or GRPO's TRAINING)."""

import pytest

from irsflow.config import parse_request
from irsflow.evals.heldout import heldout_path
from irsflow.jobs.charts import iteration_row
from irsflow.jobs.results import RoundResult
from irsflow.jobs.rounds import run_job
from irsflow.loop import EVALUATING, GENERATING, SCORING, TRAINING
from irsflow.store import JobStore, atomic_write_json

# held-out reward of round 0 (the start model), then of each round: no gain after round 2
HELDOUT = [0.5, 0.6, 0.7, 0.65, 0.64]


def held(round_: int) -> dict:
    return {
        "round": round_,
        "reward": HELDOUT[round_],
        "rewards": {"conc": HELDOUT[round_]},
        "distinct_2": 0.5,
        "mean_words": 20.0,
        "n_questions": 4,
        "seconds": 1.0,
    }


@pytest.fixture()
def job(data_dir):
    req = parse_request({"irs_config": {"n_iterations": 4}, "early_stop": {"patience": 1, "min_gain": 0.01}})
    store = JobStore("unit-rounds")
    store.create({"job_id": store.job_id, "request": req.model_dump(mode="json")})
    return store, req


def stand_in(store: JobStore, ran: list[int]):
    """A round as the flow's would end it: the held-out answers' summaries and an adapter on disk."""

    def run_round(it: int) -> RoundResult:
        ran.append(it)
        for r in [0, it] if it == 1 else [it]:
            atomic_write_json(heldout_path(store, r), {**held(r), "answers": []})
        store.checkpoint(it).mkdir(parents=True)
        (store.checkpoint(it) / "adapter_model.safetensors").write_text(f"round {it}")
        scores = {
            "avg_reward": 0.1 * it,
            "reward_breakdown": {"conc": 0.1 * it},
            "weights": {"conc": 1.0},
            "next_weights": {"conc": 1.0},
            "seconds": 0.5,
        }
        return RoundResult(
            iteration=it,
            stage="IRS",
            cached=(GENERATING,) if it == 1 else (),
            phases={
                GENERATING: {"seconds": 1.0},
                SCORING: scores,
                TRAINING: {"loss": 0.25, "seconds": 2.0},
                EVALUATING: {
                    "seconds": 1.0,
                    "path": str(heldout_path(store, it)),
                    "heldout": held(it),
                    **({"heldout_start": held(0)} if it == 1 else {}),
                },
            },
        )

    return run_round


def test_a_job_stops_when_the_heldout_reward_stops_rising_and_keeps_its_best_round(job):
    store, req = job
    ran, seen = [], []
    result = run_job(store, req, stand_in(store, ran), on_round=lambda r, rows: seen.append((r.iteration, len(rows))))
    assert ran == [1, 2, 3] and seen == [(1, 1), (2, 2), (3, 3)]
    assert result.final_round == 2 and result.stopped_early.startswith("no gain")
    assert (store.checkpoint("final") / "adapter_model.safetensors").read_text() == "round 2"
    out = result.to_dict()
    assert set(out) == {
        "job_id",
        "stage",
        "job_dir",
        "final_adapter",
        "final_round",
        "stopped_early",
        "iterations",
        "gpu_seconds",
    }
    assert out["job_dir"] == str(store.dir) and out["final_adapter"] == str(store.checkpoint("final"))
    assert out["gpu_seconds"] == 3 * (1.0 + 2.0 + 1.0)  # generate, train, evaluate: scoring runs on the CPU
    first = out["iterations"][0]
    assert first == {
        "iter": 1,
        "avg_reward": 0.1,
        "reward_breakdown": {"conc": 0.1},
        "weights_used": {"conc": 1.0},
        "weights": {"conc": 1.0},
        "loss": 0.25,
        "cached": [GENERATING],
        "eval": str(heldout_path(store, 1)),
        "heldout": held(1),
    }
    assert store.read_status()["final_round"] == 2


def test_a_rerun_forcing_a_later_round_is_not_stopped_before_it(job):
    store, req = job
    ran = []
    result = run_job(store, req, stand_in(store, ran), from_phase=TRAINING, from_iteration=4)
    assert ran == [1, 2, 3, 4] and result.final_round == 2
    assert result.stopped_early.startswith("no gain")  # after round 4 nothing overrides it


def test_a_round_without_a_scoring_phase_reads_its_scores_from_training():
    grpo = RoundResult(
        iteration=2,
        stage="GRPO",
        phases={
            TRAINING: {
                "loss": 0.5,
                "seconds": 3.0,
                "avg_reward": 0.4,
                "reward_breakdown": {"conc": 0.4},
                "weights": {"conc": 1.0},
                "next_weights": {"conc": 1.0},
            }
        },
    )
    assert grpo.scores["avg_reward"] == 0.4 and grpo.gpu_seconds == 3.0 and grpo.heldout is None
    row = iteration_row(grpo)
    assert row["avg_reward"] == 0.4 and row["r_conc"] == 0.4 and row["cached"] == "-" and "generate_s" not in row
    assert RoundResult.from_dict(grpo.to_dict()) == grpo  # through the iteration flow's dict and back
    assert set(grpo.to_dict()) == {"iteration", "stage", "cached", "train"}
    # a stage that neither samples nor scores has no reward figures
    assert RoundResult(iteration=1, stage="IRS", phases={TRAINING: {"loss": 0.5, "seconds": 1.0}}).scores == {}
