"""Framework adapters on top of the public API, each an optional extra and imported only on use:

- ``lingua_compress.integrations.langchain.LinguaCompressor``: a LangChain ``BaseDocumentCompressor``
  (``pip install "lingua_compress[langchain]"``);
- ``lingua_compress.integrations.llama_index.LinguaPostprocessor``: a LlamaIndex ``BaseNodePostprocessor``
  (``pip install "lingua_compress[llamaindex]"``).

Both compress each document on its own with ``Compressor.compress_documents`` and keep every document's id,
metadata and order (see ``_core``). Importing this package imports neither framework.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LinguaCompressor", "LinguaPostprocessor"]


def __getattr__(name: str) -> Any:
    # Lazy: each adapter imports its framework, which only its extra installs.
    if name == "LinguaCompressor":
        from .langchain import LinguaCompressor

        return LinguaCompressor
    if name == "LinguaPostprocessor":
        from .llama_index import LinguaPostprocessor

        return LinguaPostprocessor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
