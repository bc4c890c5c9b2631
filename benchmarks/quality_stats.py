"""Statistics for the quality benchmarks: Wilson intervals, exact McNemar tests, likelihood retention, and the
paired differences that decide a comparison (bootstrap over questions, the same resample for both sides)."""

from __future__ import annotations

import math
import random
from typing import Any, Sequence

BOOTSTRAP = 2000


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> dict[str, Any]:
    """Exact two-sided McNemar test (binomial on the discordant pairs) of paired outcomes a vs b."""
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    n = only_a + only_b
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n if n else 1.0
    return {"only_this": only_a, "only_other": only_b, "p": round(min(1.0, 2 * tail), 4)}


def _retention(zero: Sequence[float], full: Sequence[float], method: Sequence[float], idx: Sequence[int]) -> float:
    gain = sum(zero[i] - full[i] for i in idx)
    return sum(zero[i] - method[i] for i in idx) / gain if gain else float("nan")


def _resamples(n: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(n) for _ in range(n)] for _ in range(BOOTSTRAP)]


def _interval(values: list[float]) -> tuple[float, float]:
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return (float("nan"), float("nan"))
    return (values[int(0.025 * (len(values) - 1))], values[int(math.ceil(0.975 * (len(values) - 1)))])


def retention(zero: Sequence[float], full: Sequence[float], method: Sequence[float], seed: int = 0) -> dict[str, float]:
    """(NLL_zero - NLL_method) / (NLL_zero - NLL_full) over summed gold-solution NLLs, with a 95 % bootstrap CI."""
    n = len(method)
    if n == 0:
        return {"retention": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    lo, hi = _interval([_retention(zero, full, method, idx) for idx in _resamples(n, seed)])
    return {"retention": round(_retention(zero, full, method, range(n)), 4), "ci_low": round(lo, 4),
            "ci_high": round(hi, 4)}


def retention_diff(zero: Sequence[float], full: Sequence[float], a: Sequence[float], b: Sequence[float],
                   seed: int = 0) -> dict[str, float]:
    """Retention of a minus retention of b on the same questions, with a paired 95 % bootstrap interval.

    Both sides are computed on each resample, so what the questions share (their difficulty) cancels.
    """
    n = len(a)
    if n == 0 or len(b) != n:
        return {"diff": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": n}
    diffs = [_retention(zero, full, a, idx) - _retention(zero, full, b, idx) for idx in _resamples(n, seed)]
    lo, hi = _interval(diffs)
    point = _retention(zero, full, a, range(n)) - _retention(zero, full, b, range(n))
    return {"diff": round(point, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4), "n": n}


def accuracy_diff(a: Sequence[bool], b: Sequence[bool], seed: int = 0) -> dict[str, Any]:
    """Accuracy of a minus accuracy of b on the same questions: the difference, a paired 95 % bootstrap interval
    and the exact McNemar p-value."""
    n = len(a)
    if n == 0 or len(b) != n:
        return {"diff": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": n, "p": float("nan")}
    d = [int(x) - int(y) for x, y in zip(a, b)]
    lo, hi = _interval([sum(d[i] for i in idx) / n for idx in _resamples(n, seed)])
    return {"diff": round(sum(d) / n, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4), "n": n,
            "p": mcnemar(a, b)["p"]}
