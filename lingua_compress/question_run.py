"""Question-aware compression, the run: the question-agnostic pipeline with its selection replaced by one that ranks
documents by the question (:mod:`lingua_compress.question` holds the scoring), and the calls that lead to it
(``compress(question_aware=True)``, ``compress_documents``, ``compress_prompt(rank_method="longllmlingua")``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import budget as B
from . import question as Q
from .api import SALIENT_LIFT, _quotas, _Run
from .config import CompressionConfig, _is_bool, as_real, check_budget, check_prompt
from .counting import make_counter, resolve_tokenizer
from .errors import ConfigError
from .prune import QuotaPicker, max_window_tokens, plan_windows
from .result import CompressionResult
from .segment import PART_KINDS, Prompt, Segmented, compile_keep, segment

if TYPE_CHECKING:
    from .api import Compressor
    from .scoring import Scorer

# compress_prompt's LongLLMLingua arguments, and what they become here.
RANK_METHODS = ("llmlingua", "longllmlingua")
REORDER_CONTEXT = {"original": "none", "sort": "sort", "two_stage": "two_ends"}
# The ranking always writes the question after the document (LongLLMLingua's best variant); "_condition" turns the
# contrastive word scores on. "before" (the document scored after the question) has no counterpart here.
CONDITIONS = ("none", "after", "none_condition", "after_condition")


@dataclass(frozen=True)
class Ranked:
    """A question-aware compression and what the ranking decided, per input document."""

    result: CompressionResult
    seg: Segmented  # of the prompt as compressed (documents in ``order``)
    order: tuple[int, ...]  # every input document's index, in the order placed in the prompt
    relevance: tuple[float, ...]  # per input document, higher = more relevant
    doc_part: tuple[int, ...]  # per input document, its part in ``seg``; -1 for a blank one (it has none)


def _part_windows(seg: Segmented, costs: np.ndarray, window_tokens: int) -> list[tuple[int, int]]:
    """Token-pass windows that never span two parts: each document meets its own share."""
    n = seg.n_units
    cuts = [0, *(np.flatnonzero(np.diff(seg.unit_part)) + 1).tolist(), n] if n else [0]
    windows = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        sizes = np.maximum(np.rint(costs[lo:hi]), 1).astype(np.int64)
        windows += [(lo + a, lo + b) for a, b in plan_windows(sizes, window_tokens)]
    return windows


class QuestionRun(_Run):
    """One question-aware compression: the question-agnostic run with the selection replaced (``_select``)."""

    def __init__(self, config: CompressionConfig, scorer: "Scorer", counter: Any, original: int, target: float,
                 started: float, placed: _Placement, prefix: Q.PartTokens) -> None:
        super().__init__(config, scorer, counter, placed.seg, original, target, started)
        self.tokens, self.plain, self.part_relevance = dict(placed.tokens), dict(placed.plain), placed.part_relevance
        self.prefix = prefix  # the question's ids, in front of each document for the contrastive scores
        self.scoring_s, self.scored_tokens = placed.spent
        self.chunk = max_window_tokens(config.window_tokens)
        self.scores = np.zeros(placed.seg.n_units)
        self._contrasted: set[int] = set()

    def _select(self, costs: np.ndarray) -> np.ndarray:
        seg, cfg = self.seg, self.cfg
        kinds = seg.part_kinds()
        kind_cost = np.bincount(kinds, costs, minlength=len(PART_KINDS))
        kind_target = B.split_budget(kind_cost, self.target * kind_cost.sum() / self.original, cfg)
        self._plain_scores()
        alive, filler = self._coarse(costs, kinds, kind_target)
        ratio, groups = _quotas(costs, kinds, kind_target, alive, filler)
        if cfg.dynamic_ratio > 0 and not filler.any():  # with filler the parts chosen whole are kept whole anyway
            self._ramp(ratio, costs, alive & (kinds == B.CONTEXT))
        rank = Q.cohere_names(seg, self.scores + np.where(seg.salient, SALIENT_LIFT, 0.0))
        picker = QuotaPicker(costs, seg.protected, ratio, alive, groups)
        keep = np.zeros(seg.n_units, dtype=bool)
        for lo, hi in _part_windows(seg, costs, cfg.window_tokens):
            keep[lo:hi] = picker.pick(lo, hi, rank[lo:hi])
        # The question-agnostic run's exact-count priorities: coarse survivors first, the context takes the cut.
        self.add_priority = B.correction_priority(seg, rank, alive, not cfg.coarse_sentences)
        self.drop_priority = rank + np.where(kinds == B.CONTEXT, 0.0, 1e6)
        return keep

    def _coarse(self, costs: np.ndarray, kinds: np.ndarray, kind_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Documents by relevance (worth k x the context budget), then sentences by contrastive score."""
        seg, cfg = self.seg, self.cfg
        k, budget = cfg.context_budget_factor, kind_target[B.CONTEXT]
        alive = np.ones(seg.n_units, dtype=bool)
        filler = np.zeros(seg.n_units, dtype=bool)
        coarse = cfg.coarse and B.coarse_costs(costs, seg.protected, k)[kinds == B.CONTEXT].sum() > k * budget
        if coarse:
            alive = B.select_contexts(seg, costs, self.scores, budget, k, part_scores=self.part_relevance)
        self._contrast(alive)  # only the documents kept: the dropped ones are never forwarded a second time
        if coarse and cfg.coarse_sentences:
            alive = B.filter_sentences(seg, costs, self.scores, alive, cfg.sentence_budget_factor * budget)
            filler = B.fill_contexts(seg, costs, self.scores, alive, budget, part_scores=self.part_relevance)
            self._contrast(filler)
            alive = alive | filler
        return alive, filler

    def _plain_scores(self) -> None:
        """Every unit's plain surprisal: documents' from the ranking pass; the instruction's and the question's
        (compressed lightly, in quota groups of their own) from one forward over the two, each tokenized alone."""
        others = [p for p, part in enumerate(self.seg.parts) if part.kind != "context"]
        for p in others:
            self.tokens[p] = Q.part_tokens(self.scorer, self.seg, p)
        ids = np.concatenate([self.tokens[p].ids for p in others] or [np.zeros(0, dtype=np.int64)])
        need = np.concatenate([self.tokens[p].need for p in others] or [np.zeros(0, dtype=bool)])
        nll = self._timed(lambda: Q.score_run(self.scorer.session("reuse"), ids, need, self.chunk), len(ids))
        bounds = np.cumsum([0] + [len(self.tokens[p].ids) for p in others])
        for p, lo, hi in zip(others, bounds[:-1], bounds[1:]):
            self.plain[p] = nll[lo:hi]
        for p in range(len(self.seg.parts)):
            self.scores[self.seg.unit_part == p] = self.tokens[p].unit_scores(self.plain[p])

    def _contrast(self, mask: np.ndarray) -> None:
        """Contrastive scores for the context parts with a unit in ``mask`` that have none yet."""
        if not self.cfg.contrastive:
            return
        seg = self.seg
        parts = [p for p in np.unique(seg.unit_part[mask]).tolist()
                 if seg.parts[p].kind == "context" and p not in self._contrasted]
        if not parts:
            return
        docs = [self.tokens[p] for p in parts]
        # Tokens given to the sessions: the documents, and the question once per session conditioned_nll opens.
        sessions = any(0 < len(d.ids) <= self.chunk for d in docs) + sum(len(d.ids) > self.chunk for d in docs)
        n = sum(len(d.ids) for d in docs) + sessions * len(self.prefix.ids)
        with_question = self._timed(lambda: Q.conditioned_nll(self.scorer, self.prefix, docs, self.chunk), n)
        w = self.cfg.surprisal_weight
        for p, doc, nll in zip(parts, docs, with_question):
            self.scores[seg.unit_part == p] = doc.unit_scores(self.plain[p] - nll + w * nll)
            self._contrasted.add(p)

    def _ramp(self, ratio: np.ndarray, costs: np.ndarray, live: np.ndarray) -> None:
        """The dynamic ratio: each live document's share of the context budget, ramped by relevance rank."""
        parts = np.unique(self.seg.unit_part[live])
        if len(parts) < 2:
            return
        masks = [live & (self.seg.unit_part == p) for p in parts]
        shares = Q.dynamic_shares(np.array([costs[m].sum() for m in masks]), self.part_relevance[parts],
                                float(ratio[live][0]), self.cfg.dynamic_ratio)
        for m, s in zip(masks, shares):
            ratio[m] = s

    def _timed(self, work: Any, n_tokens: int) -> Any:
        t0 = time.perf_counter()
        out = work()
        self.scoring_s += time.perf_counter() - t0
        self.scored_tokens += n_tokens
        return out


