"""Budget controller: the target split between instruction, context and question, and the coarse stage.

The instruction and question are compressed lightly (they carry the task); the context takes the rest of the
cut. The coarse stage then keeps whole demonstrations, by perplexity, worth up to k times the context budget,
and a sentence filter trims what is still over, so the token pass never has to remove more than (k-1)/k of the
words it may remove (protected words count k times: it cannot remove them).
"""

from __future__ import annotations

import numpy as np

from .config import CompressionConfig
from .segment import PART_KINDS, Segmented

INSTRUCTION, CONTEXT, QUESTION = (PART_KINDS.index(k) for k in ("instruction", "context", "question"))
# The least share of a fill's first and last sentences that the slack must pay for (see fill_contexts).
FILL_MIN_SHARE = 0.5


def split_budget(kind_cost: np.ndarray, target: float, config: CompressionConfig) -> np.ndarray:
    """Target tokens per part kind. If the light ratios for instruction and question would leave the context
    a negative budget, every part gets the same ratio instead."""
    total = float(kind_cost.sum())
    ratio = min(1.0, target / total) if total else 1.0
    out = kind_cost * ratio
    if kind_cost[CONTEXT] <= 0:
        return out
    light = np.zeros(3)
    light[INSTRUCTION] = kind_cost[INSTRUCTION] * max(ratio, config.instruction_ratio)
    light[QUESTION] = kind_cost[QUESTION] * max(ratio, config.question_ratio)
    rest = target - light[INSTRUCTION] - light[QUESTION]
    if rest >= 0:
        light[CONTEXT] = min(rest, kind_cost[CONTEXT])
        return light
    return out


def coarse_costs(costs: np.ndarray, protected: np.ndarray, k: float) -> np.ndarray:
    """What each unit costs the coarse stage, whose budget is k x the context's: k x its cost for a protected
    unit (the token pass cannot remove it), its cost for any other.

    So the kept context fits its budget once the token pass has removed (k-1)/k of its unprotected words, never
    more. Counting protected words at face value instead would keep every demonstration of a number-heavy
    prompt (GSM8K: ~40 % of the target's tokens are protected) and leave the token pass a skeleton of numbers.
    """
    return np.where(protected, costs * k, costs)


def _greedy(costs: np.ndarray, scores: np.ndarray, budget: float) -> np.ndarray:
    """Highest-scoring items that fit in ``budget``; an item that would overshoot is skipped, not kept."""
    keep = np.zeros(len(costs), dtype=bool)
    used = 0.0
    for i in np.argsort(-scores, kind="stable"):
        if used + costs[i] <= budget:
            keep[i] = True
            used += costs[i]
    return keep


def _best_then_greedy(costs: np.ndarray, scores: np.ndarray, budget: float) -> np.ndarray:
    """:func:`_greedy`, except that the highest-scoring item is always taken, first: under a relevance ranking,
    skipping the most relevant document because it alone does not fit would drop the likeliest answer for shorter,
    less relevant ones. The token pass prunes it to fit; what is left of the budget goes as in :func:`_greedy`."""
    keep = _greedy(costs, scores, budget)
    best = int(np.argmax(scores))
    if keep[best]:
        return keep
    rest = np.delete(np.arange(len(costs)), best)
    keep = np.zeros(len(costs), dtype=bool)
    keep[best] = True
    keep[rest] = _greedy(costs[rest], scores[rest], budget - costs[best])
    return keep


def correction_priority(seg: Segmented, rank: np.ndarray, alive: np.ndarray, whole_parts: bool) -> np.ndarray:
    """The order in which the exact-count correction adds units back: the coarse stage's survivors first, then the
    rest of a part it kept some of (a part the fill opened), the most surprising first. With ``whole_parts`` a unit
    of a dropped part gets -inf, which :func:`~lingua_compress.prune.fit_budget` never adds: single words would
    otherwise reappear scattered over parts that were meant to go whole."""
    started = np.bincount(seg.unit_part, alive, minlength=len(seg.parts))[seg.unit_part] > 0
    out = rank + np.where(alive, 1e6, 0.0) + np.where(started, 5e5, 0.0)
    return np.where(started, out, -np.inf) if whole_parts else out


