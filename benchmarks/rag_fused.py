"""Ablation for bench_rag (not the library's behaviour): ``ours-qa`` with its document ranking fused with MiniLM.

check_rank.py found the question-NLL ranking of the 270M scorer puts the gold passage first less often than MiniLM's
cosine similarity does (tuning set). This measures, under the target, what ours-qa gains when each document's
relevance is the sum of the two scores' z-scores within the prompt, everything else unchanged, before any library
change. The library's ranking function is swapped for the call's duration only.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np

Count = Callable[[str], int]


def zsum(nll: np.ndarray, emb: np.ndarray) -> np.ndarray:
    def z(x: np.ndarray) -> np.ndarray:
        return (x - x.mean()) / (x.std() or 1.0)

    return z(nll) + z(emb)


@contextlib.contextmanager
def fused_ranking(similarity: np.ndarray) -> Iterator[None]:
    """While open, question-aware ranking returns zsum(its relevance, ``similarity``) (one per input document)."""
    from lingua_compress import question as Q

    original = Q.rank_documents

    def ranked(*args, **kwargs):
        relevance, plain = original(*args, **kwargs)
        if len(relevance) != len(similarity):
            raise RuntimeError("fused ranking: one similarity per document expected")
        return zsum(relevance, similarity), plain

    Q.rank_documents = ranked
    try:
        yield
    finally:
        Q.rank_documents = original


class OursFused:
    """``ours.qa`` (an ``Ours`` from bench_rag, loaded and warmed up) with :func:`fused_ranking`."""

    def __init__(self, ours, embed) -> None:
        self.ours, self.embed = ours, embed

    def qa(self, docs: list[str], question: str, ratio: float, count: Count) -> str:
        vecs = self.embed([question, *docs])
        with fused_ranking(np.asarray(vecs[1:] @ vecs[0])):
            return self.ours.qa(docs, question, ratio, count)
