"""Orchestration: segment -> score -> budget -> prune -> render. The algorithm lives in the stage modules."""

from __future__ import annotations

import re
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from . import budget as B
from .config import (
    CompressionConfig,
    check_budget,
    check_context,
    check_prompt,
    check_prompts,
    check_ratio,
    check_target_token,
)
from .counting import TokenCounter, first_visible, make_counter, resolve_tokenizer, token_owners
from .errors import BudgetWarning, ConfigError
from .models import check_attention, check_bf16_embedding, check_spec
from .prune import QuotaPicker, fit_budget, max_window_tokens, plan_windows, score_windows
from .render import render
from .result import CompressionResult, PartStats, Timings
from .scoring import VOCAB_MODES, CausalLMScorer, Scorer
from .segment import PART_KINDS, PART_SEPARATOR, Prompt, Segmented, compile_keep, segment

# Added to the score of a salient unit (a line label, an answer phrase): above any word's surprisal (in nats),
# below the coarse stage's tiers in the exact-count corrections.
SALIENT_LIFT = 100.0

if TYPE_CHECKING:  # messages/ sits on top of this module
    from pathlib import Path

    from .documents import DocumentsResult
    from .messages import MessagesResult

KeepSpec = Iterable["str | re.Pattern[str]"]


class Compressor:
    """Holds a scorer (loaded on first use) and compresses prompts with it.

    >>> c = Compressor()                      # embedded Gemma 3 270M, loaded once on first use
    >>> r = c.compress(long_prompt, ratio=0.2)
    >>> r.compressed_tokens, r.compression
    >>> Compressor(adapter="my-adapter/")     # the scorer aligned to a target LLM (lingua-compress align)
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        vocab: str = "restricted",
        config: CompressionConfig | None = None,
        scorer: Scorer | None = None,
        adapter: str | Path | None = None,
        bf16_embedding: bool | None = None,  # on the fp32 path keep the embedding table in bf16 (None: where exact)
        packed_linear: bool | None = None,  # on the CPU, oneDNN-prepacked linear layers (None: where able)
        attention: str = "eager",  # or "sdpa": faster on a bf16 CPU, rounds differently (see CausalLMScorer)
    ) -> None:
        if config is not None and not isinstance(config, CompressionConfig):
            raise ConfigError(f"config must be a CompressionConfig, got {type(config).__name__}")
        # Checked now, not at the first compress(): loading is lazy, mistakes should not be.
        if vocab not in VOCAB_MODES:
            raise ConfigError(f"vocab={vocab!r} is not supported; use one of {VOCAB_MODES}")
        model = check_spec(model, device, dtype)
        check_bf16_embedding(bf16_embedding)
        check_bf16_embedding(packed_linear, "packed_linear")
        check_attention(attention)
        if scorer is not None and not isinstance(scorer, Scorer):
            raise ConfigError(f"scorer must implement lingua_compress.Scorer, got {type(scorer).__name__}")
        if adapter is not None and scorer is not None:
            raise ConfigError("give adapter= or scorer=, not both: the adapter is applied to the model this "
                              "Compressor loads")
        from .align.load import check_adapter  # files and manifest only; the model is still loaded lazily

        self.config = config or CompressionConfig()
        self._spec = {"model": model, "device": device, "dtype": dtype, "vocab": vocab,
                      "adapter": check_adapter(adapter), "bf16_embedding": bf16_embedding,
                      "packed_linear": packed_linear, "attention": attention}
        self._scorer = scorer
        self._lock = threading.Lock()

    @property
    def scorer(self) -> Scorer:
        """The scoring model, loaded (once) on first access."""
        if self._scorer is None:
            with self._lock:
                if self._scorer is None:
                    self._scorer = CausalLMScorer(**self._spec)
        return self._scorer

    def compress(
        self,
        prompt: str | Prompt,
        ratio: float | None = None,
        *,
        target_tokens: int | None = None,
        keep: KeepSpec = (),
        target_tokenizer: Any = None,
        question_aware: bool | None = None,
    ) -> CompressionResult:
        """Compress ``prompt`` to ``ratio`` x its tokens (or to ``target_tokens``), in the counting tokenizer.

        Args:
            prompt: a ``str`` (blank-line blocks are treated as droppable context) or a :class:`Prompt`.
            ratio: kept tokens / original tokens, in (0, 1]; 0.1 is about 10x.
            target_tokens: an absolute budget instead of ``ratio``.
            keep: strings or regexes whose matches are never cut by the token pass (a plain string matches
                literally, and as a regex too if it is one).
            target_tokenizer: the target LLM's tokenizer (HF tokenizer, ``encode`` object or callable
                ``str -> list``); budgets and counts are in it. Default: the scorer's tokenizer.
            question_aware: rank and prune the demonstrations (documents) by the ``Prompt``'s question
                (LongLLMLingua; see :mod:`lingua_compress.question`). None: the config's ``question_aware``.
        """
        check_prompt(prompt)
        ratio, target_tokens = check_budget(ratio, target_tokens)
        patterns = compile_keep(keep)
        target_tokenizer = resolve_tokenizer(target_tokenizer)  # a bad name fails before the model loads
        if question_aware is not None or self.config.question_aware:
            from . import question_run as QR  # on use: it builds on this module, and the default path skips it

            if QR.use_question(question_aware, self.config, prompt):
                return QR.compress_question_aware(self, self.config, prompt, ratio, target_tokens, patterns,
                                                  target_tokenizer).result
        started = time.perf_counter()
        seg = segment(prompt, patterns, protect_defaults=self.config.protect_numbers)
        scorer = self.scorer
        counter = make_counter(target_tokenizer, scorer)
        original = counter.count(seg.text)
        target = target_tokens if target_tokens is not None else ratio * original
        return _Run(self.config, scorer, counter, seg, original, target, started).result()

    def compress_batch(self, prompts: Sequence[str | Prompt], ratio: float | None = None, *,
                       batch_size: int | None = None, **kwargs: Any) -> list[CompressionResult]:
        """Compress several prompts with the same settings (the model is loaded once).

        ``prompts`` is a list, tuple or other ordered collection; a single ``str`` is refused (iterating it would
        compress each character). Every prompt's type is checked before any is compressed.

        ``batch_size``: up to this many prompts are compressed together, their scoring forwards run as one batched
        forward (:mod:`lingua_compress.batching`; each prompt's result is the one :meth:`compress` gives, up to the
        rounding of batched kernels, and its timings include the wait for the others). None: 16 where the scorer
        runs on a GPU, else 1, one prompt after another (on a CPU a batch adds padding and saves no launches).
        """
        prompts = check_prompts(prompts)
        size = self._batch_size(batch_size, len(prompts))
        from .batching import map_batched

        return map_batched(self.scorer, lambda p: self.compress(p, ratio, **kwargs), prompts, size)

    def _batch_size(self, batch_size: int | None, n: int) -> int:
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ConfigError(f"batch_size={batch_size!r} is not accepted: give an int >= 1, or None for automatic")
        if n < 2 or batch_size == 1:
            return 1  # nothing to batch: the scorer is not even loaded for it
        from .batching import auto_batch_size

        if batch_size is None:
            return auto_batch_size(self.scorer)
        return batch_size if isinstance(self.scorer, CausalLMScorer) else 1  # a scorer of the caller's own: no batching

    def compress_messages(self, messages: Sequence[dict[str, Any]], ratio: float | None = None,
                          **kwargs: Any) -> "MessagesResult":
        """Compress an OpenAI-style chat message list; see :func:`lingua_compress.compress_messages`."""
        from .messages import compress_messages  # messages/ sits on top of this module: imported on use

        return compress_messages(self, messages, ratio, **kwargs)

    def compress_documents(
        self,
        docs: Sequence[str],
        question: str | None = None,
        ratio: float | None = None,
        *,
        target_tokens: int | None = None,
        question_aware: bool | None = None,
        reorder: str = "none",
        dynamic_ratio: float = 0.0,
        instruction: str = "",
        target_tokenizer: Any = None,
        keep: KeepSpec = (),
        retrieval_scores: Sequence[float] | None = None,
    ) -> "DocumentsResult":
        """Compress retrieved documents for ``question`` and get each back: ``result.documents[i]`` is document
        ``i`` compressed ("" if dropped), ``result.text`` the prompt to send (instruction, documents, question).

        With a question (``question_aware`` defaults to True then) documents are ranked by how well each predicts
        it: the budget goes to relevant ones first, ``reorder`` ("none", "sort", "two_ends") places them and
        ``dynamic_ratio`` in [0, 1) prunes the more relevant ones less. ``retrieval_scores``, one per document
        (higher = more relevant; any scale, such as your retriever's similarities), are fused into that ranking:
        pass them when you have them. Other arguments as :meth:`compress`.
        """
        from .documents import compress_documents  # on use: it builds on this module

        return compress_documents(self, docs, question, ratio, target_tokens=target_tokens,
                                  question_aware=question_aware, reorder=reorder, dynamic_ratio=dynamic_ratio,
                                  instruction=instruction, target_tokenizer=target_tokenizer, keep=keep,
                                  retrieval_scores=retrieval_scores)

    def compress_prompt(
        self,
        context: str | Sequence[str],
        instruction: str = "",
        question: str = "",
        rate: float = 0.5,
        target_token: int = -1,
        *,
        keep: KeepSpec = (),
        target_tokenizer: Any = None,
        rank_method: str | None = None,
        reorder_context: str = "original",
        dynamic_context_compression_ratio: float = 0.0,
        condition_in_question: str = "none",
        condition_compare: bool = False,
    ) -> dict[str, Any]:
        """LLMLingua-compatible call: same arguments and result keys, with numbers where LLMLingua has strings.

        Differences: ``target_token`` budgets the whole prompt (instruction and question included), and the
        instruction and question are compressed lightly instead of kept verbatim. LongLLMLingua's arguments:
        ``rank_method="longllmlingua"`` is question-aware compression, ``reorder_context`` "original" / "sort" /
        "two_stage" place the documents as given / most relevant first / most relevant at both ends,
        ``dynamic_context_compression_ratio`` in [0, 1) prunes more relevant documents less, and a
        ``condition_in_question`` ending in "_condition" (or ``condition_compare=True``) scores words by contrastive
        surprisal ("none" / "after": the question only ranks documents; "before" is not offered).
        """
        prompt = Prompt(instruction=instruction, demonstrations=check_context(context), question=question)
        budget = check_target_token(target_token)
        from .question_run import compress_question_aware, longllmlingua_config  # on use: it builds on this module

        qa_config = longllmlingua_config(self.config, question, rank_method, reorder_context,
                                         dynamic_context_compression_ratio, condition_in_question, condition_compare)
        ratio = check_ratio(rate, "rate") if budget is None else None
        if qa_config is not None:
            res = compress_question_aware(self, qa_config, prompt, ratio, budget, keep, target_tokenizer).result
        else:
            res = self.compress(prompt, ratio, target_tokens=budget, keep=keep, target_tokenizer=target_tokenizer)
        return {
            "compressed_prompt": res.text,
            "origin_tokens": res.original_tokens,
            "compressed_tokens": res.compressed_tokens,
            "ratio": res.compression,
            "rate": res.kept_ratio,
            "saving": None,  # LLMLingua prints a GPT-4 price; pass your own price to CompressionResult.cost_saved
        }


class _Run:
    """One compression: the state shared by the pipeline stages, kept out of the public class."""

    def __init__(self, config: CompressionConfig, scorer: Scorer, counter: TokenCounter, seg: Segmented,
                 original: int, target: float, started: float) -> None:
        self.cfg, self.scorer, self.counter, self.seg = config, scorer, counter, seg
        self.original, self.target, self.started = original, float(target), started
        self.scoring_s = 0.0
        self.scored_tokens = 0

    def result(self) -> CompressionResult:
        seg = self.seg
        if self.target >= self.original or seg.n_units == 0:
            return self._finish(np.ones(seg.n_units, dtype=bool), self.original)
        costs = self.counter.unit_costs(seg)
        keep = self._select(costs)
        tol = max(self.cfg.tolerance * self.target, self.cfg.tolerance_tokens)
        droppable = ~seg.protected
        protected_cost = costs[keep & seg.protected].sum()
        keep, n = fit_budget(keep, self.add_priority, self.drop_priority, np.maximum(costs, 1.0), droppable,
                             self._count, self.target, tol)
        self._warn_off_budget(n, protected_cost, tol)
        return self._finish(keep, n)

    def _warn_off_budget(self, n: int, protected_cost: float, tol: float) -> None:
        """One BudgetWarning, with the numbers, for any result far from its budget: the same rule for a zero
        ``target_tokens`` and a tiny ratio. Units are kept or dropped whole, so one long unit can leave nothing
        that fits; at a tie the result stays under the budget, which is usually a hard limit (a context window)."""
        target = self.target
        if n > 0 and (protected_cost > target + tol or target < 0.5):  # a budget of 0 has no tolerance to hide in
            msg = (f"protected spans alone cost {protected_cost:.0f} tokens, more than the budget of {target:.0f}; "
                   f"they are kept and the budget is exceeded ({n} tokens)")
        elif n == 0 and target >= 0.5:
            msg = (f"the result is empty: no selection of whole words comes closer to the budget of {target:.0f} "
                   f"tokens (of {self.original}); a word or unbroken run longer than the budget is kept or dropped "
                   "whole")
        elif abs(n - target) > max(0.1 * target, 2 * tol):
            msg = (f"the result has {n} tokens against a budget of {target:.0f} (of {self.original}); words and "
                   "unbroken runs are kept or dropped whole, and none closer to the budget was found")
        else:
            return
        warnings.warn(msg, BudgetWarning, stacklevel=4)

    def _count(self, keep: np.ndarray) -> int:
        seg = self.seg
        return self.counter.count(render(seg.text, seg.unit_start, seg.unit_end, keep)[0])

    def _select(self, costs: np.ndarray) -> np.ndarray:
        seg, cfg = self.seg, self.cfg
        kinds = seg.part_kinds()
        kind_cost = np.bincount(kinds, costs, minlength=len(PART_KINDS))
        kind_target = B.split_budget(kind_cost, self.target * kind_cost.sum() / self.original, cfg)
        k = cfg.context_budget_factor
        ctx_coarse_cost = B.coarse_costs(costs, seg.protected, k)[kinds == B.CONTEXT].sum()
        coarse = cfg.coarse and ctx_coarse_cost > k * kind_target[B.CONTEXT]
        first_ratio = _ratios(kind_target, kind_cost)
        if coarse:  # the context will be cut to about its budget in coarse cost: score at the ratio that leaves
            first_ratio[B.CONTEXT] = min(1.0, ctx_coarse_cost / (k * kind_cost[B.CONTEXT]))
        scores, keep, windows = self._score(costs, kinds, first_ratio)
        rank = scores + np.where(seg.salient, SALIENT_LIFT, 0.0)
        alive = np.ones(seg.n_units, dtype=bool)
        filler = np.zeros(seg.n_units, dtype=bool)
        if coarse:
            budget = kind_target[B.CONTEXT]
            alive = B.select_contexts(seg, costs, scores, budget, k)
            if cfg.coarse_sentences:
                alive = B.filter_sentences(seg, costs, scores, alive, cfg.sentence_budget_factor * budget)
                filler = B.fill_contexts(seg, costs, scores, alive, budget)
                alive = alive | filler
        if coarse or not cfg.iterative:
            ratio, groups = _quotas(costs, kinds, kind_target, alive, filler)
            picker = QuotaPicker(costs, seg.protected, ratio, alive, groups)
            keep = np.zeros(seg.n_units, dtype=bool)
            for lo, hi in windows:
                keep[lo:hi] = picker.pick(lo, hi, rank[lo:hi])
        # Exact-count corrections prefer units the coarse stage kept, and the most surprising among them.
        # Corrections take from the context first: the instruction and question already run at light ratios.
        # Then the rest of a part the fill took sentences from, so added words do not scatter over dropped parts.
        self.add_priority = B.correction_priority(seg, rank, alive, coarse and not cfg.coarse_sentences)
        self.drop_priority = rank + np.where(kinds == B.CONTEXT, 0.0, 1e6)
        return keep

    def _score(self, costs: np.ndarray, kinds: np.ndarray, ratio: np.ndarray):
        """One windowed pass over the whole prompt: unit scores, the provisional selection, the windows."""
        seg, cfg = self.seg, self.cfg
        ids, offsets = self.scorer.tokenize(seg.text)
        firsts = first_visible(seg.text, offsets)
        owner = token_owners(seg.text, offsets, seg.unit_start, seg.unit_end, firsts)
        cover = np.searchsorted(offsets[:, 0], seg.unit_start, side="right") - 1
        windows = plan_windows(np.bincount(owner[owner >= 0], minlength=seg.n_units), cfg.window_tokens)
        picker = QuotaPicker(costs, seg.protected, ratio[kinds], np.ones(seg.n_units, dtype=bool), kinds)
        lift = np.where(seg.salient, SALIENT_LIFT, 0.0)
        choose = ((lambda lo, hi, s: picker.pick(lo, hi, s + lift[lo:hi])) if cfg.iterative
                  else (lambda lo, hi, s: np.ones(hi - lo, dtype=bool)))
        # Whitespace tokens and protected words are kept whatever they score: skip their output-head work.
        need = (firsts < offsets[:, 1]) & (owner >= 0) & ~seg.protected[np.maximum(owner, 0)]
        t0 = time.perf_counter()
        scores, keep = score_windows(self.scorer, ids, owner, cover, windows, choose, cfg.conditioning, need,
                                     max_window_tokens(cfg.window_tokens))
        self.scoring_s = time.perf_counter() - t0
        self.scored_tokens = int((owner >= 0).sum())
        return scores, keep, windows

    def _finish(self, keep: np.ndarray, n: int) -> CompressionResult:
        seg = self.seg
        text, spans = render(seg.text, seg.unit_start, seg.unit_end, keep)
        if keep.all():  # nothing dropped: hand back the prompt byte for byte
            text, spans = seg.text, ((0, len(seg.text)),) if seg.text else ()
        kinds = seg.part_kinds()
        parts = []
        for k, name in enumerate(PART_KINDS):
            members = [p for p in seg.parts if p.kind == name]
            if not members:
                continue
            original = self.counter.count(PART_SEPARATOR.join(seg.text[p.start : p.end] for p in members))
            sel = keep & (kinds == k)
            compressed = self.counter.count(render(seg.text, seg.unit_start, seg.unit_end, sel)[0])
            parts.append(PartStats(name, original, compressed))
        return CompressionResult(
            text=text,
            original=seg.text,
            original_tokens=self.original,
            compressed_tokens=n,
            target_tokens=int(round(min(self.target, self.original))),
            kept_spans=spans,
            parts=tuple(parts),
            tokenizer=self.counter.name,
            timings=Timings(time.perf_counter() - self.started, self.scoring_s, self.scored_tokens),
            backend=getattr(self.scorer, "backend", None),  # a custom Scorer need not say
        )


def _quotas(costs: np.ndarray, kinds: np.ndarray, kind_target: np.ndarray, alive: np.ndarray,
            filler: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per unit, the share the token pass keeps and the quota group it is counted in: each part kind at its
    budget over what the coarse stage kept. Where sentences were added to fill the context budget, the parts
    chosen whole cost less than it and are kept whole; the added sentences, a group of their own, take the cut."""
    live_cost = np.bincount(kinds[alive], costs[alive], minlength=len(PART_KINDS))
    ratio = _ratios(kind_target, live_cost)[kinds]
    groups = kinds.copy()
    if filler.any():
        chosen = alive & ~filler & (kinds == B.CONTEXT)
        ratio[chosen] = 1.0
        ratio[filler] = max(0.0, kind_target[B.CONTEXT] - costs[chosen].sum()) / costs[filler].sum()
        groups[filler] = len(PART_KINDS)
    return ratio, groups


def _ratios(kind_target: np.ndarray, kind_cost: np.ndarray) -> np.ndarray:
    return np.clip(np.divide(kind_target, kind_cost, out=np.ones(len(kind_cost)), where=kind_cost > 0), 0.0, 1.0)


_default: Compressor | None = None
_default_lock = threading.Lock()


def default_compressor() -> Compressor:
    """The process-wide Compressor behind :func:`compress` (embedded model, loaded on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Compressor()
        return _default


def compress(
    prompt: str | Prompt,
    ratio: float | None = None,
    *,
    target_tokens: int | None = None,
    keep: KeepSpec = (),
    target_tokenizer: Any = None,
) -> CompressionResult:
    """Compress a prompt with the embedded default scorer. See :meth:`Compressor.compress`."""
    return default_compressor().compress(
        prompt, ratio, target_tokens=target_tokens, keep=keep, target_tokenizer=target_tokenizer
    )
