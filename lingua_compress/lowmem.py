"""The fp32 path with the token-embedding table kept in bf16.

On a CPU without native bf16 the scorer computes in fp32, where Gemma 3 270M's 262k x 640 embedding table (170M of its
268M parameters) would take 670 MB. It needs no fp32 storage: its rows are only gathered (the input embedding) and,
through the tied output head, the scorer reads the restricted softmax's rows, which it copies to fp32 once. A bf16 row
cast to fp32 is exact when the checkpoint stores bf16 (the embedded default's cache does), so scores do not change.
Such a checkpoint is also loaded in bf16 and the rest upcast, which skips from_pretrained's fp32 load peak (measured
on the default scorer: 2.0 GB for an fp32 load, 1.0 GB for this).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .errors import ConfigError

# Below this the table is small, and the scorer's softmax runs over all of it (an fp32 copy of the whole table).
BIG_VOCAB = 65536


class Bf16Embedding(nn.Module):
    """An input embedding stored in bf16 that returns rows in the compute dtype, scaled there (Gemma's sqrt(d))."""

    def __init__(self, weight: nn.Parameter, compute_dtype: torch.dtype, scale: float | None,
                 padding_idx: int | None = None) -> None:
        super().__init__()
        self.weight = weight
        self.compute_dtype = compute_dtype
        self.padding_idx = padding_idx
        self.scaled = scale is not None
        # The fp32 model scales by the fp32 value; a buffer made at a bf16 load holds it rounded (25.25, not 25.298).
        self.register_buffer("embed_scale", torch.tensor(scale or 1.0, dtype=compute_dtype), persistent=False)

    @property
    def num_embeddings(self) -> int:
        return int(self.weight.shape[0])

    @property
    def embedding_dim(self) -> int:
        return int(self.weight.shape[1])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(input_ids, self.weight, self.padding_idx).to(self.compute_dtype)
        return rows * self.embed_scale if self.scaled else rows


class CastingHead(nn.Module):
    """The tied output head over the bf16 table, for callers of the whole LM (a LocalLLM sharing the scorer's model).
    The scorer never calls it (it reads rows itself). The first call makes the fp32 copy a plain fp32 model holds
    and keeps it: casting the table per call was measured 9x slower than the fp32 head, per generated token."""

    def __init__(self, weight: nn.Parameter) -> None:
        super().__init__()
        self.weight = weight
        self._cast: torch.Tensor | None = None  # not a buffer: never saved, and absent until generation needs it

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._cast is None or self._cast.dtype != hidden.dtype or self._cast.device != hidden.device:
            self._cast = self.weight.detach().to(hidden.dtype)
        return F.linear(hidden, self._cast)


def load_causal_lm(path: str, dtype: torch.dtype, local_files_only: bool, mode: bool | None,
                   attention: str = "eager") -> Any:
    """``from_pretrained`` in ``dtype`` with the ``attention`` kernel; on the fp32 path with ``mode`` None (auto: only
    where exact and worth it) or True (always; rounds an fp32 checkpoint's table), the embedding table is kept in
    bf16."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"attn_implementation": attention, "trust_remote_code": False,
                              "local_files_only": local_files_only}
    if mode is False or dtype != torch.float32:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    if _stores_bf16(path, kwargs, need_big_vocab=mode is None):
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, **kwargs)
        if _upcast_all_but_table(lm, dtype):
            return lm
        del lm  # this model would not match its fp32 load exactly: load it as usual
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    if mode:
        store_embedding_bf16(lm)
    return lm


def store_embedding_bf16(lm: Any) -> None:
    """Keep ``lm``'s (fp32) embedding table in bf16, rounding it; the tied head shares the bf16 table."""
    if not _wrappable(lm):
        raise ConfigError(f"bf16_embedding=True: {type(lm.get_input_embeddings()).__name__} embeddings (or this "
                          "model's head) are not supported; leave bf16_embedding unset (auto)")
    _wrap(lm, torch.float32)


def _stores_bf16(path: str, kwargs: dict[str, Any], need_big_vocab: bool) -> bool:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, **kwargs)
    stored = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)).replace("torch.", "")
    big = int(getattr(config, "vocab_size", 0) or 0) > BIG_VOCAB
    return stored == "bfloat16" and (big or not need_big_vocab)


def _scale(emb: Any) -> float | None:
    # Gemma 3's scaled embedding keeps the exact value here; its buffer may have been made in bf16.
    scale = getattr(emb, "scalar_embed_scale", None)
    return float(scale) if isinstance(scale, (int, float)) else None


def _wrappable(lm: Any) -> bool:
    """A plain embedding or Gemma's scaled one (their forward we reproduce), and a tied head without a bias."""
    emb, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    known = type(emb) is nn.Embedding or (isinstance(emb, nn.Embedding) and _scale(emb) is not None)
    tied = head is not None and head.weight is emb.weight
    return known and (not tied or getattr(head, "bias", None) is None)


def _upcast_all_but_table(lm: Any, dtype: torch.dtype) -> bool:
    """Upcast a bf16 load to ``dtype`` except the embedding table; False (nothing changed) where the result would
    differ from loading in ``dtype``: a buffer computed in bf16 at construction, or an embedding we cannot wrap."""
    emb = lm.get_input_embeddings()
    if not _wrappable(lm):
        return False
    own_scale = getattr(emb, "embed_scale", None)
    if any(b.is_floating_point() and b.dtype != dtype and b is not own_scale for b in lm.buffers()):
        return False
    from .cpu_kernels import evict_file_pages, file_mappings

    mappings = file_mappings()
    with torch.no_grad():
        for p in lm.parameters():  # tied parameters are listed once
            if p is not emb.weight:
                stored, p.data = p.data, p.data.to(dtype)
                # Reading a zero-copy weight to upcast it left its file pages resident (+190 MB for the default).
                evict_file_pages(stored, mappings)
                del stored
    _wrap(lm, dtype)
    return True


def shed_tokenizer_sources(tokenizer: Any) -> None:
    """Drop the Python copies of a fast tokenizer's vocabulary and merges that some transformers tokenizer classes
    keep after building their Rust backend from them (only their constructor reads them). For the default scorer's
    262k-entry vocabulary and 515k merges that is 200 MB of Python objects, and glibc keeps the JSON parse's freed
    heap besides (another 55 MB) until trimmed. Tokenization is unchanged: the backend holds its own copy."""
    from .cpu_kernels import release_freed_memory

    if getattr(tokenizer, "is_fast", False) and getattr(tokenizer, "_tokenizer", None) is not None:
        for name, empty in (("_vocab", dict), ("_merges", list)):
            if isinstance(getattr(tokenizer, name, None), empty):
                setattr(tokenizer, name, empty())
    release_freed_memory()


def _wrap(lm: Any, dtype: torch.dtype) -> None:
    emb = lm.get_input_embeddings()
    head = lm.get_output_embeddings()
    tied = head is not None and head.weight is emb.weight
    table = nn.Parameter(emb.weight.detach().to(torch.bfloat16), requires_grad=False)
    lm.set_input_embeddings(Bf16Embedding(table, dtype, _scale(emb), emb.padding_idx))
    if tied:
        lm.set_output_embeddings(CastingHead(table))
