"""Subsequence recovery (LongLLMLingua): the target LLM copies names from the compressed prompt, where words inside
them may have been dropped ("New Yankees"); each such copy in its response is written back with the original's full
spelling ("New York Yankees").

A run of two or more response words that appears, word for word, in the compressed text maps to the original span
covering those words: with the kept spans (``CompressionResult.recover``) exactly the span the kept words came from;
from the two texts alone, the shortest span of the original holding the words in order. Only short gaps are filled
(at most ``max_gap`` dropped words between two copied ones), and a run that reads the same in the original is left as
it is.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Sequence

import numpy as np

from .errors import ConfigError, InvalidPromptError
from .segment import Segmented, segment

MAX_GAP = 3  # dropped words between two copied words that recovery puts back ("University [of] California")
_MAX_RUN = 32  # longest response run looked up, in words: answers copy names and phrases, not paragraphs


def recover(original: str, compressed: str, response: str, *, kept_spans: Sequence[tuple[int, int]] | None = None,
            max_gap: int = MAX_GAP) -> str:
    """``response`` with the names it copied from ``compressed`` spelled as in ``original``.

    ``kept_spans`` (a result's ``kept_spans``) makes the mapping exact; without them the shortest matching span of
    the original is used, which is right unless the same words recur close together.
    """
    for name, value in (("original", original), ("compressed", compressed), ("response", response)):
        if not isinstance(value, str):
            raise InvalidPromptError(f"{name} must be a str, got {type(value).__name__}: {value!r:.60}")
    if isinstance(max_gap, bool) or not isinstance(max_gap, int) or max_gap < 0:
        raise ConfigError(f"max_gap={max_gap!r} is not accepted: give an int >= 0")
    orig = segment(original, protect_defaults=False)
    words = _words(orig)
    if kept_spans is not None:
        kept = np.flatnonzero(kept_units(orig, kept_spans))
        find = _kept_finder(words, kept, max_gap)
    else:
        find = _shortest_finder(words, _words(segment(compressed, protect_defaults=False)), max_gap)
    resp = segment(response, protect_defaults=False)
    r_words = _words(resp)
    out, pos, a = [], 0, 0
    while a < len(r_words):
        hit = None
        for length in range(min(_MAX_RUN, len(r_words) - a), 1, -1):  # the longest copied run first
            span = find(r_words[a : a + length])
            if span is not None:
                hit = (length, span)
                break
        if hit is None:
            a += 1
            continue
        length, (u, v) = hit
        out += [response[pos : resp.unit_start[a]], original[orig.unit_start[u] : orig.unit_end[v]]]
        pos = int(resp.unit_end[a + length - 1])
        a += length
    return "".join(out) + response[pos:]


def kept_units(seg: Segmented, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Which units of ``seg`` lie inside the kept character ``spans`` (a kept unit is always wholly inside one)."""
    if not len(spans) or not seg.n_units:
        return np.zeros(seg.n_units, dtype=bool)
    starts, ends = np.asarray(spans, dtype=np.int64).reshape(-1, 2).T
    i = np.searchsorted(starts, seg.unit_start, side="right") - 1
    return (i >= 0) & (seg.unit_end <= ends[np.maximum(i, 0)])


def _words(seg: Segmented) -> list[str]:
    return [seg.text[s:e] for s, e in zip(seg.unit_start.tolist(), seg.unit_end.tolist())]


def _kept_finder(words: list[str], kept: np.ndarray, max_gap: int):
    """Run -> (first, last) original unit of a run of kept words equal to it with a dropped word inside, else None."""
    kept_words = [words[u] for u in kept.tolist()]
    at = _positions(kept_words)

    def find(run: list[str]) -> tuple[int, int] | None:
        for j in at.get(run[0], ()):
            if kept_words[j : j + len(run)] != run:
                continue
            units = kept[j : j + len(run)]
            gaps = np.diff(units) - 1
            if gaps.any() and gaps.max() <= max_gap:
                return int(units[0]), int(units[-1])
        return None

    return find


def _shortest_finder(words: list[str], compressed: list[str], max_gap: int):
    """Run -> the shortest original span holding the run's words in order, gaps of at most ``max_gap`` words, for
    a run that is in ``compressed`` but not, as it reads, in the original; else None."""
    at, in_compressed = _positions(words), _positions(compressed)

    def contiguous(seq: list[str], where: dict[str, list[int]], run: list[str]) -> bool:
        return any(seq[j : j + len(run)] == run for j in where.get(run[0], ()))

    def find(run: list[str]) -> tuple[int, int] | None:
        if not contiguous(compressed, in_compressed, run) or contiguous(words, at, run):
            return None
        best = None
        for start in at.get(run[0], ()):
            end = start
            for word in run[1:]:
                later = at.get(word, [])
                k = bisect.bisect_right(later, end)  # the nearest next occurrence: the shortest span from start
                end = later[k] if k < len(later) else None
                if end is None or end - start > (max_gap + 1) * (len(run) - 1):
                    break
            else:
                gaps_ok = _gaps_ok(words, start, end, run, max_gap)
                if gaps_ok and (best is None or end - start < best[1] - best[0]):
                    best = (start, end)
        return best

    return find


def _gaps_ok(words: list[str], start: int, end: int, run: list[str], max_gap: int) -> bool:
    """Whether ``run`` matches words[start..end] with each gap (unmatched words) at most ``max_gap`` long."""
    j, last = 1, start
    for p in range(start + 1, end + 1):
        if j < len(run) and words[p] == run[j]:
            if p - last - 1 > max_gap:
                return False
            j, last = j + 1, p
    return j == len(run)


def _positions(words: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for i, w in enumerate(words):
        out[w].append(i)
    return out
