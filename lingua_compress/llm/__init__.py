"""Target-LLM clients behind one small protocol: an OpenAI-compatible HTTP client and a local transformers model.

Nothing here opens a connection or loads a model at import or construction.
"""

from .base import LLM, Completion, LLMRequestError, rough_token_count
from .local import LocalLLM
from .openai_http import OpenAIClient

__all__ = ["LLM", "Completion", "LLMRequestError", "LocalLLM", "OpenAIClient", "rough_token_count"]
