"""Issue 12: a retriever's scores fused into the question-aware ranking (``retrieval_scores``): what the fusion
computes, that it steers ranking and placement, and that bad scores are named."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lingua_compress import Compressor, ConfigError
from lingua_compress import question as Q
from test_question_aware import DOCS, QUESTION, CopyScorer


@pytest.fixture()
def copy():
    return Compressor(scorer=CopyScorer())


def test_fuse_adds_the_z_scores_and_a_flat_prior_adds_nothing():
    rel, prior = np.array([-3.0, -1.0, -2.0]), np.array([0.2, 0.9, 0.1])
    z = lambda x: (x - x.mean()) / x.std()  # noqa: E731
    assert np.allclose(Q.fuse(rel, prior), z(rel) + z(prior))
    assert np.allclose(Q.fuse(rel, np.full(3, 7.0)), z(rel))
    assert np.allclose(Q.fuse(rel, prior * 1000 + 5), Q.fuse(rel, prior))  # the retriever's scale does not matter
    assert np.allclose(Q.fuse(np.zeros(3), prior), z(prior))


def test_retrieval_scores_are_fused_into_ranking_and_placement(copy):
    plain = copy.compress_documents(DOCS, QUESTION, ratio=0.3, reorder="sort")
    scores = [0.9, 0.1, -0.5, 0.3]  # the retriever disagrees: document 2 (the question's words) last
    fused = copy.compress_documents(DOCS, QUESTION, ratio=0.3, reorder="sort", retrieval_scores=scores)
    expected = Q.fuse(np.array(plain.relevance), np.array(scores))
    assert np.allclose(fused.relevance, expected)
    placed = [i for i in Q.reorder(expected, "sort") if fused.documents[i]]
    assert list(fused.order) == placed and fused.order != plain.order
    numpy_scores = copy.compress_documents(DOCS, QUESTION, ratio=0.3, reorder="sort",
                                           retrieval_scores=np.array(scores, dtype=np.float32))
    assert np.allclose(numpy_scores.relevance, fused.relevance, atol=1e-6)  # numpy numbers are numbers
    flat = copy.compress_documents(DOCS, QUESTION, ratio=0.3, reorder="sort", retrieval_scores=[1, 1, 1, 1])
    assert flat.order == plain.order and flat.documents == plain.documents


@pytest.mark.parametrize("scores,match", [
    ([1.0, 2.0], "2 numbers for 4 documents"),
    ("high", "retrieval_scores='high'"),
    ({"a": 1}, "one number per document"),
    (7, "one number per document"),
    ([1.0, "2", 3.0, 4.0], r"retrieval_scores\[1\]='2'"),
    ([1.0, math.nan, 3.0, 4.0], r"retrieval_scores\[1\]=nan"),
    ([1.0, math.inf, 3.0, 4.0], r"retrieval_scores\[1\]=inf"),
    ([True, 0.0, 0.0, 1.0], r"retrieval_scores\[0\]=True"),
    ([None, 0.0, 0.0, 1.0], r"retrieval_scores\[0\]=None"),
])
def test_bad_retrieval_scores_are_named(copy, scores, match):
    with pytest.raises(ConfigError, match=match):
        copy.compress_documents(DOCS, QUESTION, 0.3, retrieval_scores=scores)


def test_retrieval_scores_need_a_question(copy):
    with pytest.raises(ConfigError, match="retrieval_scores"):
        copy.compress_documents(DOCS, None, 0.5, retrieval_scores=[1, 2, 3, 4])
    with pytest.raises(ConfigError, match="retrieval_scores"):
        copy.compress_documents(DOCS, QUESTION, 0.5, question_aware=False, retrieval_scores=[1, 2, 3, 4])
