"""CompressionConfig: every knob of the algorithm, frozen and validated at construction."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .scoring import CONDITIONING_MODES


@dataclass(frozen=True, kw_only=True)
class CompressionConfig:
    """How the compressor spends a budget. The defaults follow the LLMLingua paper where it is sound.

    Attributes:
        instruction_ratio: the instruction keeps at least this share of its tokens (paper: tau_ins = 0.85).
        question_ratio: the question keeps at least this share of its tokens (paper: tau_que = 0.9).
        context_budget_factor: the coarse stage keeps whole demonstrations (then sentences) worth up to this many
            times the demonstrations' final budget; the token pass removes the rest (paper: k = 2).
        coarse: run the demonstration- and sentence-level stage.
        iterative: condition each window of the token pass on what was kept before it; off, every token is
            scored once against the original text (LLMLingua's "without iterative compression" ablation).
        window_tokens: scorer tokens per window of the token pass; each window is conditioned on what was kept
            of the windows before it.
        conditioning: "reuse" (kept tokens keep the states from their own window; every token forwarded once)
            or "recompute" (kept tokens are re-encoded as compressed text; exact, slower).
        protect_numbers: never drop words holding digits, identifiers (snake_case, camelCase) or URLs.
        tolerance: the kept count lands within this fraction of the budget, or ``tolerance_tokens``, whichever
            is larger.
        tolerance_tokens: see ``tolerance``.
    """

    instruction_ratio: float = 0.85
    question_ratio: float = 0.9
    context_budget_factor: float = 2.0
    coarse: bool = True
    iterative: bool = True
    window_tokens: int = 200
    conditioning: str = "reuse"
    protect_numbers: bool = True
    tolerance: float = 0.01
    tolerance_tokens: int = 2

    def __post_init__(self) -> None:
        for name in ("instruction_ratio", "question_ratio"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
                raise ConfigError(f"{name}={value!r} must be a number in (0, 1]")
        if not isinstance(self.context_budget_factor, (int, float)) or self.context_budget_factor < 1.0:
            raise ConfigError(f"context_budget_factor={self.context_budget_factor!r} must be a number >= 1")
        if not isinstance(self.window_tokens, int) or not 16 <= self.window_tokens <= 8192:
            raise ConfigError(f"window_tokens={self.window_tokens!r} must be an int in [16, 8192]")
        if self.conditioning not in CONDITIONING_MODES:
            raise ConfigError(f"conditioning={self.conditioning!r} must be one of {CONDITIONING_MODES}")
        if not isinstance(self.tolerance, (int, float)) or not 0.0 <= self.tolerance < 0.5:
            raise ConfigError(f"tolerance={self.tolerance!r} must be a number in [0, 0.5)")
        if not isinstance(self.tolerance_tokens, int) or self.tolerance_tokens < 0:
            raise ConfigError(f"tolerance_tokens={self.tolerance_tokens!r} must be an int >= 0")


def check_ratio(ratio: object) -> float:
    """A ratio is kept tokens / original tokens, in (0, 1]."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < float(ratio) <= 1.0:
        raise ConfigError(
            f"ratio={ratio!r} is not accepted: give kept/original tokens as a number in (0, 1], e.g. 0.1 for ~10x"
        )
    return float(ratio)


def check_target_tokens(target: object) -> int:
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise ConfigError(f"target_tokens={target!r} is not accepted: give a token count, an int >= 0")
    return target
