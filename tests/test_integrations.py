"""The LangChain and LlamaIndex adapters, against the real langchain-core and llama-index-core classes.

Compression runs on FakeScorer (no model). Until ``Compressor.compress_documents`` exists, a stand-in with its
interface compresses each document with the real ``Compressor.compress``; one test goes through the real method
when it is there.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from fakes import FakeScorer
from lingua_compress import Compressor, ConfigError

lc_docs = pytest.importorskip("langchain_core.documents")
li_schema = pytest.importorskip("llama_index.core.schema")

from langchain_core.documents import Document  # noqa: E402
from llama_index.core.schema import (  # noqa: E402
    ImageNode, NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode,
)

from lingua_compress.integrations.langchain import LinguaCompressor  # noqa: E402
from lingua_compress.integrations.llama_index import LinguaPostprocessor  # noqa: E402

TEXTS = [
    "The river Alder rises in the northern hills and flows south through quiet farmland, past old mills "
    "and stone bridges, before it reaches the sea near the harbour town of Wend.",
    "Marta opened a bakery on the corner of the market square; her rye bread and honey cakes became famous "
    "across the valley, and travellers would stop there on their way to the coast.",
    "The observatory on the ridge was built by a society of amateur astronomers who met every clear night "
    "to record comets, variable stars and the slow drift of the planets.",
]
DROP = "DROPPED"  # the stand-in drops any document containing this word whole, as the library may


@dataclass(frozen=True)
class StandInResult:
    """DocumentsResult's shape: compressed text per input document, in input order, "" for dropped ones."""

    documents: tuple[str, ...]
    order: tuple[int, ...]
    relevance: tuple[float, ...]
    text: str
    original_tokens: int
    compressed_tokens: int
    kept_ratio: float


class StandIn:
    """``compress_documents`` with the library's interface: each document through the real compress()."""

    def __init__(self) -> None:
        self.compressor = Compressor(scorer=FakeScorer())
        self.calls: list[dict[str, Any]] = []

    def compress_documents(self, docs, *, question="", ratio=None, target_tokens=None, keep=(),
                           target_tokenizer=None, retrieval_scores=None) -> StandInResult:
        self.calls.append({"docs": list(docs), "question": question, "ratio": ratio,
                           "target_tokens": target_tokens, "keep": keep})
        if retrieval_scores is not None:
            self.calls[-1]["retrieval_scores"] = list(retrieval_scores)
        share = None if target_tokens is None else target_tokens // max(len(docs), 1)
        results = [None if DROP in d else self.compressor.compress(d, ratio, target_tokens=share, keep=keep)
                   for d in docs]
        texts = tuple("" if r is None else r.text for r in results)
        original = sum(r.original_tokens for r in results if r)
        kept = sum(r.compressed_tokens for r in results if r)
        return StandInResult(texts, tuple(range(len(docs))), tuple(1.0 for _ in docs), "\n\n".join(texts),
                             original, kept, kept / original if original else 1.0)


def words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text)


def is_subsequence(small: list[str], big: list[str]) -> bool:
    it = iter(big)
    return all(w in it for w in small)


def lc_documents() -> list[Document]:
    return [Document(page_content=t, metadata={"source": f"doc{i}.txt", "page": i}, id=f"id-{i}")
            for i, t in enumerate(TEXTS)]


def li_nodes() -> list[NodeWithScore]:
    nodes = []
    for i, t in enumerate(TEXTS):
        node = TextNode(text=t, id_=f"node-{i}", metadata={"source": f"doc{i}.txt"},
                        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"src-{i}")})
        nodes.append(NodeWithScore(node=node, score=0.9 - 0.1 * i))
    return nodes


def check_per_document(originals: list[str], compressed: list[str]) -> None:
    """No merging: one output per input, each an in-order word subsequence of its own input, shorter."""
    assert len(compressed) == len(originals)
    for orig, out in zip(originals, compressed):
        assert out and len(out) < len(orig)
        assert is_subsequence(words(out), words(orig)), (out, orig)


# ---------------------------------------------------------------- LangChain


def test_langchain_keeps_ids_metadata_order_and_compresses_each_document():
    stand_in = StandIn()
    docs = lc_documents()
    out = LinguaCompressor(compressor=stand_in, ratio=0.5).compress_documents(docs, query="Who opened a bakery?")
    assert [d.id for d in out] == [d.id for d in docs]
    assert [d.metadata for d in out] == [d.metadata for d in docs]
    assert all(o.metadata is not d.metadata for o, d in zip(out, docs))  # a copy: the retriever's stays intact
    check_per_document(TEXTS, [d.page_content for d in out])
    assert [d.page_content for d in docs] == TEXTS  # inputs untouched
    assert stand_in.calls == [{"docs": TEXTS, "question": "Who opened a bakery?", "ratio": 0.5,
                               "target_tokens": None, "keep": ()}]


