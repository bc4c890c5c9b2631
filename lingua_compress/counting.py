"""Token counting in the tokenizer the budget is met in: the target LLM's if given, else the scorer's.

Budgets need two things: an exact count of a text, and an estimate of what each word unit costs, so that
selection can aim at the budget before the final count corrects the rest.
"""

from __future__ import annotations

import functools
import numbers
import os
from typing import Any, Callable, Iterable, Sized

import numpy as np

from .errors import ConfigError
from .models import load_local_first
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
    """A counter for ``target_tokenizer``, else the scorer's.

    Accepted: a Hugging Face tokenizer, or its name or local path (loaded from local files first, like the CLI's
    ``--target-tokenizer``); an object with ``encode(str)`` returning token ids (tiktoken and friends); a callable
    ``str -> tokens``.
    """
    if target_tokenizer is None:
        return TokenCounter(lambda t: len(scorer.tokenize(t)[0]), f"scorer:{scorer.name}", lambda t: scorer.tokenize(t)[1])
    # Before the ``encode`` test below: a str has one (str.encode) and would be asked to encode the prompt.
    target_tokenizer = resolve_tokenizer(target_tokenizer)
    if hasattr(target_tokenizer, "convert_tokens_to_ids") and callable(target_tokenizer):
        return _hf_counter(target_tokenizer)
    encode = getattr(target_tokenizer, "encode", None)
    if callable(encode):  # tiktoken.Encoding and friends
        name = str(getattr(target_tokenizer, "name", type(target_tokenizer).__name__))
        return TokenCounter(lambda t: _count_tokens(encode(t), f"{name}.encode", ids=True), name)
    if callable(target_tokenizer):
        name = str(getattr(target_tokenizer, "__name__", type(target_tokenizer).__name__))
        return TokenCounter(lambda t: _count_tokens(target_tokenizer(t), name, ids=False), name)
    raise ConfigError(
        f"target_tokenizer={target_tokenizer!r:.80} is not accepted: pass a Hugging Face tokenizer or its name or "
        "local path, an object with encode(str) -> list of token ids, or a callable str -> list of tokens"
    )


def _count_tokens(tokens: Any, who: str, ids: bool) -> int:
    """How many tokens a user tokenizer returned: any sized or iterable collection, materialised if need be."""
    if tokens is None or isinstance(tokens, (str, bytes, numbers.Number)) or not isinstance(tokens, Iterable):
        kind = type(tokens).__name__
        raise ConfigError(
            f"target_tokenizer {who}(text) returned {kind} {tokens!r:.40}; it must return a list of "
            + ("token ids (ints)" if ids else "tokens")
        )
    if not isinstance(tokens, Sized):
        tokens = list(tokens)  # a generator or other one-shot iterable
    if ids and isinstance(tokens, (list, tuple)):
        bad = next((t for t in tokens if isinstance(t, bool) or not isinstance(t, numbers.Integral)), None)
        if bad is not None:
            raise ConfigError(
                f"target_tokenizer {who}(text) returned a list holding {type(bad).__name__} {bad!r:.40}; "
                "encode must return token ids (ints)"
            )
    return len(tokens)


def resolve_tokenizer(target_tokenizer: Any) -> Any:
    """A tokenizer given by name or path, loaded; anything else as it is."""
    if isinstance(target_tokenizer, (str, os.PathLike)):
        return load_tokenizer(os.fspath(target_tokenizer))
    return target_tokenizer


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str) -> Any:
    """A Hugging Face tokenizer by hub name or local path: local files first, the hub only when reachable."""
    if not name:
        raise ConfigError("target_tokenizer='' is not accepted: give a Hugging Face tokenizer name or local path")

    def load(local_files_only: bool) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name, local_files_only=local_files_only, trust_remote_code=False)

    return load_local_first(load, name, "target_tokenizer")