@dataclass(frozen=True)
class _Placement:
    """The ranking's outcome: the prompt with its documents placed, and the ranking pass's scores per part."""

    seg: Segmented
    order: list[int]
    relevance: np.ndarray  # per input document
    doc_part: list[int]  # per input document, its part in ``seg`` (-1: blank, no part)
    tokens: dict[int, Q.PartTokens]  # per part of ``seg``
    plain: dict[int, np.ndarray]  # per context part, its tokens' NLL without the question
    spent: tuple[float, int]  # scoring seconds, tokens forwarded

    @property
    def part_relevance(self) -> np.ndarray:
        out = np.zeros(len(self.seg.parts))
        for i, p in enumerate(self.doc_part):
            if p >= 0:
                out[p] = self.relevance[i]
        return out


def compress_question_aware(compressor: "Compressor", config: CompressionConfig, prompt: Prompt,
                            ratio: float | None, target_tokens: int | None, keep: Any = (),
                            target_tokenizer: Any = None, prior: np.ndarray | None = None) -> Ranked:
    """Rank ``prompt``'s documents by its question (fused with ``prior``, a retriever's score per document, if
    given), place them, and compress (see :meth:`Compressor.compress`)."""
    check_question_prompt(prompt)
    ratio, target_tokens = check_budget(ratio, target_tokens)
    patterns = compile_keep(keep)
    target_tokenizer = resolve_tokenizer(target_tokenizer)
    started = time.perf_counter()
    scorer = compressor.scorer
    placed = _rank_and_place(scorer, config, prompt, patterns, prior)
    counter = make_counter(target_tokenizer, scorer)
    original = counter.count(placed.seg.text)
    target = target_tokens if target_tokens is not None else ratio * original
    prefix = Q.text_tokens(scorer, prompt.question + "\n\n")
    result = QuestionRun(config, scorer, counter, original, target, started, placed, prefix).result()
    return Ranked(result, placed.seg, tuple(placed.order), tuple(float(r) for r in placed.relevance),
                  tuple(placed.doc_part))


