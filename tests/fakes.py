"""A scorer with no model at all: deterministic pseudo-surprisal per token, for fast property tests."""

from __future__ import annotations

import re
import zlib

import numpy as np

_TOKEN = re.compile(r"\s*(?:\w{1,4}|[^\w\s])|\s+")


def _nll(token: str) -> float:
    return (zlib.crc32(token.encode()) % 1000) / 100.0


class FakeSession:
    def score(self, ids, need=None):
        return np.array([_nll(str(i)) for i in ids], dtype=np.float32)

    def keep(self, mask):
        pass


class FakeScorer:
    """Tokens are runs of up to four word characters (with leading spaces) or single punctuation marks."""

    name = "fake"

    def __init__(self):
        self._vocab: dict[str, int] = {}

    def tokenize(self, text):
        ids, offsets = [], []
        for m in _TOKEN.finditer(text):
            ids.append(self._vocab.setdefault(m.group(), len(self._vocab)))
            offsets.append((m.start(), m.end()))
        return np.array(ids, dtype=np.int64), np.array(offsets, dtype=np.int64).reshape(-1, 2)

    def token_nll(self, ids):
        return FakeSession().score(ids)

    def session(self, conditioning="reuse"):
        return FakeSession()
