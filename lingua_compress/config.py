"""CompressionConfig: every knob of the algorithm, frozen and validated at construction; and the checks of the
arguments each call takes (ratio, token budget, prompts), so that a mistake fails before any model work.

Numbers are checked as numbers, not as Python types: numpy scalars are what users pass (``np.float32(0.3)`` from an
array, ``np.int64(50)`` from a dataframe), so any real or integral number is accepted and stored as a plain
``float`` or ``int``; ``bool`` (Python or numpy), NaN and infinities are not numbers here.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from collections.abc import Iterable, Mapping, Set
from typing import Callable

import numpy as np

from .errors import ConfigError, InvalidPromptError
from .scoring import CONDITIONING_MODES
from .segment import Prompt

# Where question-aware compression puts the kept documents: as given, most relevant first, or most relevant at
# both ends (LongLLMLingua's "two_stage": models read the ends of a long context best).
REORDER_MODES = ("none", "sort", "two_ends")


def _is_bool(value: object) -> bool:
    # numpy's bool is not a Python bool; both are truth values, never counts or ratios.
    return isinstance(value, (bool, np.bool_))


def as_real(value: object) -> float | None:
    """``value`` as a finite plain float, or None where it is not a finite real number."""
    if _is_bool(value) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def as_integral(value: object) -> int | None:
    """``value`` as a plain int, or None where it is not an integral number (a float is not, even 5.0)."""
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


@dataclass(frozen=True, kw_only=True)
class CompressionConfig:
    """How the compressor spends a budget. The defaults follow the LLMLingua paper where it is sound.

    Attributes:
        instruction_ratio: the instruction keeps at least this share of its tokens (paper: tau_ins = 0.85).
        question_ratio: the question keeps at least this share of its tokens (paper: tau_que = 0.9).
        context_budget_factor: the coarse stage keeps whole demonstrations (then sentences) worth up to this many
            times the demonstrations' final budget, protected words counted this many times (the token pass
            cannot remove them), so the token pass removes at most (k-1)/k of the words it may remove. The paper
            uses k = 2; 1.5 is the default here because exact match, not likelihood, said so: on GSM8K with a 1.5B
            target, k = 2 thinned two demonstrations until the target drifted out of their format (36.7 % exact
            match at 0.2 against 55 % for k = 1.0 and the full prompt), while fewer, fluent ones kept it.
        sentence_budget_factor: the sentence filter then trims the kept context to this many times its budget,
            every word counted once. Looser than ``context_budget_factor`` by default: within one demonstration (or a
            plain string, one part) a dropped sentence is often its question, and thinning reads better there.
        coarse: run the demonstration- and sentence-level stage.
        coarse_sentences: the coarse stage may also drop single sentences from the demonstrations it keeps and
            open dropped ones with a few sentences (the sentence filter and the fill); False keeps or drops whole
            demonstrations only, for contexts whose parts must stay whole (batch prompting's demonstration blocks).
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
        question_aware: for a :class:`Prompt` with a question, rank the context parts (documents) by how well each
            predicts the question and score their words by how much the question explains them (LongLLMLingua);
            prompts without a question are compressed as if this were False. See :mod:`lingua_compress.question`.
        reorder: question-aware only: the order of the kept documents. "none" (as given), "sort" (most relevant
            first) or "two_ends" (most relevant at both ends, against lost-in-the-middle).
        dynamic_ratio: question-aware only, in [0, 1): the kept share of each document ramps linearly by rank from
            this much above the context's share (most relevant) to this much below (least); total budget unchanged.
        contrastive: question-aware only: score words by contrastive surprisal (their surprisal without the
            question minus with it); False scores them by plain surprisal, the question then only ranks documents.
        surprisal_weight: question-aware, contrastive only: a word scores its contrastive surprisal plus this times
            its surprisal given the question, so a word still surprising after the question (an answer the
            scorer did not expect, a name) is kept too; 0.0 is LongLLMLingua's contrast alone.
        question_hint: question-aware only: rank documents by the question followed by "We can get the answer to
            this question in the given documents." (LongLLMLingua's ranking prompt), not the question alone.
    """

    instruction_ratio: float = 0.85
    question_ratio: float = 0.9
    context_budget_factor: float = 1.5
    sentence_budget_factor: float = 2.0
    coarse: bool = True
    coarse_sentences: bool = True
    iterative: bool = True
    window_tokens: int = 200
    conditioning: str = "reuse"
    protect_numbers: bool = True
    tolerance: float = 0.01
    tolerance_tokens: int = 2
    question_aware: bool = False
    reorder: str = "none"
    dynamic_ratio: float = 0.0
    contrastive: bool = True
    surprisal_weight: float = 0.5
    question_hint: bool = True

    def __post_init__(self) -> None:
        self._real("instruction_ratio", lambda v: 0.0 < v <= 1.0, "a number in (0, 1]")
        self._real("question_ratio", lambda v: 0.0 < v <= 1.0, "a number in (0, 1]")
        self._real("context_budget_factor", lambda v: v >= 1.0, "a finite number >= 1")
        self._real("sentence_budget_factor", lambda v: v >= 1.0, "a finite number >= 1")
        self._real("tolerance", lambda v: 0.0 <= v < 0.5, "a number in [0, 0.5)")
        self._real("dynamic_ratio", lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
        self._real("surprisal_weight", lambda v: v >= 0.0, "a finite number >= 0")
        self._integral("window_tokens", lambda v: 16 <= v <= 8192, "an int in [16, 8192]")
        self._integral("tolerance_tokens", lambda v: v >= 0, "an int >= 0")
        for name in ("coarse", "coarse_sentences", "iterative", "protect_numbers", "question_aware", "contrastive",
                     "question_hint"):
            value = getattr(self, name)
            if not _is_bool(value):
                raise ConfigError(f"{name}={value!r} is not accepted: give True or False")
            object.__setattr__(self, name, bool(value))
        if self.conditioning not in CONDITIONING_MODES:
            raise ConfigError(f"conditioning={self.conditioning!r} must be one of {CONDITIONING_MODES}")
        if self.reorder not in REORDER_MODES:
            raise ConfigError(f"reorder={self.reorder!r} is not accepted: give one of {REORDER_MODES}")

    def _real(self, name: str, ok: Callable[[float], bool], accepted: str) -> None:
        value = getattr(self, name)
        number = as_real(value)
        if number is None or not ok(number):
            raise ConfigError(f"{name}={value!r} is not accepted: give {accepted}")
        object.__setattr__(self, name, number)  # frozen: store the plain float, not the numpy scalar

    def _integral(self, name: str, ok: Callable[[int], bool], accepted: str) -> None:
        value = getattr(self, name)
        number = as_integral(value)
        if number is None or not ok(number):
            raise ConfigError(f"{name}={value!r} is not accepted: give {accepted}")
        object.__setattr__(self, name, number)


def check_ratio(ratio: object, name: str = "ratio") -> float:
    """A ratio is kept tokens / original tokens, in (0, 1]; returned as a plain float."""
    number = as_real(ratio)
    if number is None or not 0.0 < number <= 1.0:
        raise ConfigError(
            f"{name}={ratio!r} is not accepted: give kept/original tokens as a number in (0, 1], e.g. 0.1 for ~10x"
        )
    return number


def check_target_tokens(target: object, name: str = "target_tokens") -> int:
    """A token budget: an integral number >= 0 (numpy integers included), returned as a plain int."""
    number = as_integral(target)
    if number is None or number < 0:
        raise ConfigError(f"{name}={target!r} is not accepted: give a token count, an int >= 0")
    return number


def check_budget(ratio: object, target_tokens: object) -> tuple[float | None, int | None]:
    """Exactly one of ``ratio`` and ``target_tokens``, checked: (ratio, None) or (None, target_tokens)."""
    if (ratio is None) == (target_tokens is None):
        raise ConfigError(f"give exactly one of ratio or target_tokens (got ratio={ratio!r}, "
                          f"target_tokens={target_tokens!r})")
    if ratio is not None:
        return check_ratio(ratio), None
    return None, check_target_tokens(target_tokens)


def check_prompt(prompt: object, name: str = "prompt") -> None:
    """A prompt is a str or a Prompt (its text is checked by segment(), which owns what text is accepted)."""
    if not isinstance(prompt, (str, Prompt)):
        raise InvalidPromptError(
            f"{name} must be a str or a lingua_compress.Prompt, got {type(prompt).__name__}: {prompt!r:.60}"
        )


def check_prompts(prompts: object) -> list:
    """The prompts of a batch: an ordered collection of prompts, each checked, materialised as a list."""
    if isinstance(prompts, (str, bytes, bytearray, Prompt, Mapping, Set)) or not isinstance(prompts, Iterable):
        raise InvalidPromptError(
            f"prompts={prompts!r:.60} is not accepted: give a list (or other ordered collection) of prompts, each a "
            "str or a Prompt; to compress a single prompt use compress()"
        )
    prompts = list(prompts)
    for i, prompt in enumerate(prompts):
        check_prompt(prompt, f"prompts[{i}]")
    return prompts


def check_context(context: object) -> tuple[str, ...]:
    """LLMLingua's ``context``: one str or an ordered collection of str."""
    if isinstance(context, str):
        return (context,)
    if isinstance(context, (bytes, bytearray, Mapping, Set)) or not isinstance(context, Iterable):
        raise InvalidPromptError(
            f"context={context!r:.60} is not accepted: give a str or a sequence of str (one per demonstration "
            "or retrieved document)"
        )
    context = tuple(context)
    for i, item in enumerate(context):
        if not isinstance(item, str):
            raise InvalidPromptError(
                f"context[{i}]={item!r:.60} ({type(item).__name__}) is not accepted: each context item must be a str"
            )
    return context


def check_target_token(target: object) -> int | None:
    """LLMLingua's ``target_token``: a token count (it takes floats too), any negative value meaning "use rate"."""
    if target is None:
        return None
    number = as_real(target)
    if number is None:
        raise ConfigError(
            f"target_token={target!r} is not accepted: give a token count (a number >= 0), or -1 to use rate"
        )
    return int(round(number)) if number >= 0 else None