def _rank_and_place(scorer: "Scorer", config: CompressionConfig, prompt: Prompt, patterns: list,
                    prior: np.ndarray | None = None) -> _Placement:
    """Score every document and the question after it, then segment the prompt with the documents in place."""
    docs = prompt.demonstrations
    seg = segment(prompt, patterns, protect_defaults=config.protect_numbers)
    parts = _doc_parts(seg, docs, range(len(docs)))
    tokens = [Q.part_tokens(scorer, seg, p) if p >= 0 else Q.NO_TOKENS for p in parts]
    suffix = Q.text_tokens(scorer, "\n\n" + prompt.question + (Q.RANK_HINT if config.question_hint else ""))
    t0 = time.perf_counter()
    relevance, plain = Q.rank_documents(scorer, tokens, suffix, max_window_tokens(config.window_tokens))
    spent = (time.perf_counter() - t0, sum(len(t.ids) for t in tokens) + len(docs) * len(suffix.ids))
    if prior is not None:
        relevance = Q.fuse(relevance, prior)
    order = Q.reorder(relevance, config.reorder)
    if order != sorted(order):
        placed = Prompt(prompt.instruction, [docs[i] for i in order], prompt.question)
        seg = segment(placed, patterns, protect_defaults=config.protect_numbers)
        parts = _doc_parts(seg, docs, order)
    # A document's units and tokens do not depend on where it is placed: the ranking pass's arrays carry over.
    return _Placement(seg, order, relevance, parts, {p: tokens[i] for i, p in enumerate(parts) if p >= 0},
                      {p: plain[i] for i, p in enumerate(parts) if p >= 0}, spent)


