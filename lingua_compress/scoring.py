"""Scoring: per-token negative log-likelihood (surprisal, in nats) from a small causal LM.

Never materialises ``[tokens, vocab]`` logits: with Gemma's 262k vocabulary that is 2.6 GB per copy for a 2.5k-token
prompt. NLL is computed from the final hidden states with a chunked output head and a logsumexp. In the default
``vocab="restricted"`` mode the softmax runs over a fixed set of 32k frequent ids plus the ids of the text being
scored (so the target is always inside), which agrees with the full softmax at Pearson 0.999 on measured text and is
2-3x faster on a CPU; ``vocab="full"`` is the exact mode.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from . import batching
from .errors import ConfigError
from .kvcache import KVCache, cache_keyword
from .models import LoadedModel, check_attention, check_bf16_embedding, cpu_bf16_feature, load_model
from .result import Backend

VOCAB_MODES = ("restricted", "full")
# How a window is conditioned on the kept prefix. "reuse": the kept tokens keep the key/value states computed
# when their own window was scored (each token is forwarded once). "recompute": the kept tokens are re-encoded
# as the compressed text (exact, forwards the kept tokens a second time).
CONDITIONING_MODES = ("reuse", "recompute")
RESTRICTED_SIZE = 32768
_HEAD_CHUNK_ELEMENTS = 8 * 1024 * 1024  # rows x vocab per head chunk: 256 rows of the restricted head, 32 MB fp32
# On a CPU each chunk's logits are made a block of head rows at a time, and the blocks' logsumexps combined: 8 MB of
# logits at once instead of 32 MB plus its copies (peak RSS -50 MB on the fp32 path), each weight still read once per
# chunk. On a GPU one block: there every extra kernel launch costs.
_HEAD_BLOCK_ROWS = 8192
PACK_ROWS = 200  # the batch size packed weights are laid out for: a default window (any size works)
_ONE_SHOT_CHUNK = 512  # a one-shot pass goes through the session in chunks: sliding-window layers stay small


@runtime_checkable
class ScoringSession(Protocol):
    """Scores a prompt window by window, each window conditioned on what was kept of the windows before it."""

    def score(self, ids: Sequence[int], need: Sequence[bool] | None = None) -> np.ndarray:
        """NLL of each of ``ids`` given the kept prefix and the ids before it in this window.

        Where ``need`` is given and False the value may be NaN: those scores are not wanted (e.g. tokens of
        protected words), and skipping them saves the output-head work.
        """

    def keep(self, mask: Sequence[bool]) -> None:
        """Which ids of the window just scored join the prefix that later windows are conditioned on."""


@runtime_checkable
class Scorer(Protocol):
    """What the compressor needs from a language model. Implement it to plug in another backend."""

    name: str

    def tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and their ``[n, 2]`` character offsets in ``text``, without special tokens."""

    def token_nll(self, ids: Sequence[int]) -> np.ndarray:
        """NLL of every token given all tokens before it (the first one given the start of text)."""

    def session(self, conditioning: str = "reuse") -> ScoringSession:
        """A fresh conditional scoring session with an empty prefix (see :data:`CONDITIONING_MODES`)."""


