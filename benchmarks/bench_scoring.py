"""Scoring-phase cost vs. the encoding floor (CPU, MiniLM bi-encoder).

Workload: the 24 demo questions x 8 distinct, realistic candidate answers each (sentences taken
from the question's contexts and reference, recombined with varied openers), the context being
the joined top-k contexts (``TrainRequest().top_k``).

    A  full scoring: ``score_candidates`` with the rewards rel, faith (embedding mode) and conc,
       built on a fresh ``EmbeddingSimilarity`` (empty cache) every repeat. The SentenceTransformer
       is loaded once, outside the timing, and wrapped anew each repeat.
    B  the floor: one ``model.encode(unique_texts, batch_size=64, normalize_embeddings=True)``
       over the deduplicated questions + joined contexts + answers.
    C  naive per-candidate scoring: for every candidate, one ``model.encode`` of its question,
       context and answer (no deduplication, no cross-candidate batching). Timed on all 24
       questions; ``--c-questions K`` times it on the first K questions only and scales the time
       linearly to 24 (its cost is linear in the number of candidates), for very slow machines.

Each of A, B, C runs 3 times, interleaved (A B C, A B C, A B C); the medians are reported.
Target: A / B <= 1.3. Figures also go to ``benchmarks/out/bench_scoring.json``.

Threads: torch runs with ``--threads`` intra-op threads, 1 by default. On a shared 2-core machine
two OpenMP threads stall whenever another process holds a core: each parallel matmul then waits
for a scheduler slice (measured here under load 5: a [16x576]@[576x1536] matmul took 17 ms with
2 threads and 0.4 ms with 1), which swamps the comparison. ``--threads 0`` keeps torch's default.

Run (from the repository root, about 2.5 minutes on 2 busy CPU cores):

    HF_HUB_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false .venv/bin/python benchmarks/bench_scoring.py
"""

from __future__ import annotations

import os

from _bench import add_threads_arg, isolate, run, set_threads

_TMP = isolate("scoring")

import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

N_QUESTIONS = 24
N_CANDIDATES = 8
REPEATS = 3
OUT = Path(__file__).resolve().parent / "out" / "bench_scoring.json"

_OPENERS = [
    "",
    "In short, ",
    "Put simply, ",
    "Based on the context, ",
    "The main reason is this: ",
    "Briefly: ",
    "To answer the question, ",
    "Essentially, ",
]


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:] if s else s


def make_candidates(q, n: int, rng: random.Random) -> list[str]:
    """n distinct answers assembled from the question's reference and context sentences."""
    ref = q.reference or ""
    pool = [s for c in q.contexts for s in _sentences(c)]
    ref_sents = _sentences(ref) or pool[:1]
    out: list[str] = []
    seen: set[str] = set()
    attempt = 0
    while len(out) < n:
        kind = attempt % 5
        picks = rng.sample(pool, k=min(len(pool), 1 + attempt % 3)) if pool else []
        if kind == 0:
            body = " ".join(ref_sents)
        elif kind == 1:
            body = " ".join(ref_sents[:1] + picks[:1])
        elif kind == 2:
            body = " ".join(picks)
        elif kind == 3:
            body = " ".join(picks[:1] + ref_sents[-1:])
        else:
            body = f'The answer to "{q.question}" is that {_lower_first(ref_sents[0])}'
        opener = _OPENERS[(attempt + rng.randrange(len(_OPENERS))) % len(_OPENERS)]
        text = (opener + _lower_first(body)) if opener else body
        if text not in seen:
            seen.add(text)
            out.append(text)
        attempt += 1
    return out


