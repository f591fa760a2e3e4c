"""Generation on the tiny model: batching, shared prefill, seeding, recorded settings."""

import pytest
import torch

from irsflow.config import TrainRequest
from irsflow.dataset import load_questions
from irsflow.errors import ConfigError
from irsflow.loop.generate import build_messages, generate_candidates, prefill_cache
from irsflow.models import check_4bit, cuda_available, load_model, load_tokenizer, stop_token_ids

REQ = TrainRequest()


def test_prompt_carries_top_k_contexts():
    q = load_questions("builtin:demo", 1)[0]
    msgs = build_messages(q, 2, "Be brief.")
    assert msgs[0]["role"] == "system" and msgs[1] == {"role": "user", "content": q.question}
    assert "[1] " + q.contexts[0] in msgs[0]["content"] and "[2] " + q.contexts[1] in msgs[0]["content"]
    assert q.contexts[2] not in msgs[0]["content"]
    assert build_messages(q, 0, "Be brief.")[0]["content"] == "Be brief."


def test_shared_prefill_matches_plain_generate(tiny_model):
    """Greedy decoding from the copied prompt cache equals decoding with the prompt repeated."""
    tok, model = load_tokenizer(str(tiny_model)), load_model(str(tiny_model)).eval()
    qs = load_questions("builtin:demo", 3)
    texts = [
        tok.apply_chat_template(build_messages(q, k, "s"), tokenize=False, add_generation_prompt=True)
        for q, k in zip(qs, (3, 1, 2))
    ]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = enc["input_ids"].repeat_interleave(2, 0), enc["attention_mask"].repeat_interleave(2, 0)
    common = dict(do_sample=False, max_new_tokens=10, pad_token_id=tok.pad_token_id, eos_token_id=stop_token_ids(tok))
    with torch.inference_mode():
        plain = model.generate(input_ids=ids, attention_mask=mask, **common)
        cache = prefill_cache(model, enc["input_ids"], enc["attention_mask"], 2)
        shared = model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache, **common)
    assert torch.equal(plain, shared)


def test_candidates_are_seeded_and_record_their_settings(tiny_model):
    qs = load_questions("builtin:demo", 3)
    kw = dict(
        n_candidates=3,
        max_new_tokens=12,
        sampling=REQ.shared.sampling,
        seed=5,
        iteration=1,
        gen_batch_size=2,
        top_k=1,
        system_prompt="s",
    )
    rows, stats = generate_candidates(str(tiny_model), None, qs, **kw)
    again, _ = generate_candidates(str(tiny_model), None, qs, **kw)
    other, _ = generate_candidates(str(tiny_model), None, qs, **{**kw, "seed": 6})
    texts = lambda rs: [c["text"] for r in rs for c in r["candidates"]]  # noqa: E731
    assert texts(rows) == texts(again) and texts(rows) != texts(other)
    assert [len(r["candidates"]) for r in rows] == [3, 3, 3]
    s = rows[0]["sampling"]
    assert (s["temperature"], s["top_p"], s["max_new_tokens"], s["do_sample"]) == (0.9, 0.95, 12, True)
    assert rows[0]["sampling"]["seed"] != rows[2]["sampling"]["seed"]  # second batch, own seed
    assert all(
        0 < c["n_tokens"] <= 12 and c["finish_reason"] in ("stop", "length") for r in rows for c in r["candidates"]
    )
    assert stats["new_tokens"] > 0 and stats["mem_after_release"] > 0


@pytest.mark.skipif(cuda_available(), reason="checks the CPU refusal")
def test_4bit_is_refused_on_cpu_with_a_clear_message():
    with pytest.raises(ConfigError, match="irs_config.load_in_4bit: 4-bit loading needs a CUDA GPU"):
        check_4bit(True)
    check_4bit(False)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")
def test_4bit_loads_nf4_on_cuda(tiny_model):
    model = load_model(str(tiny_model), load_in_4bit=True)
    assert getattr(model, "is_loaded_in_4bit", False)
