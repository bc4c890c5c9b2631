"""Target-LLM clients behind one small protocol: an OpenAI-compatible HTTP client, a local transformers model
and a local GGUF through llama-cpp-python (optional package).

Nothing here opens a connection or loads a model at import or construction.
"""

from .base import LLM, Completion, LLMRequestError, rough_token_count
from .llamacpp import LlamaCppLLM
from .local import LocalLLM
from .openai_http import OpenAIClient

__all__ = ["LLM", "Completion", "LLMRequestError", "LlamaCppLLM", "LocalLLM", "OpenAIClient", "rough_token_count"]
