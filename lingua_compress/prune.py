"""Token-level pass: score window by window, conditioned on what was kept, and keep the most surprising words.

Every unit has a cost in counting tokens and a score (mean surprisal of its own scorer tokens, the paper's rule,
not the next token's). Each window keeps its protected units and then the highest-scoring units until its quota
is met; each window's rounding error is carried into the next, so the last window is held to the same ratio and
the whole prompt lands on budget.

A unit is never split for dropping, but no scoring call is unbounded: a window holds at most
:func:`max_window_tokens` scorer tokens, except a single unit longer than that (base64, a hash, minified code),
which sits alone in its window and is scored in consecutive chunks of that size.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .scoring import Scorer, ScoringSession


LONG_UNIT_TOKENS = 512  # units up to this long never change how windows are planned (prose stays as it was)


def max_window_tokens(window_tokens: int) -> int:
    """The most scorer tokens one ``session.score`` call gets: a window, plus one unit of up to
    ``max(window_tokens, LONG_UNIT_TOKENS)`` tokens that closes it."""
    return window_tokens + max(window_tokens, LONG_UNIT_TOKENS)


def plan_windows(tokens_per_unit: np.ndarray, window_tokens: int) -> list[tuple[int, int]]:
    """Consecutive unit ranges of about ``window_tokens`` scorer tokens each, none over
    :func:`max_window_tokens` unless it is one unit alone."""
    limit = max_window_tokens(window_tokens)
    windows, lo, acc = [], 0, 0
    for i, n in enumerate(tokens_per_unit.tolist()):
        if i > lo and acc + n > limit:  # only a unit over LONG_UNIT_TOKENS gets here: it starts a window
            windows.append((lo, i))
            lo, acc = i, 0
        acc += n
        if acc >= window_tokens:
            windows.append((lo, i + 1))
            lo, acc = i + 1, 0
    if lo < len(tokens_per_unit):
        windows.append((lo, len(tokens_per_unit)))
    return windows


class QuotaPicker:
    """Selects units window by window so each part kind's running kept cost tracks ``sum(ratio * cost)``.

    Quotas are kept per group (instruction, context, question): a window that spans the instruction and the
    first demonstration must not let one part's words buy the other's budget.
    """

    def __init__(self, costs: np.ndarray, protected: np.ndarray, ratio: np.ndarray, alive: np.ndarray,
                 groups: np.ndarray) -> None:
        self.costs = np.where(alive, costs, 0.0)
        self.protected = protected & alive
        self.alive = alive
        self.groups = groups
        self.ideal = np.zeros(len(costs))
        for g in np.unique(groups):
            sel = groups == g
            self.ideal[sel] = np.cumsum(self.costs[sel] * ratio[sel])
        self.used: dict[int, float] = {}

    def pick(self, lo: int, hi: int, scores: np.ndarray) -> np.ndarray:
        keep = np.zeros(hi - lo, dtype=bool)
        groups = self.groups[lo:hi]
        for g in np.unique(groups):
            sel = np.flatnonzero(groups == g)
            quota = self.ideal[lo + sel[-1]] - self.used.get(int(g), 0.0)
            keep[sel] = self._pick_group(self.costs[lo + sel], self.protected[lo + sel],
                                         self.alive[lo + sel], scores[sel], quota)
            self.used[int(g)] = self.used.get(int(g), 0.0) + self.costs[lo + sel][keep[sel]].sum()
        return keep

    @staticmethod
    def _pick_group(costs: np.ndarray, prot: np.ndarray, alive: np.ndarray, scores: np.ndarray,
                    quota: float) -> np.ndarray:
        keep = prot.copy()
        quota -= costs[prot].sum()
        free = np.flatnonzero(~prot & alive)
        order = free[np.argsort(-scores[free], kind="stable")]
        cum = np.cumsum(costs[order])
        n = int(np.searchsorted(cum, quota))  # first n with cum[n] >= quota: take n or n + 1, whichever is closer
        if n < len(cum) and abs(cum[n] - quota) < abs((cum[n - 1] if n else 0.0) - quota):
            n += 1
        keep[order[:n]] = True
        return keep


def unit_scores_from_tokens(
    nll: np.ndarray, owner: np.ndarray, lo: int, hi: int, cover: np.ndarray
) -> np.ndarray:
    """Mean own-token NLL of units lo..hi, over the tokens that were scored (NaN = not scored).

    A unit that owns no scored token takes the NLL of the token covering its first character, else 0.
    """
    valid = ~np.isnan(nll)
    counts = np.bincount(owner[valid] - lo, minlength=hi - lo)
    sums = np.bincount(owner[valid] - lo, nll[valid], minlength=hi - lo)
    out = np.divide(sums, counts, out=np.zeros(hi - lo), where=counts > 0)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        fallback = nll[np.clip(cover[lo:hi][empty], 0, len(nll) - 1)]
        out[empty] = np.nan_to_num(fallback, nan=0.0)
    return out


def score_windows(
    scorer: Scorer,
    ids: np.ndarray,
    owner: np.ndarray,
    cover: np.ndarray,
    windows: list[tuple[int, int]],
    choose: Callable[[int, int, np.ndarray], np.ndarray],
    conditioning: str,
    need: np.ndarray,
    max_tokens: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Score every window given the units ``choose`` kept before it. Returns unit scores and the kept mask.

    ``cover`` is, per unit, the index of the token whose span covers the unit's first character (global index);
    ``need`` marks the tokens whose score is used (not whitespace, not in a protected unit). A window of more
    than ``max_tokens`` tokens is scored in chunks (see :func:`_score_chunks`).
    """
    n_units = windows[-1][1] if windows else 0
    scores = np.zeros(n_units)
    keep = np.zeros(n_units, dtype=bool)
    valid = owner >= 0
    session = scorer.session(conditioning)
    for lo, hi in windows:
        t0, t1 = np.searchsorted(owner[valid], [lo, hi])
        if t1 <= t0:
            keep[lo:hi] = choose(lo, hi, scores[lo:hi])
            continue
        nll, last = _score_chunks(session, ids, need, t0, t1, max_tokens or t1 - t0)
        scores[lo:hi] = unit_scores_from_tokens(nll, owner[t0:t1], lo, hi, cover - t0)
        keep[lo:hi] = choose(lo, hi, scores[lo:hi])
        session.keep(keep[owner[last:t1]])
    return scores, keep