def main(argv: list[str] | None = None) -> dict:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_threads_arg(ap)
    ap.add_argument(
        "--c-questions",
        type=int,
        default=N_QUESTIONS,
        help="time the naive variant C on the first K questions and scale to all (default: all)",
    )
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)

    from irsflow.config import TrainRequest
    from irsflow.dataset import load_questions
    from irsflow.loop.scoring import score_candidates
    from irsflow.rewards import RewardEnv, build_rewards
    from irsflow.rewards.similarity import EmbeddingSimilarity, load_similarity

    req = TrainRequest()
    settings = req.scoring
    assert settings.faith == "embedding", settings
    weights = {"rel": 1.0, "faith": 1.0, "conc": 0.5}

    questions = load_questions("builtin:demo", N_QUESTIONS)
    rng = random.Random(0)
    rows = [
        {
            "question": q.question,
            "context": "\n\n".join(q.top_contexts(req.top_k)),
            "reference": q.reference,
            "candidates": make_candidates(q, N_CANDIDATES, rng),
        }
        for q in questions
    ]
    n_items = sum(len(r["candidates"]) for r in rows)
    unique = list(
        dict.fromkeys(
            [r["question"] for r in rows]
            + [r["context"] for r in rows if r["context"]]
            + [a for r in rows for a in r["candidates"]]
        )
    )

    t = time.perf_counter()
    backend = load_similarity(settings)
    load_s = time.perf_counter() - t
    if not isinstance(backend, EmbeddingSimilarity):
        raise SystemExit("the embedding backend could not be loaded; this benchmark needs MiniLM")
    st = backend.model
    batch_size = backend.batch_size
    # Warm-up (first-call allocations, thread pools), not timed.
    st.encode(unique[:64], batch_size=64, normalize_embeddings=True, show_progress_bar=False)

    def run_a():
        sim = EmbeddingSimilarity(st, batch_size=batch_size)
        env = RewardEnv(settings=settings, similarity=sim)
        t0 = time.perf_counter()
        rewards = build_rewards(list(weights), env)
        result = score_candidates(rows, rewards, weights)
        dt = time.perf_counter() - t0
        return dt, {"encoded": sim.encoded, "avg_reward": result.avg_reward, "means": result.means}

    def run_b():
        t0 = time.perf_counter()
        st.encode(unique, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        return time.perf_counter() - t0, {"encoded": len(unique)}

    c_rows = rows[: max(1, min(args.c_questions, len(rows)))]
    c_items = sum(len(r["candidates"]) for r in c_rows)
    c_scale = n_items / c_items

    def run_c():
        t0 = time.perf_counter()
        for r in c_rows:
            for a in r["candidates"]:
                st.encode(
                    [r["question"], r["context"], a], batch_size=64, normalize_embeddings=True, show_progress_bar=False
                )
        return (time.perf_counter() - t0) * c_scale, {"encoded": 3 * c_items}

    times = {"A": [], "B": [], "C": []}  # C: scaled to all N_QUESTIONS
    info = {}
    for rep in range(REPEATS):
        for name, fn in (("A", run_a), ("B", run_b), ("C", run_c)):
            dt, extra = fn()
            times[name].append(dt)
            info[name] = extra
            scaled = " (scaled)" if name == "C" and c_scale != 1 else ""
            print(f"  repeat {rep + 1}: {name} {dt:.3f}s{scaled}", flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio_ab = med["A"] / med["B"]
    ratio_ca = med["C"] / med["A"]
    report = {
        "benchmark": "scoring",
        "machine": {"cpus": os.cpu_count(), "torch_threads": threads, "platform": platform.platform()},
        "workload": {
            "questions": len(rows),
            "candidates_per_question": N_CANDIDATES,
            "items": n_items,
            "unique_texts": len(unique),
            "top_k": req.top_k,
            "rewards": weights,
            "faith": settings.faith,
            "embedder": settings.embedder,
            "batch_size": batch_size,
        },
        "embedder_load_seconds": load_s,
        "repeats": REPEATS,
        "seconds": times,
        "median_seconds": med,
        "texts_encoded": {k: v["encoded"] for k, v in info.items()},
        "c_measured_on": {
            "questions": len(c_rows),
            "items": c_items,
            "scale_to_full": c_scale,
            "median_seconds_measured": med["C"] / c_scale,
        },
        "a_result": {"avg_reward": info["A"]["avg_reward"], "means": info["A"]["means"]},
        "ratio_a_over_b": ratio_ab,
        "ratio_c_over_a": ratio_ca,
        "target_a_over_b": 1.3,
        "meets_target": ratio_ab <= 1.3,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")

    print()
    print(
        f"scoring benchmark: {len(rows)} questions x {N_CANDIDATES} candidates = {n_items} items, "
        f"{len(unique)} unique texts"
    )
    print(f"  rewards rel, faith (embedding), conc; MiniLM on CPU, {threads} torch thread(s); medians of {REPEATS}")
    print(
        f"  A full scoring (score_candidates, fresh cache): median {med['A']:.3f}s  "
        f"({info['A']['encoded']} texts encoded)"
    )
    print(f"  B floor (unique texts, one encode call):        median {med['B']:.3f}s  ({len(unique)} texts)")
    c_note = f"; measured {med['C'] / c_scale:.3f}s on {c_items} candidates, x{c_scale:g}" if c_scale != 1 else ""
    print(f"  C naive per-candidate (q+ctx+answer each):       median {med['C']:.3f}s  ({3 * n_items} texts{c_note})")
    print(f"  naive / full scoring  C/A = {ratio_ca:.2f}x")
    print(f"  wrote {OUT}")
    print(
        f"ratio A/B (full scoring / encoding floor) = {ratio_ab:.3f}  (target <= 1.3: "
        f"{'met' if ratio_ab <= 1.3 else 'NOT met'})"
    )
    return report


if __name__ == "__main__":
    run(main, _TMP)
