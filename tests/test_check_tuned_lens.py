"""benchmarks/check_tuned_lens.py: the lens fit recovers a known affine map, and the stand-in norm applies it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import check_tuned_lens as L  # noqa: E402


def test_fit_recovers_the_map_from_scale_normalised_states():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(4000, 8)) * rng.uniform(0.5, 50, size=(4000, 1))  # every row at its own scale
    w, b = rng.normal(size=(8, 8)), rng.normal(size=8)
    target = L.rms_normalise(h) @ w + b
    fw, fb = L.fit_lens(h.astype(np.float32), target.astype(np.float32), ridge=0.0)
    assert np.allclose(fw, w, atol=1e-3) and np.allclose(fb, b, atol=1e-3)


def test_lens_norm_maps_a_state_as_fitted():
    import torch

    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(8, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32)
    h = rng.normal(size=(3, 8)).astype(np.float32) * 7
    out = L.LensNorm(w, b, torch.float32)(torch.as_tensor(h)).numpy()
    assert np.allclose(out, L.rms_normalise(h) @ w + b, atol=1e-4)