def _score_chunks(session: ScoringSession, ids: np.ndarray, need: np.ndarray, t0: int, t1: int,
                  size: int) -> tuple[np.ndarray, int]:
    """NLL of tokens t0..t1 in consecutive chunks of at most ``size``, each conditioned on the chunks before it.

    Returns the NLL and the start of the last chunk, whose ``keep()`` the caller owes once it has chosen.
    Only one unit longer than a window is chunked, and which of its tokens join the prefix is not known until
    all of them are scored, while the session cannot take back a ``keep()``: the earlier chunks are kept. So
    if the unit is then dropped, the text after it is still conditioned on most of it. That is the smaller
    error: it was there in the original, whereas keeping nothing would score each chunk without its own start.
    """
    starts = list(range(t0, t1, size))
    parts = []
    for c0 in starts:
        c1 = min(c0 + size, t1)
        parts.append(session.score(ids[c0:c1], need=need[c0:c1]))
        if c0 != starts[-1]:
            session.keep(np.ones(c1 - c0, dtype=bool))
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)), starts[-1]


def fit_budget(
    keep: np.ndarray,
    priority_add: np.ndarray,
    priority_drop: np.ndarray,
    costs: np.ndarray,
    droppable: np.ndarray,
    count: Callable[[np.ndarray], int],
    target: float,
    tolerance: float,
    max_rounds: int = 12,
) -> tuple[np.ndarray, int]:
    """Correct the estimate with exact counts: drop or add back units until ``count`` is within tolerance.
    Units whose ``priority_add`` is -inf are never added back.

    Returns the final mask and its count. An empty result is within tolerance only of a budget under half a
    token: for any other, a unit that lands closer is added back (if none does, the result stays empty; it is
    the caller's to say so).
    """
    keep = keep.copy()
    n = count(keep)
    best = (abs(n - target), keep, n)
    for _ in range(max_rounds):
        diff = n - target
        if abs(diff) <= tolerance and (n > 0 or target < 0.5):
            break
        if diff > 0:
            pool = np.flatnonzero(keep & droppable)
            pool = pool[np.argsort(priority_drop[pool], kind="stable")]
            take = int(np.searchsorted(np.cumsum(costs[pool]), diff)) + 1
        else:
            pool = np.flatnonzero(~keep & (priority_add > -np.inf))  # -inf: never added back
            pool = pool[np.argsort(-priority_add[pool], kind="stable")]
            take = max(1, int(np.searchsorted(np.cumsum(costs[pool]), -diff, side="right")))
        if len(pool) == 0:
            break
        trial = keep.copy()
        trial[pool[:take]] = diff < 0
        trial_n = count(trial)
        if abs(trial_n - target) >= abs(diff) and take == 1:
            break  # no single-unit move gets closer
        keep, n = trial, trial_n
        best = min(best, (abs(n - target), keep, n), key=lambda b: b[0])
    return best[1], best[2]