def test_langchain_question_aware_off_and_budget_settings_are_forwarded():
    stand_in = StandIn()
    LinguaCompressor(compressor=stand_in, question_aware=False, target_tokens=40, keep=["Marta"]) \
        .compress_documents(lc_documents(), query="ignored")
    call = stand_in.calls[0]
    assert call["question"] == "" and call["target_tokens"] == 40 and call["ratio"] is None
    assert call["keep"] == ("Marta",)


def test_langchain_empty_input_and_blank_documents():
    stand_in = StandIn()
    comp = LinguaCompressor(compressor=stand_in)
    assert list(comp.compress_documents([], query="q")) == [] and stand_in.calls == []
    blank = Document(page_content="  ", metadata={"k": 1}, id="blank")
    out = comp.compress_documents([blank, *lc_documents()[:1]], query="q")
    # A blank document is not sent (it would skew the budget) and comes back: compression did not empty it.
    assert [d.id for d in out] == ["blank", "id-0"] and stand_in.calls[0]["docs"] == TEXTS[:1]


@pytest.mark.parametrize("drop_empty", [True, False])
def test_langchain_documents_compressed_to_nothing(drop_empty):
    docs = lc_documents()
    docs[1] = Document(page_content=f"{DROP} {TEXTS[1]}", metadata={"page": 1}, id="id-1")
    out = LinguaCompressor(compressor=StandIn(), drop_empty=drop_empty).compress_documents(docs, query="q")
    if drop_empty:
        assert [d.id for d in out] == ["id-0", "id-2"]
    else:
        assert [d.id for d in out] == ["id-0", "id-1", "id-2"] and out[1].page_content == ""
        assert out[1].metadata == {"page": 1}


def test_langchain_async_path():
    stand_in = StandIn()
    comp = LinguaCompressor(compressor=stand_in, ratio=0.5)
    out = asyncio.run(comp.acompress_documents(lc_documents(), query="stars?"))
    assert [d.id for d in out] == ["id-0", "id-1", "id-2"] and stand_in.calls[0]["question"] == "stars?"
    check_per_document(TEXTS, [d.page_content for d in out])


def test_langchain_in_a_retrieval_chain():
    # ContextualCompressionRetriever lives in the `langchain` package, not langchain-core; this is the
    # composition langchain-core itself recommends: a retriever and the compressor in one runnable.
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

    class ListRetriever(BaseRetriever):
        docs: list[Document]

        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun):
            return [d for d in self.docs if set(words(query.lower())) & set(words(d.page_content.lower()))]

    stand_in = StandIn()
    comp = LinguaCompressor(compressor=stand_in, ratio=0.5)
    chain = (RunnableParallel(docs=ListRetriever(docs=lc_documents()), query=RunnablePassthrough())
             | RunnableLambda(lambda x: comp.compress_documents(x["docs"], x["query"])))
    out = chain.invoke("bakery river")
    assert [d.id for d in out] == ["id-0", "id-1"] and stand_in.calls[0]["question"] == "bakery river"


def test_langchain_settings_checked_at_construction():
    for bad in ({"ratio": 0}, {"ratio": 1.5}, {"ratio": True}, {"target_tokens": -1}, {"keep": [""]},
                {"use_retrieval_scores": "yes"}, {"drop_empty": 0}):
        with pytest.raises(ValueError, match="not accepted|keep entries"):
            LinguaCompressor(**bad)


def test_langchain_retrieval_scores_come_from_metadata_when_asked():
    docs = [d.model_copy(update={"metadata": {**d.metadata, "relevance": 0.5 - 0.1 * i}})
            for i, d in enumerate(lc_documents())]
    stand_in = StandIn()
    LinguaCompressor(compressor=stand_in).compress_documents(docs, query="q?")
    assert "retrieval_scores" not in stand_in.calls[-1]  # off by default
    LinguaCompressor(compressor=stand_in, use_retrieval_scores=True, score_key="relevance") \
        .compress_documents(docs, query="q?")
    assert stand_in.calls[-1]["retrieval_scores"] == [0.5, 0.4, 0.3]
    with pytest.raises(ConfigError, match="document 0 has no retrieval score"):
        LinguaCompressor(compressor=stand_in, use_retrieval_scores=True).compress_documents(docs, query="q?")
    # Without a question there is no ranking to fuse them into: not needed, not sent.
    LinguaCompressor(compressor=stand_in, use_retrieval_scores=True).compress_documents(docs, query="")
    assert "retrieval_scores" not in stand_in.calls[-1]


