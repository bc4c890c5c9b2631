"""A tiny causal LM and tokenizer built from scratch, offline, in well under a second.

Tests use it for the real transformers code paths (KV cache, sliding windows, offsets) without the real model.
"""

from __future__ import annotations

import functools
from pathlib import Path

CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "The answer is 72. Let's think step by step about the question before answering it.",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.",
    "Question: How many clips did Natalia sell altogether in April and May?",
    "Betty is saving money for a new wallet which costs $100. Her parents give her $15.",
    "https://example.com/path user_id camelCase snake_case 3.14 1,000 2026-11-23",
]


@functools.lru_cache(maxsize=None)
def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<bos>", "<eos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_model(max_positions: int = 4096, sliding_window: int = 16, seed: int = 0):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        vocab_size=len(tiny_tokenizer()), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=max_positions,
        sliding_window=sliding_window, layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        bos_token_id=1, eos_token_id=2, pad_token_id=0, attn_implementation="eager",
    )
    generator = torch.Generator().manual_seed(seed)
    model = Gemma3ForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return model.eval()


def save_tiny_model(path: Path, **kwargs) -> Path:
    """Write the tiny model and tokenizer as a local HF directory (for code that loads by path)."""
    tiny_model(**kwargs).save_pretrained(str(path))
    tiny_tokenizer().save_pretrained(str(path))
    return path


def tiny_scorer(**kwargs):
    from lingua_compress.models import LoadedModel
    from lingua_compress.scoring import CausalLMScorer

    loaded = LoadedModel(tiny_model(**kwargs), tiny_tokenizer(), "tiny", "cpu", False)
    return CausalLMScorer(loaded=loaded)
