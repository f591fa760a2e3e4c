"""A tiny random chat model for fast tests and benchmarks: a Qwen2-shaped causal LM (64 hidden,
2 layers by default) and a byte-level BPE tokenizer trained in milliseconds, with a ChatML
template whose assistant turns are wrapped in ``{% generation %}`` (for assistant-only loss).

    python -m irsflow.models.tiny /tmp/tiny-model
    irsflow build-tiny /tmp/tiny-model

Real shapes for GPU measurements: ``build_tiny_model(path, hidden=1536, layers=28, ...)``.
"""

from __future__ import annotations

import string
import sys
from pathlib import Path

CHATML = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"  # noqa: E501
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Answer the question concisely using the context when it is relevant.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "A budget lists income and expenses for a month.",
    "You are a helpful assistant.",
]


def build_tokenizer(vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    # Only printable ASCII in the alphabet: a random model then cannot emit invalid UTF-8 byte
    # fragments, whose decoded U+FFFD would re-encode differently and blur what SFT learns.
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(_CORPUS * 20 + [string.printable], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    fast.chat_template = CHATML
    return fast


def build_tiny_model(
    path: str | Path,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    init_range: float = 0.1,
    intermediate: int | None = None,
    vocab_size: int = 512,
    seed: int = 0,
) -> Path:
    """Write a random-init Qwen2 model + tokenizer to ``path``; returns the path."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    tok = build_tokenizer(vocab_size)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate or hidden * 4,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        initializer_range=init_range,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


if __name__ == "__main__":
    print(build_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-model"))
