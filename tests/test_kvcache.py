"""The KV-cache wrapper against a reference: a fresh forward of exactly the tokens the cache should hold.

The tiny model has two sliding-window layers (window 16) and one full layer; every sequence here outgrows the window,
so the sliding layers' eviction, rollback and subset-keeping are all exercised, in both cache layouts.
"""

import functools
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lingua_compress import kvcache
from lingua_compress.kvcache import KVCache, cache_keyword
from tiny import tiny_model

WINDOW = 16
LAYOUTS = [True, False] if kvcache.can_bound_sliding_layers() else [False]


@functools.lru_cache(maxsize=None)
def model():
    return tiny_model(sliding_window=WINDOW)


def run(ids, positions, cache=None):
    """Final hidden states of ``ids`` at ``positions``, appended to ``cache`` (or from scratch with no cache)."""
    body = model().base_model
    if cache is None:
        kwargs = {"attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    else:
        kwargs = {cache_keyword(body): cache.native, "use_cache": True}
    with torch.inference_mode():
        out = body(input_ids=torch.tensor([ids]), position_ids=torch.tensor([positions]), **kwargs)
    return out.last_hidden_state[0]


def reference(history, window):
    """``window``'s hidden states computed with no cache: one forward over every token still in play, under a mask
    that lets each token see what the cache showed it when it was forwarded.

    ``history`` holds the earlier windows that were not rolled back, as (tokens, kept indices). A token sees the
    kept tokens of the windows before its own and its own window up to itself (in full-attention layers); sliding
    layers see the last ``WINDOW`` of those. Kept tokens keep the states computed beside their dropped neighbours.
    """
    pairs, visible, kept_slots = [], [], []
    for window_pairs, keep in history + [(window, [])]:
        start = len(pairs)
        for j, pair in enumerate(window_pairs):
            pairs.append(pair)
            visible.append(kept_slots + list(range(start, start + j + 1)))
        kept_slots = kept_slots + [start + k for k in keep]
    masks = {}
    for kind, span in (("full_attention", None), ("sliding_attention", WINDOW)):
        mask = torch.full((len(pairs), len(pairs)), torch.finfo(torch.float32).min)
        for row, cols in enumerate(visible):
            mask[row, cols[-span:] if span else cols] = 0.0
        masks[kind] = mask[None, None]
    body = model().base_model
    with torch.inference_mode():
        out = body(
            input_ids=torch.tensor([[t for t, _ in pairs]]), position_ids=torch.tensor([[p for _, p in pairs]]),
            attention_mask=masks,  # per layer type, as Gemma 3 takes them
        )
    return out.last_hidden_state[0][len(pairs) - len(window):]


def tokens(rng, n, start):
    return [(int(t), start + i) for i, t in enumerate(rng.integers(4, 300, n))]


def kept_count(history):
    return sum(len(keep) for _, keep in history)


def test_the_reference_with_nothing_dropped_is_the_models_own_forward():
    rng = np.random.default_rng(3)
    first, second = tokens(rng, 21, 0), tokens(rng, 19, 21)
    pairs = first + second
    plain = run([t for t, _ in pairs], [p for _, p in pairs])[21:]
    torch.testing.assert_close(reference([(first, list(range(21)))], second), plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bounded", LAYOUTS)
def test_keep_subset_matches_the_reference(bounded):
    rng = np.random.default_rng(0)
    cache, history, pos = KVCache(model().config, bound_sliding=bounded), [], 0
    for n in (7, 23, 5, 31, 12):  # windows shorter and longer than the 16-token sliding window
        window = tokens(rng, n, pos)
        got = run([t for t, _ in window], [p for _, p in window], cache)
        torch.testing.assert_close(got, reference(history, window), atol=1e-4, rtol=1e-4)
        keep = np.flatnonzero(rng.random(n) < 0.6)
        cache.keep_last(n, keep)
        history.append((window, list(keep)))
        pos += n
        assert len(cache) == kept_count(history)


@pytest.mark.parametrize("bounded", LAYOUTS)
def test_rollback_equals_never_having_seen_the_window(bounded):
    rng = np.random.default_rng(1)
    cache = KVCache(model().config, bound_sliding=bounded)
    first = tokens(rng, 40, 0)
    run([t for t, _ in first], [p for _, p in first], cache)
    cache.keep_last(40, np.arange(40))
    dropped = tokens(rng, 21, 40)
    run([t for t, _ in dropped], [p for _, p in dropped], cache)
    cache.rollback(21)
    assert len(cache) == 40
    after = tokens(rng, 9, 40)
    got = run([t for t, _ in after], [p for _, p in after], cache)
    torch.testing.assert_close(got, reference([(first, list(range(40)))], after), atol=1e-4, rtol=1e-4)


def test_bounded_sliding_layers_hold_at_most_the_window_between_forwards():
    if not kvcache.can_bound_sliding_layers():
        pytest.skip("this transformers cannot roll back a bounded sliding-window layer")
    rng = np.random.default_rng(2)
    cache, pos = KVCache(model().config), 0
    for n in (30, 30, 30):
        window = tokens(rng, n, pos)
        run([t for t, _ in window], [p for _, p in window], cache)
        cache.keep_last(n, np.arange(0, n, 2))
        pos += n
    held = cache.stored_lengths()
    assert held[:2] == [WINDOW - 1, WINDOW - 1] and held[2] == len(cache) == 45


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=st.sampled_from(LAYOUTS),
    steps=st.lists(
        st.tuples(st.integers(1, 24), st.sampled_from(["keep", "rollback"]), st.integers(0, 2**32 - 1)),
        min_size=1, max_size=5,
    ),
)
def test_any_sequence_of_keeps_and_rollbacks_matches_the_reference(layout, steps):
    cache, history, pos = KVCache(model().config, bound_sliding=layout), [], 0
    for n, action, seed in steps:
        rng = np.random.default_rng(seed)
        window = tokens(rng, n, pos)
        got = run([t for t, _ in window], [p for _, p in window], cache)
        torch.testing.assert_close(got, reference(history, window), atol=1e-4, rtol=1e-4)
        if action == "rollback":
            cache.rollback(n)
        else:
            keep = np.flatnonzero(rng.random(n) < 0.5)
            cache.keep_last(n, keep)
            history.append((window, list(keep)))
        pos += n
        assert len(cache) == kept_count(history)


def test_rollback_and_keep_reject_more_positions_than_the_cache_holds():
    cache = KVCache(model().config)
    run([5, 6, 7], [0, 1, 2], cache)
    with pytest.raises(ValueError, match="4"):
        cache.rollback(4)
    with pytest.raises(ValueError, match="4"):
        cache.keep_last(4, np.arange(2))


def test_forward_with_the_cache_emits_no_deprecation_warning():
    cache = KVCache(model().config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(list(range(4, 40)), list(range(36)), cache)
        cache.keep_last(36, np.arange(0, 36, 3))
        run(list(range(40, 60)), list(range(36, 56)), cache)
        cache.rollback(20)
    bad = [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not bad, bad


def _decorated(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


class _OldBody(torch.nn.Module):
    def forward(self, input_ids=None, past_key_values=None, use_cache=None, **kwargs):
        return None


class _NewBody(torch.nn.Module):
    @_decorated  # like transformers' deprecate_kwarg: the signature is read through functools.wraps
    def forward(self, input_ids=None, cache=None, use_cache=None, **kwargs):
        return None


class _OpaqueBody(torch.nn.Module):
    def forward(self, *args, **kwargs):
        return None


def test_cache_keyword_is_read_from_the_forward_signature():
    assert cache_keyword(_OldBody()) == "past_key_values"
    assert cache_keyword(_NewBody()) == "cache"
    assert cache_keyword(_OpaqueBody()) == "past_key_values"  # the name every transformers 5.x release still takes
    import inspect

    takes_cache = "cache" in inspect.signature(type(model().base_model).forward).parameters
    assert cache_keyword(model().base_model) == ("cache" if takes_cache else "past_key_values")
