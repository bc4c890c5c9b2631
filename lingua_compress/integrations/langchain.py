"""LangChain document compressor (extra ``langchain``): each retrieved document compressed on its own.

>>> from lingua_compress.integrations.langchain import LinguaCompressor
>>> docs = LinguaCompressor(ratio=0.3).compress_documents(retrieved_docs, query="Who founded the company?")

Unlike ``LLMLinguaCompressor``, documents are never merged: every one keeps its ``id``, ``metadata`` (a copy)
and its place in the list; only ``page_content`` is replaced. A document compressed to nothing is left out
(``drop_empty=False`` keeps it with empty content).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from pydantic import Field

try:
    from langchain_core.documents import Document
    from langchain_core.documents.compressor import BaseDocumentCompressor
except ImportError as exc:  # the extra is optional; say how to get it
    raise ImportError('lingua_compress.integrations.langchain needs langchain-core: '
                      'pip install "lingua_compress[langchain]"') from exc

from ._core import LinguaSettings

if TYPE_CHECKING:
    from langchain_core.callbacks import Callbacks

__all__ = ["LinguaCompressor"]


class LinguaCompressor(BaseDocumentCompressor, LinguaSettings):
    """Compresses retrieved documents against the query, each on its own (never merged), through
    ``Compressor.compress_documents``.

    Fields: ``compressor`` (default: the shared embedded-model Compressor, loaded on first use), ``ratio``
    (0.5; over all documents, the library decides each one's share), ``target_tokens`` (replaces ratio),
    ``question_aware`` (True: the query is the question), ``drop_empty`` (True), ``keep``, ``target_tokenizer``,
    ``use_retrieval_scores`` (False; True fuses ``metadata[score_key]`` into the ranking), ``score_key``
    ("score"). The async ``acompress_documents`` is LangChain's: this method in a worker thread.
    """

    score_key: str = Field(default="score", description="The metadata key holding a document's retrieval score "
                           "(read with use_retrieval_scores=True).")

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Optional[Callbacks] = None,  # no LLM runs here, so there is nothing to report to them
    ) -> Sequence[Document]:
        originals = [d.page_content for d in documents]
        compressed = self.compress_texts(originals, query, [d.metadata.get(self.score_key) for d in documents])
        # model_copy keeps the id, the subclass and any extra fields; metadata is copied so that editing the
        # result never edits the retriever's documents.
        return [documents[i].model_copy(update={"page_content": compressed[i],
                                                "metadata": dict(documents[i].metadata)})
                for i in self.survivors(originals, compressed)]