def select_contexts(
    seg: Segmented, costs: np.ndarray, unit_scores: np.ndarray, budget: float, k: float,
    part_scores: np.ndarray | None = None,
) -> np.ndarray:
    """Unit mask of the context parts kept whole, chosen by mean surprisal (high perplexity = informative):
    the best worth up to k x ``budget`` in :func:`coarse_costs`.

    Parts holding a user ``keep=`` match are always kept. ``part_scores`` (one per part, higher = better)
    replaces the mean surprisal as the ranking: question-aware compression ranks by relevance to the question, and
    then the most relevant part is always kept (:func:`_best_then_greedy`). Before, on 10-passage prompts at 0.1
    (~150 tokens of budget) the passage ranked first, holding the answer, went whole for shorter ones ranked below.
    """
    ctx_parts, part_cost, part_score = _context_parts(seg, costs, unit_scores, part_scores)
    if len(ctx_parts) < 2:
        return np.ones(seg.n_units, dtype=bool)
    part_coarse = np.bincount(seg.unit_part, coarse_costs(costs, seg.protected, k), minlength=len(seg.parts))
    forced = np.bincount(seg.unit_part, seg.forced, minlength=len(seg.parts))[ctx_parts] > 0
    take = _greedy if part_scores is None else _best_then_greedy
    keep = take(part_coarse[ctx_parts], np.where(forced, np.inf, part_score), k * budget)
    keep |= forced
    # Even a zero budget keeps the best context: it is the limit of a tiny one, so target_tokens=0 and ratio=1e-9
    # give one result (that context's protected spans, with a BudgetWarning).
    if not keep.any():  # the best part whose protected words fit, else the one with the fewest
        protected = np.bincount(seg.unit_part, np.where(seg.protected, costs, 0.0), minlength=len(seg.parts))[ctx_parts]
        fits = protected <= budget
        keep[int(np.argmax(np.where(fits, part_score, -np.inf))) if fits.any() else int(np.argmin(protected))] = True
    return _part_mask(seg, ctx_parts, keep)


def fill_contexts(
    seg: Segmented, costs: np.ndarray, unit_scores: np.ndarray, alive: np.ndarray, budget: float,
    part_scores: np.ndarray | None = None,
) -> np.ndarray:
    """Unit mask of whole sentences to add from dropped context parts while the kept context costs less than
    ``budget``: from the best part, its first sentences in order until the budget is reached, and its last one
    (in a demonstration, the answer), so what is added reads as the start of that part and its conclusion; the
    token pass trims the added sentences to the budget.

    Protected words make a part dear in coarse cost, so the parts kept can cost less than the budget; the token
    pass could not spend the rest, and the exact-count correction would make it up with single words scattered
    over the dropped parts. A part is opened only when the slack pays for at least ``FILL_MIN_SHARE`` of its first
    and last sentences; a smaller slack stays unspent (within the count tolerance, or left to the exact-count
    correction).
    """
    ctx_parts, part_cost, part_score = _context_parts(seg, costs, unit_scores, part_scores)
    is_ctx = seg.part_kinds() == CONTEXT
    slack = budget - costs[alive & is_ctx].sum()
    out = np.zeros(seg.n_units, dtype=bool)
    if len(ctx_parts) < 2 or slack <= 0:
        return out
    sent_cost = np.bincount(seg.unit_sentence, costs, minlength=len(seg.sentences))
    for p in np.asarray(ctx_parts)[np.argsort(-part_score, kind="stable")]:
        units = (seg.unit_part == p) & ~alive
        sents = np.unique(seg.unit_sentence[units])
        # A fill adds at least the part's first and last sentences; a slack far smaller would leave, after the
        # token pass, a fragment such as "Q: The following paragraphs each\nSo the answer is (A)." - an answer
        # with nothing before it, which the target copies (BBH at 0.3: the kept exemplar was thinned to pay for it).
        if len(sents) == 0 or slack < FILL_MIN_SHARE * sent_cost[np.unique(sents[[0, -1]])].sum():
            continue
        for s in sents:
            out |= units & (seg.unit_sentence == s)
            slack -= sent_cost[s]
            if slack <= 0:
                out |= units & (seg.unit_sentence == sents[-1])
                return out
    return out