def _doc_parts(seg: Segmented, docs: Sequence[str], order: Sequence[int]) -> list[int]:
    """Per input document, its part index in ``seg`` (documents placed in ``order``); -1 for a blank document,
    which ``segment`` gives no part."""
    out = [-1] * len(docs)
    ctx_parts = iter(p for p, part in enumerate(seg.parts) if part.kind == "context")
    for i in order:
        if docs[i].strip():
            out[i] = next(ctx_parts)
    return out


def check_question_prompt(prompt: object) -> Prompt:
    check_prompt(prompt)
    if not isinstance(prompt, Prompt) or not prompt.question.strip():
        got = "a str" if isinstance(prompt, str) else f"a Prompt with question={prompt.question!r:.60}"
        raise ConfigError(f"question-aware compression needs a question, got {got}: pass Prompt(instruction=..., "
                          "demonstrations=documents, question=...) or use compress_documents(docs, question=...)")
    return prompt


def use_question(flag: object, config: CompressionConfig, prompt: object) -> bool:
    """Whether a ``compress`` call is question-aware: ``flag`` if given (True needs a question), else the config's
    setting for prompts that have a question."""
    if flag is None:
        return config.question_aware and isinstance(prompt, Prompt) and bool(prompt.question.strip())
    if not _is_bool(flag):
        raise ConfigError(f"question_aware={flag!r} is not accepted: give True, False, or None for the config's "
                          "setting")
    if flag:
        check_question_prompt(prompt)
    return bool(flag)


def longllmlingua_config(config: CompressionConfig, question: str, rank_method: object, reorder_context: object,
                         dynamic_ratio: object, condition_in_question: object,
                         condition_compare: object) -> CompressionConfig | None:
    """compress_prompt's LongLLMLingua arguments as a question-aware config; None for a question-agnostic call.

    ``rank_method="longllmlingua"`` is question-aware ranking; a ``"_condition"`` suffix on ``condition_in_question``
    (or ``condition_compare=True``) adds the contrastive word scores; ``reorder_context`` "original" / "sort" /
    "two_stage" are ``reorder`` "none" / "sort" / "two_ends".
    """
    if rank_method is not None and rank_method not in RANK_METHODS:
        raise ConfigError(f"rank_method={rank_method!r} is not accepted: give one of {RANK_METHODS} (or None); "
                          "the embedding and API rankers (bm25, sentbert, openai, ...) are not offered")
    if not isinstance(reorder_context, str) or reorder_context not in REORDER_CONTEXT:
        raise ConfigError(f"reorder_context={reorder_context!r} is not accepted: give one of "
                          f"{tuple(REORDER_CONTEXT)}")
    if not isinstance(condition_in_question, str) or condition_in_question not in CONDITIONS:
        raise ConfigError(f"condition_in_question={condition_in_question!r} is not accepted: give one of "
                          f"{CONDITIONS} (documents are always ranked with the question after them)")
    if not _is_bool(condition_compare):
        raise ConfigError(f"condition_compare={condition_compare!r} is not accepted: give True or False")
    spread = as_real(dynamic_ratio)
    if spread is None or not 0.0 <= spread < 1.0:
        raise ConfigError(f"dynamic_context_compression_ratio={dynamic_ratio!r} is not accepted: give a number in "
                          "[0, 1)")
    contrastive = bool(condition_compare) or condition_in_question.endswith("_condition")
    if rank_method != "longllmlingua":
        if reorder_context != "original" or spread > 0 or contrastive:
            raise ConfigError("reorder_context, dynamic_context_compression_ratio and a '_condition' "
                              "condition_in_question need rank_method='longllmlingua' here: they follow the "
                              "documents' relevance to the question")
        return None
    if not question.strip():
        raise ConfigError("rank_method='longllmlingua' needs a question (question='' was given)")
    return replace(config, question_aware=True, reorder=REORDER_CONTEXT[reorder_context], dynamic_ratio=spread,
                   contrastive=contrastive)