def test_default_compressor_is_resolved_on_first_use_only(monkeypatch):
    import lingua_compress.api as api

    stand_in = StandIn()
    made = []
    monkeypatch.setattr(api, "default_compressor", lambda: made.append(1) or stand_in)
    comp = LinguaCompressor()
    post = LinguaPostprocessor()
    assert made == []  # building an adapter loads nothing
    comp.compress_documents(lc_documents()[:1], query="q")
    post.postprocess_nodes(li_nodes()[:1], query_str="q")
    assert made == [1, 1] and len(stand_in.calls) == 2


def test_a_short_answer_from_the_library_is_an_error():
    class Broken(StandIn):
        def compress_documents(self, docs, **kwargs):
            return StandInResult(("x",), (0,), (1.0,), "x", 1, 1, 1.0)

    with pytest.raises(RuntimeError, match="returned 1 documents for 3"):
        LinguaCompressor(compressor=Broken()).compress_documents(lc_documents(), query="q")


# ---------------------------------------------------------------- LlamaIndex


def test_llama_index_keeps_ids_metadata_scores_relationships_and_order():
    stand_in = StandIn()
    nodes = li_nodes()
    out = LinguaPostprocessor(compressor=stand_in, ratio=0.5).postprocess_nodes(nodes, query_str="Who is Marta?")
    assert [n.node_id for n in out] == [n.node_id for n in nodes]
    assert [n.score for n in out] == [n.score for n in nodes]
    assert [n.node.metadata for n in out] == [n.node.metadata for n in nodes]
    assert [n.node.relationships for n in out] == [n.node.relationships for n in nodes]
    assert all(o.node is not n.node for o, n in zip(out, nodes))
    check_per_document(TEXTS, [n.text for n in out])
    assert [n.text for n in nodes] == TEXTS
    assert stand_in.calls[0]["question"] == "Who is Marta?" and stand_in.calls[0]["ratio"] == 0.5


def test_llama_index_node_scores_are_fused_when_asked():
    stand_in = StandIn()
    nodes = li_nodes()
    nodes.insert(1, NodeWithScore(node=TextNode(text="  ", id_="blank"), score=None))  # blank: not sent, no score
    out = LinguaPostprocessor(compressor=stand_in, use_retrieval_scores=True).postprocess_nodes(nodes, query_str="q?")
    assert stand_in.calls[-1]["retrieval_scores"] == pytest.approx([0.9, 0.8, 0.7])
    assert [n.score for n in out] == [n.score for n in nodes]  # the scores handed back are the retriever's
    nodes[0] = NodeWithScore(node=nodes[0].node, score=None)
    with pytest.raises(ConfigError, match="document 0 has no retrieval score"):
        LinguaPostprocessor(compressor=stand_in, use_retrieval_scores=True).postprocess_nodes(nodes, query_str="q?")


def test_llama_index_without_query_empty_input_and_image_nodes():
    stand_in = StandIn()
    post = LinguaPostprocessor(compressor=stand_in)
    assert post.postprocess_nodes([]) == [] and stand_in.calls == []
    image = NodeWithScore(node=ImageNode(image_url="http://example.invalid/a.png", id_="img"), score=0.5)
    out = post.postprocess_nodes([image, *li_nodes()[:2]])  # no query: compressed on their own, no error
    assert [n.node_id for n in out] == ["img", "node-0", "node-1"] and out[0].score == 0.5
    assert out[0].node.image_url == "http://example.invalid/a.png"
    assert stand_in.calls[0]["question"] == "" and stand_in.calls[0]["docs"] == TEXTS[:2]


@pytest.mark.parametrize("drop_empty", [True, False])
def test_llama_index_nodes_compressed_to_nothing(drop_empty):
    nodes = li_nodes()
    nodes[0].node.text = f"{DROP} {TEXTS[0]}"
    out = LinguaPostprocessor(compressor=StandIn(), drop_empty=drop_empty).postprocess_nodes(nodes, query_str="q")
    ids = [n.node_id for n in out]
    assert ids == (["node-1", "node-2"] if drop_empty else ["node-0", "node-1", "node-2"])
    if not drop_empty:
        assert out[0].text == "" and out[0].score == nodes[0].score


@pytest.mark.skipif(not hasattr(LinguaPostprocessor, "apostprocess_nodes"),
                    reason="this llama-index-core has no async postprocessing (added after 0.12.0)")
def test_llama_index_async_path():
    stand_in = StandIn()
    post = LinguaPostprocessor(compressor=stand_in, ratio=0.5)
    out = asyncio.run(post.apostprocess_nodes(li_nodes(), query_bundle=QueryBundle("comets?")))
    assert [n.node_id for n in out] == ["node-0", "node-1", "node-2"]
    assert stand_in.calls[0]["question"] == "comets?"


