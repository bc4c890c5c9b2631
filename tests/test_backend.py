"""Which compute path the scorer ran (``CompressionResult.backend``), and the fp32 path with the token-embedding
table kept in bf16 (lingua_compress.lowmem): scores unchanged, table stored in bf16, the whole LM still callable."""

from __future__ import annotations

import numpy as np
import pytest

from fakes import FakeScorer
from lingua_compress import Backend, Compressor, cpu_kernels, models
from lingua_compress.errors import ConfigError
from lingua_compress.scoring import CausalLMScorer
from tiny import CORPUS, save_tiny_model, tiny_model

TEXT = " ".join(CORPUS) * 3


@pytest.fixture(scope="module")
def fp32_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("fp32") / "m"))


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory):
    """The tiny model saved in bf16, as the default scorer's cache is: a bf16 table cast to fp32 is exact."""
    import torch

    from tiny import tiny_tokenizer

    path = tmp_path_factory.mktemp("bf16") / "m"
    tiny_model().to(torch.bfloat16).save_pretrained(str(path))
    tiny_tokenizer().save_pretrained(str(path))
    return str(path)


def scorer(path, **kwargs):
    return CausalLMScorer(path, device="cpu", dtype="float32", vocab="full", **kwargs)


def nll(s):
    return s.token_nll(s.tokenize(TEXT)[0])


def test_result_says_which_device_and_dtype_the_scorer_ran_in(fp32_dir):
    res = Compressor(fp32_dir, device="cpu", dtype="float32").compress(TEXT, 0.3)
    kernel = "onednn-packed" if cpu_kernels.available() else "aten"
    assert res.backend == Backend("cpu", "float32", models.cpu_bf16_feature(), "float32", "float32", kernel)
    assert res.to_dict()["backend"]["dtype"] == "float32" and "cpu/float32" in str(res.backend)
    assert Compressor(scorer=FakeScorer()).compress(TEXT, 0.3).backend is None  # a custom scorer need not say


@pytest.mark.parametrize("flags, want", [("fpu avx2 avx512f", "none"), ("avx2 avx512f avx512_bf16", "avx512_bf16"),
                                         ("avx512_bf16 amx_bf16 amx_tile", "amx_bf16")])
def test_auto_dtype_follows_the_cpu_feature(monkeypatch, tmp_path, flags, want):
    import torch

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    real = models.Path
    monkeypatch.setattr(models, "Path", lambda p: info if p == "/proc/cpuinfo" else real(p))
    assert models.cpu_bf16_feature() == want
    assert models.resolve_dtype("auto", "cpu") == (torch.float32 if want == "none" else torch.bfloat16)
    assert models.resolve_dtype("float32", "cpu") == torch.float32  # the override wins


def test_bf16_table_from_a_bf16_checkpoint_scores_exactly_the_same(bf16_dir):
    import torch

    on, off = scorer(bf16_dir, bf16_embedding=True), scorer(bf16_dir, bf16_embedding=False)
    lm = on.loaded.model
    assert lm.get_input_embeddings().weight.dtype == torch.bfloat16
    assert {p.dtype for n, p in lm.named_parameters() if "embed" not in n} == {torch.float32}
    assert on.backend.embedding_dtype == "bfloat16" and on.backend.dtype == "float32"
    assert off.backend.embedding_dtype == "float32"
    np.testing.assert_array_equal(nll(on), nll(off))
    ids = torch.as_tensor(on.tokenize(TEXT)[0][:40])[None]
    with torch.inference_mode():  # the whole LM (generation shares it) casts the tied head per chunk
        np.testing.assert_array_equal(lm(ids).logits.numpy(), off.loaded.model(ids).logits.numpy())


def test_bf16_table_rounded_from_an_fp32_checkpoint_stays_close(fp32_dir):
    import torch

    on, off = scorer(fp32_dir, bf16_embedding=True), scorer(fp32_dir, bf16_embedding=False)
    assert on.loaded.model.get_input_embeddings().weight.dtype == torch.bfloat16
    a, b = nll(on), nll(off)
    assert np.abs(a - b).max() < 0.05 * np.abs(b).mean() and np.corrcoef(a, b)[0, 1] > 0.999


def test_auto_keeps_the_table_where_nothing_is_gained_or_exactness_is_not_known(bf16_dir, fp32_dir):
    import torch

    # The tiny vocabulary is small, and an fp32 checkpoint's table would be rounded: auto leaves both alone.
    for path in (bf16_dir, fp32_dir):
        lm = models.load_model(path, device="cpu", dtype="float32", bf16_embedding=None).model
        assert lm.get_input_embeddings().weight.dtype == torch.float32
        assert scorer(path).backend.embedding_dtype == "float32"
    assert CausalLMScorer(bf16_dir, device="cpu", dtype="bfloat16").backend.embedding_dtype == "bfloat16"


def test_bad_bf16_embedding_values_are_config_errors(bf16_dir):
    with pytest.raises(ConfigError, match="bf16_embedding='yes'"):
        Compressor(bf16_embedding="yes")
    from tiny import tiny_scorer

    with pytest.raises(ConfigError, match="bf16_embedding=True"):
        CausalLMScorer(loaded=tiny_scorer().loaded, bf16_embedding=True)
