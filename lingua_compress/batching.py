"""Several prompts' scoring forwards run as one batched forward (issue 11: keep a GPU busy).

One prompt's compression is a chain of small forwards, each window conditioned on what the windows before it kept,
so a GPU spends most of it waiting on kernel launches. :meth:`Compressor.compress_batch` with ``batch_size > 1``
runs up to ``batch_size`` prompts' pipelines in threads of their own. The threads take turns holding one lock, so
the pipeline's Python code, the tokenizer and the model are never used by two at once; a scoring forward is where
a thread hands the lock on. It queues its request and waits until every thread still working has queued one; the
last to arrive runs them as one forward, padded, each row under its own positions and masks, and hands each
session's cache its new key/value states back. Rows attend only to their own cache and tokens, so a prompt's scores
are those of :meth:`Compressor.compress` up to the rounding of batched kernels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .kvcache import KVCache, additive_mask, filled_cache, native_states

if TYPE_CHECKING:
    from .scoring import CausalLMScorer

_LOCAL = threading.local()
GPU_BATCH = 16  # prompts per round on a GPU: a 270M model's windows fill it long before memory does


def auto_batch_size(scorer: Any) -> int:
    """How many prompts to batch by default: :data:`GPU_BATCH` for a causal-LM scorer on a GPU, else 1 (on a CPU
    a batch adds padding and saves no launches)."""
    from .scoring import CausalLMScorer

    if isinstance(scorer, CausalLMScorer) and not scorer.backend.device.startswith("cpu"):
        return GPU_BATCH
    return 1


def map_batched(scorer: "CausalLMScorer", fn: Callable[[Any], Any], items: Sequence[Any], size: int) -> list[Any]:
    """``[fn(item) for item in items]``: one after another where ``size`` or the items number one, else with up to
    ``size`` items' forwards batched (:class:`RoundBatcher`)."""
    if size <= 1 or len(items) < 2:
        return [fn(item) for item in items]
    return RoundBatcher(scorer, size).map(fn, items)


def active(scorer: Any) -> "RoundBatcher | None":
    """The batcher this thread's forwards on ``scorer`` go through, if any."""
    batcher = getattr(_LOCAL, "batcher", None)
    return batcher if batcher is not None and batcher.scorer is scorer else None


@dataclass
class _Request:
    order: int
    ids: list[int]
    cache: KVCache
    query: np.ndarray
    past: np.ndarray
    hidden: Any = None
    error: BaseException | None = None