def test_llama_index_as_query_engine_postprocessor():
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.response_synthesizers.no_text import NoText
    from llama_index.core.retrievers import BaseRetriever

    class ListRetriever(BaseRetriever):
        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            return li_nodes()

    stand_in = StandIn()
    # NoText: the engine retrieves and postprocesses but never calls an LLM. It still wants one at construction,
    # else it looks up Settings.llm (OpenAI, not installed): a MockLLM.
    engine = RetrieverQueryEngine(ListRetriever(), response_synthesizer=NoText(llm=MockLLM()),
                                  node_postprocessors=[LinguaPostprocessor(compressor=stand_in)])
    response = engine.query("Where does the river Alder rise?")
    assert [n.node_id for n in response.source_nodes] == ["node-0", "node-1", "node-2"]
    check_per_document(TEXTS, [n.text for n in response.source_nodes])
    assert stand_in.calls[0]["question"] == "Where does the river Alder rise?"


# ---------------------------------------------------------------- the library itself


@pytest.mark.skipif(not hasattr(Compressor, "compress_documents"), reason="Compressor.compress_documents not built yet")
@pytest.mark.parametrize("question_aware", [True, False])
def test_through_the_real_compress_documents(question_aware):
    compressor = Compressor(scorer=FakeScorer())
    query = "Who opened a bakery?"
    expected = compressor.compress_documents(TEXTS, question=query if question_aware else "", ratio=0.5).documents
    kept = [i for i, text in enumerate(expected) if text]  # question-aware, the coarse stage drops whole documents
    assert kept and all(is_subsequence(words(expected[i]), words(TEXTS[i])) for i in kept)
    settings = {"compressor": compressor, "ratio": 0.5, "question_aware": question_aware}
    out = LinguaCompressor(**settings).compress_documents(lc_documents(), query=query)
    assert [d.id for d in out] == [f"id-{i}" for i in kept]
    assert [d.page_content for d in out] == [expected[i] for i in kept]
    assert [d.metadata for d in out] == [{"source": f"doc{i}.txt", "page": i} for i in kept]
    nodes = LinguaPostprocessor(**settings).postprocess_nodes(li_nodes(), query_str=query)
    assert [n.node_id for n in nodes] == [f"node-{i}" for i in kept]
    assert [n.text for n in nodes] == [expected[i] for i in kept]
    assert [n.score for n in nodes] == [li_nodes()[i].score for i in kept]
    if not question_aware:  # no question: the coarse stage may still drop a whole document, never merge two
        check_per_document([TEXTS[i] for i in kept], [d.page_content for d in out])


def test_retrieval_scores_through_the_real_compress_documents():
    compressor = Compressor(scorer=FakeScorer())
    query = "Who opened a bakery?"
    expected = compressor.compress_documents(TEXTS, question=query, ratio=0.5, retrieval_scores=[0.2, 0.9, 0.1])
    nodes = LinguaPostprocessor(compressor=compressor, use_retrieval_scores=True).postprocess_nodes(
        [NodeWithScore(node=n.node, score=s) for n, s in zip(li_nodes(), (0.2, 0.9, 0.1))], query_str=query)
    assert [n.text for n in nodes] == [t for t in expected.documents if t]


def _real_takes_keep() -> bool:
    method = getattr(Compressor, "compress_documents", None)
    return method is not None and "keep" in inspect.signature(method).parameters


@pytest.mark.skipif(not _real_takes_keep(), reason="Compressor.compress_documents has no keep= yet")
def test_keep_through_the_real_compress_documents():
    out = LinguaCompressor(compressor=Compressor(scorer=FakeScorer()), ratio=0.3, question_aware=False,
                           keep=["honey cakes"]).compress_documents(lc_documents(), query="")
    by_id = {d.id: d.page_content for d in out}  # at 0.3 the coarse stage may drop other documents whole
    assert "honey cakes" in by_id["id-1"]


def test_the_package_hands_out_both_adapters_lazily():
    from lingua_compress import integrations

    assert integrations.LinguaCompressor is LinguaCompressor
    assert integrations.LinguaPostprocessor is LinguaPostprocessor
    assert sorted(integrations.__all__) == integrations.__all__
    with pytest.raises(AttributeError):
        integrations.Nothing  # noqa: B018


def test_importing_the_library_needs_neither_framework():
    code = ("import sys, lingua_compress, lingua_compress.integrations; "
            "assert not {'langchain_core', 'llama_index', 'pydantic'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("module, package, extra", [("langchain", "langchain_core", "langchain"),
                                                    ("llama_index", "llama_index", "llamaindex")])
def test_a_missing_extra_says_how_to_install_it(module, package, extra):
    code = (f"import sys; sys.modules[{package!r}] = None\n"
            f"try:\n    import lingua_compress.integrations.{module}\n"
            f"except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert f'pip install "lingua_compress[{extra}]"' in out.stdout
