"""The key/value cache of a scoring session: the one place that knows how transformers' cache works.

Scoring needs three things a generation cache is not built for: roll a window back, keep an arbitrary subset of it
(the kept tokens of a pruned window), and stay small on sliding-window layers. transformers' cache API has moved
within 5.x (the forward argument was renamed ``past_key_values`` -> ``cache`` in 5.24, sliding layers learned to
record their past in 5.15, ``crop``'s argument changed meaning), so this module works out once what the installed
version offers and everything else goes through :class:`KVCache`. tests/test_kvcache.py checks it against one
uncached forward masked to what each token saw, on the oldest supported and the newest transformers (.ci/run).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Sequence

import numpy as np

_NEW_KEYWORD = "cache"  # transformers >= 5.24
_OLD_KEYWORD = "past_key_values"  # deprecated in 5.24, removed in 5.40


@functools.lru_cache(maxsize=None)
def _keyword_for(forward: Any) -> str:
    try:
        params = inspect.signature(forward).parameters  # follows functools.wraps, as transformers' decorators use
    except (TypeError, ValueError):
        return _OLD_KEYWORD
    return _NEW_KEYWORD if _NEW_KEYWORD in params else _OLD_KEYWORD


def cache_keyword(module: Any) -> str:
    """The name under which ``module``'s forward takes the KV cache. Read once per model class, not per call.

    Models that name neither (``**kwargs`` only) get the old name, which every transformers 5.x before 5.40 accepts.
    """
    return _keyword_for(type(module).forward)


@functools.lru_cache(maxsize=None)
def can_bound_sliding_layers() -> bool:
    """Whether sliding-window cache layers can record their past, hence be rolled back (transformers >= 5.15)."""
    from transformers.cache_utils import DynamicSlidingWindowLayer

    return hasattr(DynamicSlidingWindowLayer, "activate_past_recording")


class KVCache:
    """A model's KV cache that can roll back and keep a subset of its most recent positions.

    Positions are counted in cache slots: a kept subset is packed together. Left to itself the model's sliding-window
    attention spans the last ``sliding_window`` slots; where kept tokens keep their original RoPE positions (gaps
    where others dropped), :meth:`position_masks` gives the masks that span ``sliding_window`` positions instead.

    ``bound_sliding`` (default: whenever transformers supports it) keeps sliding-window layers at their window
    between forwards. Without it every layer holds the whole prefix and the attention mask alone applies the window:
    the same scores, but more memory and attention work on long prompts.
    """

    def __init__(self, config: Any, *, bound_sliding: bool | None = None) -> None:
        from transformers import DynamicCache

        if bound_sliding is None:
            bound_sliding = can_bound_sliding_layers()
        elif bound_sliding and not can_bound_sliding_layers():
            raise ValueError("bound_sliding=True needs transformers >= 5.15 (sliding layers that record their past)")
        self._bounded = bound_sliding
        self._layer_types = list(getattr(config, "layer_types", None) or [])
        self._sliding_window = getattr(config, "sliding_window", None)
        self._eager = getattr(config, "_attn_implementation", "eager") == "eager"
        if bound_sliding:
            self._cache = DynamicCache(config=config)
            for layer in self._cache.layers:
                if getattr(layer, "is_sliding", False):
                    # Without it a sliding layer forgets what falls out of its window at once, and cannot roll back.
                    layer.activate_past_recording()
        else:
            self._cache = DynamicCache()  # no config: plain full layers, grown as the model writes them

    @property
    def native(self) -> Any:
        """The transformers cache object, to pass to a forward under :func:`cache_keyword`."""
        return self._cache

    def __len__(self) -> int:
        """Positions the cache stands for (sliding layers may hold fewer of them)."""
        return int(self._cache.get_seq_length())

    def stored_lengths(self) -> list[int]:
        """Positions each layer actually holds in memory."""
        return [0 if states is None else states[0].shape[-2] for states in map(_states, self._cache.layers)]

    def rollback(self, n: int) -> None:
        """Forget the last ``n`` positions in every layer, as if they had never been forwarded."""
        self._check(n)
        if n:
            self._cache.crop(-n)  # negative means "remove n" in every 5.x; positive meant a length before 5.18
        self._trim()

    def keep_last(self, n: int, keep: Sequence[int]) -> None:
        """Of the last ``n`` positions keep only ``keep`` (ascending indices into them), packed at the end."""
        import torch

        self._check(n)
        if n == 0:
            return
        kept = []
        for layer in self._cache.layers:
            states = _states(layer)
            if states is None:
                kept.append(None)
                continue
            idx = torch.as_tensor(keep, dtype=torch.long, device=states[0].device)
            kept.append(tuple(t[..., -n:, :].index_select(-2, idx) for t in states))
        # Crop, then re-append through the cache's own update: it keeps each layer's bookkeeping (lengths, windows).
        self._cache.crop(-n)
        for i, states in enumerate(kept):
            if states is not None and states[0].shape[-2]:
                self._cache.update(states[0], states[1], i)
        self._trim()

    def position_masks(self, past_positions: np.ndarray, query_positions: np.ndarray, dtype: Any,
                       device: Any = None) -> dict[str, Any] | None:
        """Attention masks, per layer type as Gemma-style models take them, for a forward of tokens at
        ``query_positions`` after the cached slots, whose positions are ``past_positions`` (one per slot, ascending).

        The model applies sliding windows in cache slots, which is right only while slots and positions agree. When
        dropped tokens leave gaps, ``sliding_window`` slots reach further back than ``sliding_window`` positions, and
        the sliding layers meet relative distances they were never trained on: measured on Gemma 3 270M, keeping
        70 % of the tokens made every token past the 512th look 2-3x more surprising than it is. These masks apply the
        window in positions. None when no layer slides (causality alone is the same in slots and positions).
        """
        if not self._sliding_window or "sliding_attention" not in self._layer_types:
            return None
        import torch

        masks = {}
        for kind, allowed in self.allowed(past_positions, query_positions).items():
            mask = torch.from_numpy(allowed)[None, None].to(device)
            masks[kind] = additive_mask(mask, dtype) if self._eager else mask
        return masks

    def allowed(self, past_positions: np.ndarray, query_positions: np.ndarray) -> dict[str, np.ndarray]:
        """Per layer type, which of its stored slots and the new tokens each new token may attend to: a boolean
        (queries, stored + queries) array, causal in slots, and on sliding layers within the window in positions.
        A model without layer types has one, "full_attention"."""
        q = len(query_positions)
        positions = np.concatenate([np.asarray(past_positions, dtype=np.int64), query_positions])
        n, lengths = len(positions), self.stored_lengths()
        query_slots = np.arange(n - q, n)
        out = {}
        for kind in dict.fromkeys(self._layer_types or ["full_attention"]):
            layer = self._layer_types.index(kind) if self._layer_types else 0
            kv = min(lengths[layer] if layer < len(lengths) else 0, n - q) + q  # what the layer's forward will hold
            allowed = np.arange(n - kv, n)[None, :] <= query_slots[:, None]
            if kind == "sliding_attention" and self._sliding_window:
                allowed &= positions[n - kv :][None, :] > query_positions[:, None] - self._sliding_window
            out[kind] = allowed
        return out

    def layer_states(self) -> list[tuple[Any, Any] | None]:
        """Each layer's stored (keys, values), shaped (batch, heads, slots, head_dim); None where it holds none."""
        return native_states(self._cache)

    def append(self, layer: int, keys: Any, values: Any) -> None:
        """New states for one layer, through the cache's own update (as a forward adds them: windows and all)."""
        self._cache.update(keys, values, layer)

    def _trim(self) -> None:
        if self._bounded:
            self._cache.crop(0)  # a recording sliding layer drops what no later query can attend to

    def _check(self, n: int) -> None:
        if not 0 <= n <= len(self):
            raise ValueError(f"cannot drop the last {n} positions of a cache holding {len(self)}")


def native_states(cache: Any) -> list[tuple[Any, Any] | None]:
    """(keys, values) per layer of a transformers cache; None where a layer holds none."""
    return [_states(layer) for layer in cache.layers]


def filled_cache(states: Sequence[tuple[Any, Any]]) -> Any:
    """A plain transformers cache (no sliding bookkeeping) holding ``states``, one (keys, values) per layer."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer, (keys, values) in enumerate(states):
        cache.update(keys, values, layer)
    return cache


def additive_mask(allowed: Any, dtype: Any) -> Any:
    """A boolean mask as eager attention takes it: 0 where allowed, the dtype's lowest value elsewhere."""
    import torch

    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)


def _states(layer: Any) -> tuple[Any, Any] | None:
    keys = getattr(layer, "keys", None)
    if keys is None or keys.numel() == 0:
        return None
    return keys, layer.values
