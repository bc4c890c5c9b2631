"""The CPU paths' prepacked linear layers (lingua_compress.cpu_kernels): the same scores within rounding, the same
compressions, chosen automatically where the ops exist (bf16 only on a CPU that computes it), and an off switch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lingua_compress import Compressor, cpu_kernels, scoring
from lingua_compress.errors import ConfigError
from lingua_compress.models import cpu_bf16_feature
from lingua_compress.scoring import CausalLMScorer
from tiny import CORPUS, save_tiny_model, tiny_model, tiny_scorer

TEXT = " ".join(CORPUS) * 3
needs_ops = pytest.mark.skipif(not cpu_kernels.available(), reason="this torch build has no oneDNN packed linear")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("packed") / "m"))


def scorer(path, dtype="float32", **kwargs):
    return CausalLMScorer(path, device="cpu", dtype=dtype, **kwargs)


def nll(s):
    return s.token_nll(s.tokenize(TEXT)[0])


@needs_ops
def test_packed_scores_match_atens_within_rounding(model_dir):
    packed, aten = scorer(model_dir), scorer(model_dir, packed_linear=False)
    assert packed.backend.linear_kernel == "onednn-packed" and aten.backend.linear_kernel == "aten"
    assert not any(type(m) is torch.nn.Linear for m in packed._body.modules())
    assert any(isinstance(m, cpu_kernels.PackedLinear) for m in packed._body.modules())
    a, b = nll(packed), nll(aten)
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)
    ca = Compressor(scorer=packed).compress(TEXT, 0.3)
    cb = Compressor(scorer=aten).compress(TEXT, 0.3)
    assert ca.text == cb.text and ca.backend.linear_kernel == "onednn-packed"


@needs_ops
def test_the_packed_model_still_generates(model_dir):
    packed, aten = scorer(model_dir), scorer(model_dir, packed_linear=False)
    ids = torch.as_tensor(packed.tokenize(TEXT)[0][:30])[None]
    with torch.inference_mode():
        np.testing.assert_allclose(packed.loaded.model(ids).logits.numpy(), aten.loaded.model(ids).logits.numpy(),
                                   atol=1e-4, rtol=1e-4)


@needs_ops
def test_a_layer_that_disagrees_keeps_atens_kernel_and_the_backend_says_so(model_dir, monkeypatch):
    model = tiny_model()
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    calls = iter(range(1000))
    monkeypatch.setattr(cpu_kernels.PackedMatrix, "agrees_with", lambda self, w, b: next(calls) != 3)
    assert cpu_kernels.pack_linears(model, 16) == linears - 1
    assert cpu_kernels.count_linears(model) == (linears - 1, 1)
    calls = iter(range(1000))
    s = scorer(model_dir)
    packed, plain = cpu_kernels.count_linears(s._body)
    assert plain == 1 and s.backend.linear_kernel == f"onednn-packed {packed}/{packed + 1}"
    assert np.isfinite(nll(s)).all()


needs_bf16 = pytest.mark.skipif(cpu_bf16_feature() == "none", reason="bf16 is packed only on a CPU that computes it")


@needs_ops
@needs_bf16
def test_bf16_is_packed_where_the_cpu_has_it_with_the_same_compressions(model_dir):
    packed, aten = scorer(model_dir, "bfloat16"), scorer(model_dir, "bfloat16", packed_linear=False)
    assert packed.backend.dtype == "bfloat16" and packed.backend.linear_kernel == "onednn-packed"
    assert aten.backend.linear_kernel == "aten"
    assert all(m.matrix.packed.dtype == torch.bfloat16 for m in packed._body.modules()
               if isinstance(m, cpu_kernels.PackedLinear))
    # bf16 rounds each output to 2^-8 of itself: a kernel summing in another order may move an NLL by that much
    np.testing.assert_allclose(nll(packed), nll(aten), atol=0.05, rtol=0.01)
    assert Compressor(scorer=packed).compress(TEXT, 0.3).text == Compressor(scorer=aten).compress(TEXT, 0.3).text


def test_bf16_without_the_cpu_feature_is_left_to_aten(model_dir, monkeypatch):
    monkeypatch.setattr(scoring, "cpu_bf16_feature", lambda: "none")
    s = scorer(model_dir, "bfloat16")
    assert s.backend.linear_kernel == "aten" and s.backend.dtype == "bfloat16"
    assert np.isfinite(nll(s)).all()


@needs_ops
@needs_bf16
def test_a_bf16_layer_is_checked_at_its_own_precision():
    weight = torch.randn(64, 32, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    matrix = cpu_kernels.PackedMatrix(weight, 16)
    assert matrix.agrees_with(weight, None)
    assert not matrix.agrees_with(weight * 1.1, None)  # a 10 % error is a wrong kernel, not rounding


def test_without_the_ops_aten_runs(model_dir, monkeypatch):
    monkeypatch.setattr(cpu_kernels, "available", lambda: False)
    s = scorer(model_dir)
    assert s.backend.linear_kernel == "aten" and "onednn" not in str(s.backend)
    assert any(type(m) is torch.nn.Linear for m in s._body.modules())
    assert np.isfinite(nll(s)).all()


def test_a_model_handed_in_is_left_alone_and_bad_values_are_config_errors():
    given = tiny_scorer()  # a LoadedModel handed in: the caller may train or save it, so it is never packed
    assert given.backend.linear_kernel == "aten"
    assert not any(isinstance(m, cpu_kernels.PackedLinear) for m in given.loaded.model.modules())
    with pytest.raises(ConfigError, match="packed_linear='yes'"):
        Compressor(packed_linear="yes")
    with pytest.raises(ConfigError, match="packed_linear=True"):
        CausalLMScorer(loaded=given.loaded, packed_linear=True)


def test_importing_the_package_still_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, lingua_compress; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.skipif(not cpu_kernels.file_mappings(), reason="no /proc/self/maps (not Linux)")
def test_a_released_weights_file_pages_are_evicted_and_read_again_if_touched(tmp_path):
    values = np.arange(64 * 1024, dtype=np.float32)  # 256 KB: whole pages inside
    path = tmp_path / "w.bin"
    values.tofile(path)
    mapped = torch.from_file(str(path), shared=False, size=values.size, dtype=torch.float32)
    float(mapped.sum())  # resident now, as packing leaves a checkpoint's weights
    assert cpu_kernels.evict_file_pages(mapped, cpu_kernels.file_mappings())
    np.testing.assert_array_equal(mapped.numpy(), values)  # evicted pages come back from the file, unchanged
    heap = torch.from_numpy(values.copy())
    assert not cpu_kernels.evict_file_pages(heap, cpu_kernels.file_mappings())  # not a file's: never touched
    np.testing.assert_array_equal(heap.numpy(), values)


@needs_ops
def test_packing_evicts_only_weights_nothing_else_uses(monkeypatch):
    model = tiny_model()
    model.lm_head = torch.nn.Linear(32, model.config.vocab_size, bias=False)
    model.lm_head.weight = model.model.layers[0].mlp.up_proj.weight  # tied to a layer's weight (odd, but legal)
    evicted = []
    monkeypatch.setattr(cpu_kernels, "evict_file_pages", lambda t, m: evicted.append(t) or True)
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert cpu_kernels.pack_linears(model, 16) == linears
    assert isinstance(model.lm_head, cpu_kernels.PackedLinear)
    assert len(evicted) == linears - 2  # both ends of the tie keep their pages
