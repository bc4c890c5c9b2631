"""Cost accounting of a batched run against one-by-one calls, with and without the same compression.

All comparisons use one accounting tokenizer for both sides (the target's when it reports usage per call the
raw usage is kept too), so batching gains and compression gains show separately:

* ``vs_one_by_one``: batched prompt tokens / one-by-one prompt tokens with the uncompressed prefix,
* ``vs_one_by_one_compressed``: the same against one-by-one calls that send the same compressed prefix,
* ``batching_gain`` and ``compression_gain`` factor the total saving into its two causes.

Completion tokens are not reduced by batching; one-by-one baselines assume the same answers. Dollars only from
prices the caller passes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Sequence

from ..errors import ConfigError


@dataclass(frozen=True)
class Prices:
    """Dollars per million tokens, as your provider bills them."""

    input_per_million: float
    output_per_million: float

    def __post_init__(self) -> None:
        for name in ("input_per_million", "output_per_million"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"Prices.{name}={value!r} must be a number >= 0 (dollars per million tokens)")

    def usd(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million) / 1e6


@dataclass(frozen=True)
class CostReport:
    """Calls and tokens of a batched run and of its one-by-one baselines (token counts in ``tokenizer``)."""

    n_samples: int
    calls: int
    retry_calls: int
    prompt_tokens: int  # as billed: API usage where reported, else counted
    completion_tokens: int
    usage_source: str  # "api", "estimated" (counted by ``tokenizer``) or "mixed"
    counted_prompt_tokens: int  # in ``tokenizer``, comparable with the baselines
    counted_completion_tokens: int
    tokenizer: str
    prefix_tokens_original: int
    prefix_tokens: int
    baseline_calls: int
    baseline_prompt_tokens: int  # one by one, uncompressed prefix
    baseline_compressed_prompt_tokens: int  # one by one, the same compressed prefix
    usd: float | None = None
    baseline_usd: float | None = None

    @property
    def prompt_tokens_per_sample(self) -> float:
        return self.counted_prompt_tokens / self.n_samples if self.n_samples else 0.0

    @property
    def completion_tokens_per_sample(self) -> float:
        return self.counted_completion_tokens / self.n_samples if self.n_samples else 0.0

    @property
    def baseline_prompt_tokens_per_sample(self) -> float:
        return self.baseline_prompt_tokens / self.n_samples if self.n_samples else 0.0

    @property
    def vs_one_by_one(self) -> float:
        """Batched / one-by-one uncompressed prompt tokens (0.25 means 4x fewer)."""
        return _ratio(self.counted_prompt_tokens, self.baseline_prompt_tokens)

    @property
    def vs_one_by_one_compressed(self) -> float:
        return _ratio(self.counted_prompt_tokens, self.baseline_compressed_prompt_tokens)

    @property
    def batching_gain(self) -> float:
        """One-by-one / batched prompt tokens, both with the same prefix (the saving due to batching alone)."""
        return _ratio(self.baseline_compressed_prompt_tokens, self.counted_prompt_tokens)

    @property
    def compression_gain(self) -> float:
        """One-by-one uncompressed / one-by-one compressed prompt tokens (the saving due to compression alone)."""
        return _ratio(self.baseline_prompt_tokens, self.baseline_compressed_prompt_tokens)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("prompt_tokens_per_sample", "completion_tokens_per_sample", "baseline_prompt_tokens_per_sample",
                     "vs_one_by_one", "vs_one_by_one_compressed", "batching_gain", "compression_gain"):
            data[name] = round(getattr(self, name), 4)
        return data

    @staticmethod
    def merge(reports: Sequence["CostReport"]) -> "CostReport":
        """Sum of several runs sharing a prefix (e.g. the chunks of a resumable CLI job)."""
        if not reports:
            raise ConfigError("merge needs at least one CostReport")
        first = reports[0]
        summed = {f.name: sum(getattr(r, f.name) for r in reports) for f in fields(CostReport)
                  if f.type in ("int", int) and f.name not in ("prefix_tokens_original", "prefix_tokens")}
        sources = {r.usage_source for r in reports}
        usd = [r.usd for r in reports]
        base = [r.baseline_usd for r in reports]
        return replace(first, **summed, usage_source=sources.pop() if len(sources) == 1 else "mixed",
                       usd=sum(usd) if None not in usd else None,
                       baseline_usd=sum(base) if None not in base else None)


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0
