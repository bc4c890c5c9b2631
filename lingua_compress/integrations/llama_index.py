"""LlamaIndex node postprocessor (extra ``llamaindex``): each retrieved node compressed on its own.

>>> from lingua_compress.integrations.llama_index import LinguaPostprocessor
>>> engine = index.as_query_engine(node_postprocessors=[LinguaPostprocessor(ratio=0.3)])

Unlike ``LongLLMLinguaPostprocessor``, nodes are never merged: every one keeps its id, metadata (a copy),
relationships, score and place in the list; only the text is replaced. A node compressed to nothing is left out
(``drop_empty=False`` keeps it with empty text). Nodes without text (images) pass through untouched.
"""

from __future__ import annotations

from typing import List, Optional

try:
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:  # the extra is optional; say how to get it
    raise ImportError('lingua_compress.integrations.llama_index needs llama-index-core: '
                      'pip install "lingua_compress[llamaindex]"') from exc

from ._core import LinguaSettings

__all__ = ["LinguaPostprocessor"]


class LinguaPostprocessor(BaseNodePostprocessor, LinguaSettings):
    """Compresses retrieved nodes against the query, each on its own (never merged), through
    ``Compressor.compress_documents``.

    Fields: ``compressor`` (default: the shared embedded-model Compressor, loaded on first use), ``ratio``
    (0.5; over all nodes, the library decides each one's share), ``target_tokens`` (replaces ratio),
    ``question_aware`` (True: the query string is the question), ``drop_empty`` (True), ``keep``,
    ``target_tokenizer``, ``use_retrieval_scores`` (False; True fuses each node's ``score`` into the ranking).
    Without a query the nodes are compressed on their own (no error, unlike
    LongLLMLinguaPostprocessor). The async path is LlamaIndex's: this method in a worker thread.
    """

    @classmethod
    def class_name(cls) -> str:
        return "LinguaPostprocessor"

    def _postprocess_nodes(
        self,
        nodes: List[NodeWithScore],
        query_bundle: Optional[QueryBundle] = None,
    ) -> List[NodeWithScore]:
        # MetadataMode.NONE: the metadata LlamaIndex prints into the LLM's context is not ours to cut.
        originals = [n.node.get_content(metadata_mode=MetadataMode.NONE) for n in nodes]
        compressed = self.compress_texts(originals, query_bundle.query_str if query_bundle else None,
                                         [n.score for n in nodes])
        out = []
        for i in self.survivors(originals, compressed):
            # A copy even when nothing was cut, so editing a result never edits the retriever's nodes.
            node = nodes[i].node.model_copy(update={"metadata": dict(nodes[i].node.metadata)})
            if compressed[i] != originals[i]:  # a blank multimodal node keeps its text_resource as it was
                node.set_content(compressed[i])  # TextNode.text or Node.text_resource, whichever the type keeps
            out.append(NodeWithScore(node=node, score=nodes[i].score))
        return out
