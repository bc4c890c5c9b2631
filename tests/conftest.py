from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tiny import tiny_scorer  # noqa: E402


@pytest.fixture(scope="session")
def scorer():
    """The tiny scorer: real transformers code paths, random weights."""
    return tiny_scorer()


@pytest.fixture(scope="session")
def real_compressor():
    """The embedded default scorer, loaded once for the whole session (converted on first use)."""
    from lingua_compress import Compressor

    c = Compressor()
    c.scorer  # load now, so test timings exclude it
    return c