def _context_parts(seg: Segmented, costs: np.ndarray, unit_scores: np.ndarray,
                   part_scores: np.ndarray | None = None):
    """The context parts' indices, costs and scores: ``part_scores`` where given, else mean surprisal (over their
    unprotected words)."""
    ctx_parts = [i for i, p in enumerate(seg.parts) if p.kind == "context"]
    n = len(seg.parts)
    part_cost = np.bincount(seg.unit_part, costs, minlength=n)[ctx_parts]
    if part_scores is None:
        part_scores = _mean_by(seg.unit_part, unit_scores, _scored_weight(seg, costs), n)
    part_score = np.asarray(part_scores, dtype=np.float64)[ctx_parts]
    return ctx_parts, part_cost, part_score


def _part_mask(seg: Segmented, ctx_parts: list[int], keep: np.ndarray, default: bool = True) -> np.ndarray:
    """Unit mask: the units of the context parts where ``keep`` is set, and every other unit at ``default``."""
    mask = np.full(seg.n_units, default)
    for kept, part in zip(keep, ctx_parts):
        mask[seg.unit_part == part] = bool(kept)
    return mask


def filter_sentences(
    seg: Segmented, costs: np.ndarray, unit_scores: np.ndarray, alive: np.ndarray, budget: float
) -> np.ndarray:
    """Drop the least informative context sentences until the kept context fits ``budget``.

    Whole sentences cost their protected words too, so here every word counts once (the parts chosen by
    :func:`select_contexts` already fit in coarse cost; this trims a single long part, or forced ones). A
    context's last sentence stays: in demonstrations it carries the answer the examples exist to show.
    """
    is_ctx = seg.part_kinds() == CONTEXT
    live = alive & is_ctx
    over = costs[live].sum() - budget
    if over <= 0:
        return alive
    n_sent = len(seg.sentences)
    sent_cost = np.bincount(seg.unit_sentence[live], costs[live], minlength=n_sent)
    # Protected words (numbers, equations, format openings) rank as the most surprising free word does: a worked
    # step such as "48+24 = 72 clips in May" must outrank a line of predictable prose.
    free = live & ~seg.protected
    top = unit_scores[free].max() if free.any() else 0.0
    sent_score = _mean_by(seg.unit_sentence[live], np.where(seg.protected, top, unit_scores)[live], costs[live], n_sent)
    last_of_part = np.zeros(n_sent, dtype=bool)
    for part in np.unique(seg.unit_part[live]):
        last_of_part[seg.unit_sentence[live & (seg.unit_part == part)].max()] = True
    has_forced = np.bincount(seg.unit_sentence[live], seg.forced[live], minlength=n_sent) > 0
    all_protected = np.bincount(seg.unit_sentence[live], free[live], minlength=n_sent) == 0
    candidates = np.flatnonzero((sent_cost > 0) & ~last_of_part & ~has_forced & ~all_protected)
    out = alive.copy()
    for s in candidates[np.argsort(sent_score[candidates], kind="stable")]:
        if over <= 0:
            break
        out[live & (seg.unit_sentence == s)] = False
        over -= sent_cost[s]
    return out


def _scored_weight(seg: Segmented, costs: np.ndarray) -> np.ndarray:
    # Protected words are kept whatever they score (and are not scored): they must not drag a mean down.
    return np.where(seg.protected, 0.0, costs)


def _mean_by(groups: np.ndarray, values: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    w = weights
    total = np.bincount(groups, values * w, minlength=n)
    norm = np.bincount(groups, w, minlength=n)
    return np.divide(total, norm, out=np.zeros(n), where=norm > 0)
