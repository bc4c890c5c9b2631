"""Typed results: numbers stay numbers; formatting is the caller's business."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class PartStats:
    """Token counts of one kind of prompt part (instruction, context or question)."""

    kind: str
    original_tokens: int
    compressed_tokens: int


@dataclass(frozen=True)
class Timings:
    """Wall seconds of one compression, model loading excluded."""

    total_s: float
    scoring_s: float
    scored_tokens: int  # tokens forwarded through the scoring model


@dataclass(frozen=True)
class Backend:
    """Where and in what precision the scoring model ran, and why: timings mean little without it (bf16 matmuls
    are ~100x slower on a CPU without native bf16, so ``dtype="auto"`` picks fp32 there)."""

    device: str  # torch device of the model: "cpu", "cuda:0", "mps"
    dtype: str  # compute dtype: "float32", "bfloat16" or "float16"
    cpu_bf16: str  # this CPU's native-bf16 feature, "amx_bf16", "avx512_bf16" or "none"; auto picks bf16 on a CPU
    # only where it is not "none"
    requested: str  # the dtype asked for: "auto" or an override; "given" for a model handed in already loaded
    embedding_dtype: str  # storage of the token-embedding table: bf16 on the fp32 CPU path saves ~335 MB
    linear_kernel: str = "aten"  # "onednn-packed": the CPU path's linear layers run on prepacked weights
    attention: str = "eager"  # the attention kernel: "eager", or torch's fused "sdpa" (Compressor(attention=...))

    def __str__(self) -> str:
        table = f", embedding {self.embedding_dtype}" if self.embedding_dtype != self.dtype else ""
        kernel = f", {self.linear_kernel}" if self.linear_kernel != "aten" else ""
        attention = f", {self.attention} attention" if self.attention != "eager" else ""
        return (f"{self.device}/{self.dtype}{table}{kernel}{attention} (requested {self.requested}; "
                f"cpu bf16: {self.cpu_bf16})")


class TokenSavings:
    """The ratios every result derives from its ``original_tokens`` and ``compressed_tokens``."""

    original_tokens: int
    compressed_tokens: int

    @property
    def kept_ratio(self) -> float:
        """Kept tokens / original tokens (1.0 for an empty prompt)."""
        return self.compressed_tokens / self.original_tokens if self.original_tokens else 1.0

    @property
    def compression(self) -> float:
        """Original tokens / kept tokens, e.g. 10.0 for 10x (inf if nothing was kept)."""
        if self.compressed_tokens == 0:
            return 1.0 if self.original_tokens == 0 else math.inf
        return self.original_tokens / self.compressed_tokens

    @property
    def saved_tokens(self) -> int:
        return self.original_tokens - self.compressed_tokens


@dataclass(frozen=True)
class CompressionResult(TokenSavings):
    """What ``compress`` returns. ``str(result)`` is the compressed text."""

    text: str
    original: str
    original_tokens: int
    compressed_tokens: int
    target_tokens: int
    kept_spans: tuple[tuple[int, int], ...]  # character spans of ``original`` that were kept, in order
    parts: tuple[PartStats, ...]
    tokenizer: str  # the tokenizer the counts are in
    timings: Timings
    backend: Backend | None = None  # None: a custom Scorer that does not say

    def __str__(self) -> str:
        return self.text

    def cost_saved(self, price_per_million_tokens: float) -> float:
        """Dollars saved on input tokens at the price you pass (no built-in price list)."""
        return self.saved_tokens * price_per_million_tokens / 1e6

    def recover(self, response: str) -> str:
        """``response`` (the target LLM's answer) with names it copied from the compressed text, where words inside
        were dropped ("New Yankees"), spelled as in the original ("New York Yankees"). See
        :func:`lingua_compress.recover`."""
        from .recovery import recover  # on use: results are built everywhere, recovery is rare

        return recover(self.original, self.text, response, kept_spans=self.kept_spans)

    def to_dict(self, include_original: bool = False) -> dict[str, Any]:
        """A JSON-ready dict with the derived ratios included."""
        data = asdict(self)
        if not include_original:
            data.pop("original")
        data["kept_spans"] = [list(span) for span in self.kept_spans]
        data["kept_ratio"] = self.kept_ratio
        data["compression"] = self.compression if math.isfinite(self.compression) else None
        return data