class CausalLMScorer:
    """A :class:`Scorer` backed by a transformers causal LM (the embedded Gemma 3 270M by default)."""

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        vocab: str = "restricted",
        loaded: LoadedModel | None = None,
        adapter: str | os.PathLike[str] | None = None,
        bf16_embedding: bool | None = None,
        packed_linear: bool | None = None,
        attention: str = "eager",
    ) -> None:
        """``bf16_embedding``: on the fp32 path keep the token-embedding table in bf16 (see
        :mod:`lingua_compress.lowmem`). None: where exact and worth it (with ``vocab="full"`` the whole table would
        be copied back to fp32, so never); False: off.

        ``packed_linear``: on the CPU (fp32, or bf16 where the CPU has it) run the body's linear layers and the
        restricted head through weights prepacked for oneDNN (see :mod:`lingua_compress.cpu_kernels`; the model
        becomes inference-only). None: wherever available, on a model this scorer loads; False: ATen's linear.

        ``attention``: "eager" (default) or torch's fused "sdpa". On an AMX CPU in bf16 sdpa compressed 6-20 % faster
        and passed the scores-and-kept-set gate, but it rounds differently, and on the quality benchmark's fast loop
        its GSM8K prefixes kept 2-3 points less of the answers' likelihood at 0.2 and 0.1 (README, Benchmarks):
        opt in where speed matters more. In fp32 both give the same text."""
        _check_options(vocab, loaded, adapter, bf16_embedding, packed_linear, attention)
        import torch

        self._torch = torch
        if bf16_embedding is None and vocab == "full":
            bf16_embedding = False
        self.loaded = loaded if loaded is not None else load_model(model, device=device, dtype=dtype, adapter=adapter,
                                                                   bf16_embedding=bf16_embedding,
                                                                   attention=attention)
        self.name = self.loaded.name
        self.tokenizer = self.loaded.tokenizer
        lm = self.loaded.model
        self._body = lm.base_model
        self._cache_keyword = cache_keyword(self._body)  # once: inspecting the signature per forward would cost
        self._head = lm.get_output_embeddings().weight.detach()  # may be stored in bf16 (lowmem): gather, then cast
        table = lm.get_input_embeddings()
        self._dtype = getattr(table, "compute_dtype", self._head.dtype)
        self._softcap = getattr(lm.config, "final_logit_softcapping", None)
        bos = self.tokenizer.bos_token_id
        self._bos = int(bos if bos is not None else self.tokenizer.eos_token_id)
        self.max_length = int(getattr(lm.config, "max_position_embeddings", 2048) or 2048)
        self._set_head(vocab)
        self._pack(packed_linear is not False and loaded is None)
        self.backend = Backend(str(self._head.device), _dtype_name(self._dtype), cpu_bf16_feature(),
                               self.loaded.requested_dtype, _dtype_name(table.weight.dtype), self._kernel_name(),
                               str(getattr(lm.config, "_attn_implementation", None) or "eager"))

    def _set_head(self, vocab: str) -> None:
        """The softmax's fixed part: the whole head, or in "restricted" mode its first RESTRICTED_SIZE rows, as
        blocks of rows (one on a GPU), each a plain matmul until :meth:`_pack` packs it."""
        vocab_size = self._head.shape[0]
        self.vocab = "full" if vocab_size <= 2 * RESTRICTED_SIZE else vocab
        self._in_base = self._torch.zeros(vocab_size, dtype=self._torch.bool, device=self._head.device)
        width = vocab_size
        if self.vocab == "restricted":
            # Low ids are the frequent ones in BPE/SentencePiece vocabularies (measured: Pearson 0.999 vs full).
            self._in_base[:RESTRICTED_SIZE] = True
            width = RESTRICTED_SIZE
        self._base_width = width
        step = _HEAD_BLOCK_ROWS if self._head.device.type == "cpu" else width
        # A copy only where the table is stored in bf16 (lowmem) and computed in fp32.
        self._base_blocks = [self._head[i : min(i + step, width)].to(self._dtype) for i in range(0, width, step)]
        self._base_heads: list[Any] = [lambda h, w=w: h @ w.T for w in self._base_blocks]

    def _pack(self, wanted: bool) -> None:
        """Pack the body's linear layers and the restricted head's blocks for oneDNN where wanted and possible."""
        from . import cpu_kernels

        torch = self._torch
        native = self._dtype == torch.float32 or (self._dtype == torch.bfloat16 and cpu_bf16_feature() != "none")
        if not wanted or not native or self._head.device.type != "cpu":
            return  # bf16 on a CPU without it is emulated: no layout would make that fast
        if not cpu_kernels.pack_linears(self._body, PACK_ROWS):
            return
        if self.vocab != "restricted":  # the full head is the tied table itself: a packed copy would double it
            return
        # Block by block, each copy released once packed (fp32: 80 MB in all; bf16: views of the table, +42 MB).
        blocks, self._base_blocks = self._base_blocks, []
        self._base_heads = []
        while blocks:
            self._base_heads.append(cpu_kernels.pack_matrix(blocks.pop(0), PACK_ROWS))
            cpu_kernels.release_freed_memory()
        # Copying those rows read the table's file pages (42 MB); from now on only the rows of a prompt's own ids are
        # gathered, and they come back from the file as touched. The table is never written (a model handed in is
        # never packed), so the pages hold the file's values.
        cpu_kernels.evict_file_pages(self._head[: self._base_width], cpu_kernels.file_mappings())

    def _kernel_name(self) -> str:
        from .cpu_kernels import count_linears  # imports torch: not at package import

        packed, plain = count_linears(self._body)
        return "aten" if not packed else "onednn-packed" if not plain else f"onednn-packed {packed}/{packed + plain}"

    def tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        return ids, offsets

    def nll_from_hidden(self, hidden: Any, targets: Any) -> np.ndarray:
        """NLL of ``targets[i]`` from ``hidden[i]`` (the state just before it), without full-vocab logits."""
        torch = self._torch
        if len(targets) == 0:
            return np.zeros(0, dtype=np.float32)
        hidden = hidden.to(self._dtype)
        target_logit = (hidden * self._head[targets].to(self._dtype)).sum(-1).float()
        heads, width = list(self._base_heads), self._base_width
        if self.vocab == "restricted":
            extra = torch.unique(targets[~self._in_base[targets]])
            if len(extra):
                heads.append(lambda h, w=self._head[extra].to(self._dtype): h @ w.T)
                width += len(extra)
        rows = max(1, _HEAD_CHUNK_ELEMENTS // width)
        lse = torch.empty(len(targets), dtype=torch.float32, device=hidden.device)
        for r0 in range(0, len(targets), rows):
            h = hidden[r0 : r0 + rows]
            parts = [self._logsumexp(head(h)) for head in heads]
            lse[r0 : r0 + rows] = parts[0] if len(parts) == 1 else torch.logsumexp(torch.stack(parts, -1), -1)
        if self._softcap:
            target_logit = torch.tanh(target_logit / self._softcap) * self._softcap
        return (lse - target_logit).cpu().numpy().astype(np.float32)

    def _logsumexp(self, logits: Any) -> Any:
        logits = logits.float()
        if self._softcap:
            logits = self._torch.tanh(logits / self._softcap) * self._softcap
        return self._torch.logsumexp(logits, dim=-1)

    def forward(self, ids: Sequence[int], cache: KVCache, position_ids: Any = None, attention_mask: Any = None,
                past_positions: Sequence[int] | None = None) -> Any:
        """Final hidden states of ``ids`` appended to ``cache`` (which grows by ``len(ids)``).

        With ``past_positions`` (the position of each cached slot) and ``position_ids``, a forward made inside
        :meth:`Compressor.compress_batch`'s rounds is batched with the other prompts' (:mod:`.batching`)."""
        torch = self._torch
        batcher = batching.active(self) if past_positions is not None and position_ids is not None else None
        if batcher is not None:
            query = np.asarray(position_ids[0].tolist(), dtype=np.int64)
            return batcher.forward(ids, cache, query, np.asarray(past_positions, dtype=np.int64))
        x = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=self._head.device)[None]
        kwargs = {self._cache_keyword: cache.native}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        with torch.inference_mode():
            out = self._body(input_ids=x, use_cache=True, position_ids=position_ids, **kwargs)
        return out.last_hidden_state[0]

    def token_nll(self, ids: Sequence[int]) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        session = self.session()
        parts = []
        for i in range(0, len(ids), _ONE_SHOT_CHUNK):
            parts.append(session.score(ids[i : i + _ONE_SHOT_CHUNK]))
            session.keep(np.ones(len(parts[-1]), dtype=bool))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def session(self, conditioning: str = "reuse") -> "CausalLMSession":
        return CausalLMSession(self, conditioning)