class RoundBatcher:
    """Runs ``fn`` over items in ``workers`` threads whose forwards on ``scorer`` are batched round by round."""

    def __init__(self, scorer: "CausalLMScorer", workers: int) -> None:
        self.scorer = scorer
        self._workers = workers
        self._cv = threading.Condition()
        self._live = 0
        self._pending: list[_Request] = []
        self._next = 0

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[fn(item) for item in items]``, or the first item's exception (by position) once all have run."""
        results: list[Any] = [None] * len(items)
        errors: list[BaseException | None] = [None] * len(items)
        self._next, self._live = 0, min(self._workers, len(items))
        threads = [threading.Thread(target=self._work, args=(fn, items, results, errors), daemon=True)
                   for _ in range(self._live)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for err in errors:
            if err is not None:
                raise err
        return results

    def _work(self, fn, items, results, errors) -> None:
        with self._cv:
            _LOCAL.batcher = self
            try:
                while self._next < len(items):
                    i, self._next = self._next, self._next + 1
                    _LOCAL.order = i
                    try:
                        results[i] = fn(items[i])
                    except BaseException as exc:  # noqa: BLE001 - re-raised by map() on the caller's thread
                        errors[i] = exc
            finally:
                _LOCAL.batcher = None
                self._live -= 1
                self._run_if_complete()

    def forward(self, ids: Sequence[int], cache: KVCache, query: np.ndarray, past: np.ndarray) -> Any:
        """Final hidden states of ``ids``, computed in this round's batched forward (called holding the lock)."""
        req = _Request(_LOCAL.order, [int(i) for i in ids], cache, np.asarray(query), np.asarray(past))
        self._pending.append(req)
        self._run_if_complete()
        while req.hidden is None and req.error is None:
            self._cv.wait()
        if req.error is not None:
            raise req.error
        return req.hidden

    def _run_if_complete(self) -> None:
        if not self._pending or len(self._pending) < self._live:
            return
        batch, self._pending = sorted(self._pending, key=lambda r: r.order), []
        try:
            hidden = forward_rows(self.scorer, batch)
        except BaseException as exc:  # noqa: BLE001 - every waiting thread raises it
            for req in batch:
                req.error = exc
        else:
            for req, h in zip(batch, hidden):
                req.hidden = h
        self._cv.notify_all()


def forward_rows(scorer: "CausalLMScorer", reqs: Sequence[_Request]) -> list[Any]:
    """One forward for several sessions: new tokens right-padded, each cache left-padded to the longest per layer,
    masks that let a row see only its own slots and tokens; each cache then gets its row's new states."""
    torch = scorer._torch
    device = scorer._head.device
    widths = [len(r.ids) for r in reqs]
    width = max(widths)
    ids = torch.zeros(len(reqs), width, dtype=torch.long)
    pos = torch.zeros(len(reqs), width, dtype=torch.long)
    for row, r in enumerate(reqs):
        ids[row, : len(r.ids)] = torch.as_tensor(r.ids)
        pos[row] = torch.as_tensor(np.concatenate([r.query, r.query[-1] + 1 + np.arange(width - len(r.ids))]))
    per_row = [r.cache.layer_states() for r in reqs]
    if not _batchable(per_row):
        return [_alone(scorer, r) for r in reqs]
    past = _padded_past(torch, per_row)
    masks = _masks(scorer, reqs, [keys.shape[-2] for keys, _ in past], width)
    kwargs = {scorer._cache_keyword: filled_cache(past)}
    with torch.inference_mode():
        out = scorer._body(input_ids=ids.to(device), position_ids=pos.to(device), attention_mask=masks,
                           use_cache=True, **kwargs)
        new = native_states(kwargs[scorer._cache_keyword])
        start = [past[layer][0].shape[-2] if past else 0 for layer in range(len(new))]
        for row, r in enumerate(reqs):
            for layer, (keys, values) in enumerate(new):
                span = slice(start[layer], start[layer] + widths[row])
                r.cache.append(layer, keys[row : row + 1, :, span], values[row : row + 1, :, span])
    return [out.last_hidden_state[row, :w] for row, w in enumerate(widths)]


def _batchable(per_row: list[list[tuple[Any, Any] | None]]) -> bool:
    """Whether every layer holds states in some row, or none does (every session's first forward). A model whose
    layers share another's states (none of their own) is not."""
    layers = max((len(states) for states in per_row), default=0)
    held = [any(layer < len(states) and states[layer] is not None for states in per_row) for layer in range(layers)]
    return all(held) or not any(held)


def _alone(scorer: "CausalLMScorer", r: _Request) -> Any:
    """``r``'s forward on its own, under its own position masks (the path a session takes outside a batch)."""
    masks = r.cache.position_masks(r.past, r.query, scorer._dtype, scorer._head.device)
    pos = scorer._torch.as_tensor(r.query, device=scorer._head.device)[None]
    return scorer.forward(r.ids, r.cache, position_ids=pos, attention_mask=masks)  # no past_positions: not batched


def _padded_past(torch: Any, per_row: list[list[tuple[Any, Any] | None]]) -> list[tuple[Any, Any]]:
    """Every layer's states for the batch, each row's slots at the end (zeros before them, masked). [] when no row
    holds any (every session's first forward)."""
    layers = max((len(states) for states in per_row), default=0)
    out = []
    for layer in range(layers):
        rows = [states[layer] if layer < len(states) else None for states in per_row]
        first = next((s for s in rows if s is not None), None)
        if first is None:
            return []  # _batchable: then no layer holds any
        slots = max(0 if s is None else s[0].shape[-2] for s in rows)
        keys, values = (torch.zeros((len(rows), t.shape[1], slots, t.shape[3]), dtype=t.dtype, device=t.device)
                        for t in first)
        for row, s in enumerate(rows):
            if s is not None and s[0].shape[-2]:
                keys[row, :, slots - s[0].shape[-2] :] = s[0][0]
                values[row, :, slots - s[1].shape[-2] :] = s[1][0]
        out.append((keys, values))
    return out


def _masks(scorer: "CausalLMScorer", reqs: Sequence[_Request], past_slots: list[int], width: int) -> Any:
    """Per layer type, (batch, 1, width, past + width) masks placing each row's own ``KVCache.allowed``."""
    torch = scorer._torch
    config = scorer.loaded.model.config
    kinds = list(getattr(config, "layer_types", None) or [])
    first = {kind: kinds.index(kind) for kind in dict.fromkeys(kinds)} if kinds else {"full_attention": 0}
    eager = getattr(config, "_attn_implementation", "eager") == "eager"  # eager adds float masks, sdpa takes bools
    own_masks = [r.cache.allowed(r.past, r.query) for r in reqs]  # every kind's at once, per row
    masks = {}
    for kind, layer in first.items():
        slots = past_slots[layer] if past_slots else 0
        allowed = np.zeros((len(reqs), 1, width, slots + width), dtype=bool)
        for row, r in enumerate(reqs):
            own = own_masks[row][kind]
            q = len(r.ids)
            kept = own.shape[1] - q  # the slots this row's layer holds
            allowed[row, 0, :q, slots - kept : slots] = own[:, :kept]
            allowed[row, 0, :q, slots : slots + q] = own[:, kept:]
            allowed[row, 0, np.arange(q, width), slots + np.arange(q, width)] = True  # padding sees itself
        mask = torch.from_numpy(allowed).to(scorer._head.device)
        masks[kind] = additive_mask(mask, scorer._dtype) if eager else mask
    return masks if kinds else masks["full_attention"]
