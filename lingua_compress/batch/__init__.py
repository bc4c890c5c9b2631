"""Batch prompting on top of the compressor: many questions per call after one shared, compressed prefix.

Pipeline: group (which samples share a call) -> pack (shared prefix compressed once, one prompt per batch) ->
call the target LLM -> parse (answers by index, never by position) -> optionally vote over permuted rounds ->
re-ask failures -> cost report.
"""

from .cost import CostReport, Prices
from .group import Group, MiniLMEmbedder, TfidfEmbedder, default_embedder, make_groups
from .pack import build_batch, build_prefix, clear_prefix_cache
from .parse import parse_completion
from .runner import BatchConfig, RunResult, run_batched
from .types import GSM8K_PATTERN, STATUSES, Batch, BatchFormat, ItemResult, ParsedBatch, Sample, SharedPrefix
from .vote import ItemVotes

__all__ = [
    "GSM8K_PATTERN",
    "STATUSES",
    "Batch",
    "BatchConfig",
    "BatchFormat",
    "CostReport",
    "Group",
    "ItemResult",
    "ItemVotes",
    "MiniLMEmbedder",
    "ParsedBatch",
    "Prices",
    "RunResult",
    "Sample",
    "SharedPrefix",
    "TfidfEmbedder",
    "build_batch",
    "build_prefix",
    "clear_prefix_cache",
    "default_embedder",
    "make_groups",
    "parse_completion",
    "run_batched",
]