class CausalLMSession:
    """Window-by-window scoring over a KV cache that holds only the kept prefix.

    The cache (:class:`~lingua_compress.kvcache.KVCache`) can roll a window back or keep a subset of it. In "reuse"
    mode the kept tokens' states stay in the cache, computed beside the whole window, and positions follow the
    original text (dropped tokens leave gaps); in "recompute" mode the window is rolled back and its kept tokens are
    forwarded again, in front of the next window, at contiguous positions.
    """

    def __init__(self, scorer: CausalLMScorer, conditioning: str = "reuse") -> None:
        if conditioning not in CONDITIONING_MODES:
            raise ConfigError(f"conditioning={conditioning!r} is not supported; use one of {CONDITIONING_MODES}")
        self._scorer = scorer
        self._torch = scorer._torch
        self._reuse = conditioning == "reuse"
        self._config = scorer.loaded.model.config
        self._reset([])

    def _reset(self, tail: list[int]) -> None:
        self._cache = KVCache(self._config)
        self._kept: list[int] = []  # ids in the cache, for a rebuild past the model's context
        self._positions: list[int] = []  # the position of each cache slot: "reuse" leaves gaps where tokens dropped
        self._gapped = False
        self._pending = [self._scorer._bos] + tail  # kept ids not in the cache yet
        self._next_pos = 0
        self._last_hidden: Any = None
        self._window: tuple[list[int], Any] | None = None

    def score(self, ids: Sequence[int], need: Sequence[bool] | None = None) -> np.ndarray:
        torch = self._torch
        ids = [int(i) for i in ids]
        if not ids:
            return np.zeros(0, dtype=np.float32)
        if self._window is not None:
            raise RuntimeError("keep() must be called after each score()")
        if self._next_pos + len(self._pending) + len(ids) > self._scorer.max_length:
            # Past the model's context: restart from the most recent half of the kept prefix.
            half = max(0, min(self._scorer.max_length // 2, self._scorer.max_length - len(ids) - 2))
            history = (self._kept + self._pending)[1:]  # without the leading <bos>
            self._reset(history[-half:] if half else [])
        self._prefill()
        inputs = self._pending + ids
        pos = torch.arange(self._next_pos, self._next_pos + len(inputs), device=self._scorer._head.device)
        hidden = self._scorer.forward(inputs, cache=self._cache, position_ids=pos[None],
                                      attention_mask=self._masks(len(inputs)), past_positions=self._positions)
        p = len(self._pending)
        if p:
            before = hidden[p - 1 : p - 1 + len(ids)]
        else:
            before = torch.cat([self._last_hidden[None], hidden[: len(ids) - 1]])
        self._window = (ids, hidden)
        targets = torch.as_tensor(ids, device=hidden.device)
        if need is None:
            return self._scorer.nll_from_hidden(before, targets)
        rows = np.flatnonzero(np.asarray(need, dtype=bool))
        out = np.full(len(ids), np.nan, dtype=np.float32)
        sel = torch.as_tensor(rows, device=hidden.device)
        out[rows] = self._scorer.nll_from_hidden(before[sel], targets[sel])
        return out

    def _masks(self, n: int) -> Any:
        """Masks that keep sliding windows in positions once dropped tokens have left gaps (see
        :meth:`KVCache.position_masks`); None while slots and positions agree, so the model builds its own."""
        if not self._gapped:
            return None
        query = np.arange(self._next_pos, self._next_pos + n)
        return self._cache.position_masks(np.asarray(self._positions), query, self._scorer._dtype,
                                          self._scorer._head.device)

    def _prefill(self) -> None:
        """Forward all but the last chunk of the pending prefix on its own, chunk by chunk: after a restart it can
        be 16k tokens, and one forward over it all would cost attention quadratic in that length."""
        while len(self._pending) > _ONE_SHOT_CHUNK:
            chunk, self._pending = self._pending[:_ONE_SHOT_CHUNK], self._pending[_ONE_SHOT_CHUNK:]
            pos = self._torch.arange(self._next_pos, self._next_pos + len(chunk), device=self._scorer._head.device)
            self._last_hidden = self._scorer.forward(chunk, cache=self._cache, position_ids=pos[None],
                                                     attention_mask=self._masks(len(chunk)),
                                                     past_positions=self._positions)[-1]
            self._kept += chunk
            self._positions += range(self._next_pos, self._next_pos + len(chunk))
            self._next_pos += len(chunk)

    def keep(self, mask: Sequence[bool]) -> None:
        if self._window is None:
            raise RuntimeError("keep() needs a score() call first")
        ids, hidden = self._window
        self._window = None
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(ids),):
            raise ValueError(f"keep() mask has shape {mask.shape}, the window has {len(ids)} ids")
        p = len(self._pending)
        kept_ids = [i for i, k in zip(ids, mask) if k]
        self._kept += self._pending
        if self._reuse:
            idx = np.concatenate([np.arange(p), p + np.flatnonzero(mask)])
            self._cache.keep_last(p + len(ids), idx)
            self._kept += kept_ids
            self._positions += (self._next_pos + idx).tolist()
            self._gapped = self._gapped or not mask.all()
            self._next_pos += p + len(ids)
            self._pending = []
            if len(idx):
                self._last_hidden = hidden[int(idx[-1])]
        else:
            self._cache.rollback(len(ids))
            self._positions += range(self._next_pos, self._next_pos + p)
            self._next_pos += p
            if p:
                self._last_hidden = hidden[p - 1]
            self._pending = kept_ids


def _check_options(vocab: str, loaded: LoadedModel | None, adapter: Any, bf16_embedding: bool | None,
                   packed_linear: bool | None, attention: str) -> None:
    """Refuse bad values, and the options that change how a model is loaded together with a model handed in."""
    if vocab not in VOCAB_MODES:
        raise ConfigError(f"vocab={vocab!r} is not supported; use one of {VOCAB_MODES}")
    check_bf16_embedding(packed_linear, "packed_linear")
    if loaded is not None and (adapter is not None or check_bf16_embedding(bf16_embedding) or packed_linear
                               or check_attention(attention) != "eager"):
        raise ConfigError("adapter=, bf16_embedding=True, packed_linear=True and attention='sdpa' apply to a "
                          "model this scorer loads; with loaded=, apply them first (lingua_compress.align."
                          "apply_adapter, lowmem.store_embedding_bf16, cpu_kernels.pack_linears, "
                          "from_pretrained's attn_implementation)")


def _dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")
