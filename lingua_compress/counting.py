"""Token counting in the tokenizer the budget is met in: the target LLM's if given, else the scorer's.

Budgets need two things: an exact count of a text, and an estimate of what each word unit costs, so that
selection can aim at the budget before the final count corrects the rest.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .errors import ConfigError
from .segment import Segmented


def first_visible(text: str, offsets: np.ndarray) -> np.ndarray:
    """Offset of each token's first non-space character (its end, for a whitespace-only token)."""
    firsts = np.empty(len(offsets), dtype=np.int64)
    for i, (s, e) in enumerate(offsets.tolist()):
        piece = text[s:e]
        firsts[i] = s + (len(piece) - len(piece.lstrip()))
    return firsts


def token_owners(text: str, offsets: np.ndarray, unit_start: np.ndarray, unit_end: np.ndarray,
                 firsts: np.ndarray | None = None) -> np.ndarray:
    """For each token, the unit holding its first non-space character; whitespace-only tokens go to the next
    unit. -1 where no unit follows."""
    if firsts is None:
        firsts = first_visible(text, offsets)
    owner = np.searchsorted(unit_end, firsts, side="right")
    owner[owner >= len(unit_end)] = -1
    return owner


class TokenCounter:
    """Counts tokens of a text, and estimates a cost per unit, with one tokenizer."""

    def __init__(self, count: Callable[[str], int], name: str, offsets: Callable[[str], Any] | None = None):
        self._count = count
        self._offsets = offsets
        self.name = name

    def count(self, text: str) -> int:
        return int(self._count(text)) if text else 0

    def unit_costs(self, seg: Segmented) -> np.ndarray:
        n = seg.n_units
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        if self._offsets is not None:
            offsets = np.asarray(self._offsets(seg.text), dtype=np.int64).reshape(-1, 2)
            owner = token_owners(seg.text, offsets, seg.unit_start, seg.unit_end)
            return np.bincount(owner[owner >= 0], minlength=n).astype(np.float64)
        # A plain callable: cost each unit with the whitespace before it, as it would appear in running text.
        prev_end = np.concatenate([[0], seg.unit_end[:-1]])
        return np.array(
            [self.count(seg.text[max(p, s - 1) : e]) for p, s, e in zip(prev_end, seg.unit_start, seg.unit_end)],
            dtype=np.float64,
        )


def _hf_counter(tok: Any) -> TokenCounter:
    name = str(getattr(tok, "name_or_path", "") or type(tok).__name__)

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    offsets = None
    if getattr(tok, "is_fast", False):

        def offsets(text: str) -> Any:
            return tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]

    return TokenCounter(count, name, offsets)


def make_counter(target_tokenizer: Any, scorer: Any) -> TokenCounter:
    """A counter for ``target_tokenizer`` (HF tokenizer, tiktoken-like ``encode``, or callable), else the scorer's."""
    if target_tokenizer is None:
        return TokenCounter(lambda t: len(scorer.tokenize(t)[0]), f"scorer:{scorer.name}", lambda t: scorer.tokenize(t)[1])
    if hasattr(target_tokenizer, "convert_tokens_to_ids") and callable(target_tokenizer):
        return _hf_counter(target_tokenizer)
    encode = getattr(target_tokenizer, "encode", None)
    if callable(encode):  # tiktoken.Encoding and friends
        name = str(getattr(target_tokenizer, "name", type(target_tokenizer).__name__))
        return TokenCounter(lambda t: len(encode(t)), name)
    if callable(target_tokenizer):
        name = getattr(target_tokenizer, "__name__", type(target_tokenizer).__name__)

        def count(text: str) -> int:
            tokens = target_tokenizer(text)
            if not isinstance(tokens, Sequence):
                raise ConfigError(f"target_tokenizer must return a list of tokens, got {type(tokens).__name__}")
            return len(tokens)

        return TokenCounter(count, str(name))
    raise ConfigError(
        f"target_tokenizer={target_tokenizer!r} is not accepted: pass a Hugging Face tokenizer, an object with "
        "encode(str) -> list, or a callable str -> list"
    )
