"""Budget controller: the target split between instruction, context and question, and the coarse stage.

The instruction and question are compressed lightly (they carry the task); the context takes the rest of the
cut. The coarse stage then keeps whole demonstrations, by perplexity, worth up to k times the context budget,
and a sentence filter trims what is still over, so the token pass never has to remove more than (k-1)/k.
"""

from __future__ import annotations

import numpy as np

from .config import CompressionConfig
from .segment import PART_KINDS, Segmented

INSTRUCTION, CONTEXT, QUESTION = (PART_KINDS.index(k) for k in ("instruction", "context", "question"))


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


def _greedy(costs: np.ndarray, scores: np.ndarray, budget: float) -> np.ndarray:
    """Highest-scoring items that fit in ``budget``; an item that would overshoot is skipped, not kept."""
    keep = np.zeros(len(costs), dtype=bool)
    used = 0.0
    for i in np.argsort(-scores, kind="stable"):
        if used + costs[i] <= budget:
            keep[i] = True
            used += costs[i]
    return keep


def select_contexts(
    seg: Segmented, costs: np.ndarray, unit_scores: np.ndarray, budget: float
) -> np.ndarray:
    """Unit mask of the context parts kept whole, chosen by mean surprisal (high perplexity = informative).

    Parts holding a user ``keep=`` match are always kept.
    """
    ctx_parts = [i for i, p in enumerate(seg.parts) if p.kind == "context"]
    alive = np.ones(seg.n_units, dtype=bool)
    if len(ctx_parts) < 2:
        return alive
    part_cost = np.bincount(seg.unit_part, costs, minlength=len(seg.parts))[ctx_parts]
    part_score = _mean_by(seg.unit_part, unit_scores, _scored_weight(seg, costs), len(seg.parts))[ctx_parts]
    forced = np.bincount(seg.unit_part, seg.forced, minlength=len(seg.parts))[ctx_parts] > 0
    keep = _greedy(part_cost, np.where(forced, np.inf, part_score), budget)
    keep |= forced
    # Even a zero budget keeps the best context: it is the limit of a tiny one, so target_tokens=0 and ratio=1e-9
    # give one result (that context's protected spans, with a BudgetWarning).
    if not keep.any():
        keep[int(np.argmax(part_score))] = True
    for kept, part in zip(keep, ctx_parts):
        if not kept:
            alive[seg.unit_part == part] = False
    return alive


def filter_sentences(
    seg: Segmented, costs: np.ndarray, unit_scores: np.ndarray, alive: np.ndarray, budget: float
) -> np.ndarray:
    """Drop the least surprising context sentences until the kept context fits ``budget``.

    A context's last sentence stays: in demonstrations it carries the answer the examples exist to show.
    """
    is_ctx = seg.part_kinds() == CONTEXT
    live = alive & is_ctx
    over = costs[live].sum() - budget
    if over <= 0:
        return alive
    n_sent = len(seg.sentences)
    sent_cost = np.bincount(seg.unit_sentence[live], costs[live], minlength=n_sent)
    sent_score = _mean_by(seg.unit_sentence[live], unit_scores[live], _scored_weight(seg, costs)[live], n_sent)
    last_of_part = np.zeros(n_sent, dtype=bool)
    for part in np.unique(seg.unit_part[live]):
        last_of_part[seg.unit_sentence[live & (seg.unit_part == part)].max()] = True
    has_forced = np.bincount(seg.unit_sentence[live], seg.forced[live], minlength=n_sent) > 0
    candidates = np.flatnonzero((sent_cost > 0) & ~last_of_part & ~has_forced)
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
