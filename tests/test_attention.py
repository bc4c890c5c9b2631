"""The attention kernel the scorer runs (``attention=``): sdpa scores what eager scores, through windows whose
dropped tokens leave gaps in the positions (the masks the session builds itself); eager unless asked."""

from __future__ import annotations

import numpy as np
import pytest

from lingua_compress import Compressor, models
from lingua_compress.errors import ConfigError
from lingua_compress.scoring import CausalLMScorer
from tiny import CORPUS, save_tiny_model, tiny_scorer

TEXT = " ".join(CORPUS) * 4  # far past the tiny model's 16-token sliding window


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("attention") / "m"))


def scorer(path, attention, dtype="float32"):
    return CausalLMScorer(path, device="cpu", dtype=dtype, attention=attention)


def windows_with_gaps(s, ids, keep_every=3):
    """Score ``ids`` in windows of 24, keeping every ``keep_every``-th token: later windows see a gapped prefix."""
    session, out = s.session("reuse"), []
    for i in range(0, len(ids), 24):
        window = ids[i : i + 24]
        out.append(session.score(window))
        session.keep(np.arange(len(window)) % keep_every == 0)
    return np.concatenate(out)


def test_sdpa_scores_what_eager_scores_through_gapped_windows(model_dir):
    eager, sdpa = scorer(model_dir, "eager"), scorer(model_dir, "sdpa")
    assert eager.backend.attention == "eager" and sdpa.backend.attention == "sdpa"
    assert "sdpa attention" in str(sdpa.backend) and "attention" not in str(eager.backend)
    ids = eager.tokenize(TEXT)[0]
    assert len(ids) > 100
    np.testing.assert_allclose(sdpa.token_nll(ids), eager.token_nll(ids), atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(windows_with_gaps(sdpa, ids), windows_with_gaps(eager, ids), atol=1e-4, rtol=1e-5)
    a = Compressor(scorer=sdpa).compress(TEXT, 0.3)
    b = Compressor(scorer=eager).compress(TEXT, 0.3)
    assert a.text == b.text and a.backend.attention == "sdpa"


def test_eager_is_the_default_and_loading_uses_the_kernel_asked_for(model_dir):
    assert CausalLMScorer(model_dir, device="cpu", dtype="float32").backend.attention == "eager"
    assert Compressor()._spec["attention"] == "eager"
    assert models.load_model(model_dir, device="cpu").model.config._attn_implementation == "eager"
    assert models.load_model(model_dir, device="cpu", attention="sdpa").model.config._attn_implementation == "sdpa"


def test_bad_attention_values_are_config_errors(model_dir):
    with pytest.raises(ConfigError, match="attention='flash'.*'eager', 'sdpa'"):
        Compressor(attention="flash")
    with pytest.raises(ConfigError, match="attention=None"):
        models.load_model(model_dir, device="cpu", attention=None)
    with pytest.raises(ConfigError, match="attention='sdpa'"):
        CausalLMScorer(loaded=tiny_scorer().loaded, attention="sdpa")
    assert tiny_scorer().backend.attention == "eager"  # a model handed in keeps its own kernel
