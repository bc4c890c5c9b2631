"""lingua_compress: make LLM prompts cheaper by dropping what a small local LM finds predictable.

This is the public API; everything else is internal. Nothing is loaded at import time.
"""

from .api import Compressor, compress
from .batch import BatchConfig, BatchFormat, CostReport, Prices, RunResult, Sample, run_batched
from .config import CompressionConfig
from .corpus import CorpusSummary, compress_corpus
from .documents import DocumentsResult
from .errors import (
    BatchParseError,
    BudgetWarning,
    ConfigError,
    InvalidPromptError,
    LinguaCompressError,
    ModelLoadError,
)
from .messages import MessagesConfig, MessagesResult, MessageStats, compress_messages
from .recovery import recover
from .result import Backend, CompressionResult, PartStats, Timings
from .scoring import CausalLMScorer, Scorer, ScoringSession
from .segment import Prompt

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BatchConfig",
    "BatchFormat",
    "BatchParseError",
    "BudgetWarning",
    "CausalLMScorer",
    "CompressionConfig",
    "CompressionResult",
    "Compressor",
    "ConfigError",
    "CorpusSummary",
    "CostReport",
    "DocumentsResult",
    "InvalidPromptError",
    "LinguaCompressError",
    "MessageStats",
    "MessagesConfig",
    "MessagesResult",
    "ModelLoadError",
    "PartStats",
    "Prices",
    "Prompt",
    "RunResult",
    "Sample",
    "Scorer",
    "ScoringSession",
    "Timings",
    "__version__",
    "compress",
    "compress_corpus",
    "compress_messages",
    "recover",
    "run_batched",
]
