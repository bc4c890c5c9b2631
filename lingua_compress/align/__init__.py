"""Distribution alignment: make the scorer's view of "predictable" closer to the target LLM's.

LLMLingua instruction-tunes its small LM on the target's own outputs before compressing for it. The steps:
``collect`` (ask the target the user's prompts, keep the pairs, resumably), ``tune`` (a LoRA adapter on the
scorer, response tokens only, bounded time), ``load`` (``Compressor(adapter=...)`` merges it, refusing an adapter
tuned on another base model), ``evaluate`` (perplexity on held-out pairs, kept-set overlap). ``cli`` is
``lingua-compress align``. Nothing heavy is imported here: torch and peft load when a step runs.
"""

from .collect import CollectConfig, CollectSummary, collect_responses
from .evaluate import compare_perplexity, kept_overlap, perplexity
from .load import apply_adapter, check_adapter, model_fingerprint, read_manifest
from .pairs import Pair, PairLog, read_pairs, read_prompts
from .tune import TuneConfig, TuneResult, tune_adapter

__all__ = [
    "CollectConfig",
    "CollectSummary",
    "Pair",
    "PairLog",
    "TuneConfig",
    "TuneResult",
    "apply_adapter",
    "check_adapter",
    "collect_responses",
    "compare_perplexity",
    "kept_overlap",
    "model_fingerprint",
    "perplexity",
    "read_manifest",
    "read_pairs",
    "read_prompts",
    "tune_adapter",
]
