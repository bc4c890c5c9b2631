"""Did alignment do anything? The scorer's perplexity on held-out target responses, and how much of what
``compress()`` keeps changes with the adapter.

Lower held-out perplexity means the scorer predicts the target's text better (the point of alignment); the kept
overlap says how much that changes the compression itself (1.0: the same tokens kept, the adapter is moot).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import ConfigError
from .loss import collate, encode_pair, response_nll
from .pairs import Pair

if TYPE_CHECKING:
    from ..api import Compressor
    from ..models import LoadedModel


def perplexity(loaded: LoadedModel, pairs: Sequence[Pair], *, max_length: int = 512,
               batch_size: int = 4) -> dict[str, float | int]:
    """Mean NLL (nats) and perplexity of the response tokens of ``pairs`` (the same tokens tuning trains on)."""
    import torch

    if not pairs:
        raise ConfigError("perplexity needs at least one prompt/response pair")
    examples = [encode_pair(loaded.tokenizer, p, max_length) for p in pairs]
    pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    total, tokens = 0.0, 0
    was_training = loaded.model.training
    loaded.model.eval()  # no LoRA dropout while measuring
    try:
        with torch.inference_mode():
            for i in range(0, len(examples), batch_size):
                nll, n = response_nll(loaded.model, collate(examples[i:i + batch_size], pad, loaded.device))
                total, tokens = total + float(nll), tokens + n
    finally:
        loaded.model.train(was_training)
    mean = total / max(tokens, 1)
    return {"mean_nll": round(mean, 5), "perplexity": round(math.exp(min(mean, 700.0)), 4), "tokens": tokens,
            "pairs": len(examples)}


def compare_perplexity(loaded: LoadedModel, pairs: Sequence[Pair], adapter: str, **kwargs: Any) -> dict[str, Any]:
    """Perplexity on ``pairs`` before and after merging ``adapter`` into ``loaded`` (its weights change in place:
    one model in memory, not two)."""
    from dataclasses import replace

    from .load import apply_adapter

    before = perplexity(loaded, pairs, **kwargs)
    aligned = replace(loaded, model=apply_adapter(loaded.model, adapter, loaded.name), adapter=str(adapter))
    after = perplexity(aligned, pairs, **kwargs)
    return {"before": before, "after": after, "nll_change": round(after["mean_nll"] - before["mean_nll"], 5)}


def kept_overlap(prompts: Sequence[str], ratio: float, base: Compressor, aligned: Compressor) -> dict[str, Any]:
    """Jaccard overlap of the non-space characters that ``compress(prompt, ratio)`` keeps with ``base`` and with
    ``aligned``, per prompt and on average (characters, not tokens: the two runs may split words differently)."""
    if not prompts:
        raise ConfigError("kept_overlap needs at least one prompt")
    per_prompt = [_jaccard(_kept_chars(p, base, ratio), _kept_chars(p, aligned, ratio)) for p in prompts]
    return {"ratio": ratio, "mean": round(sum(per_prompt) / len(per_prompt), 4),
            "per_prompt": [round(x, 4) for x in per_prompt]}


def _kept_chars(prompt: str, compressor: Compressor, ratio: float) -> set[int]:
    result = compressor.compress(prompt, ratio)
    return {i for s, e in result.kept_spans for i in range(s, e) if not prompt[i].isspace()}


def _jaccard(a: set[int], b: set[int]) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)
