"""run_batched with fake target models: re-asks, exact cost numbers, compress-once, chat and kNN modes."""

from __future__ import annotations

import re
import threading
import warnings

import pytest

from lingua_compress.batch import (
    GSM8K_PATTERN,
    BatchConfig,
    BatchFormat,
    Prices,
    Sample,
    TfidfEmbedder,
    build_prefix,
    clear_prefix_cache,
    run_batched,
)
from lingua_compress.batch.types import STATUSES
from lingua_compress.errors import ConfigError
from lingua_compress.llm import Completion, LLMRequestError

FMT = BatchFormat(answer_pattern=GSM8K_PATTERN)
Q_LINE = re.compile(r"^Q\[(\d+)\]: (.*)$", re.M)


def words(text: str) -> int:
    return len(text.split())


class FakeLLM:
    """Answers from a gold table. ``drop`` ids are left out the first time they are asked; ``fail_calls``
    raise; ``usage`` reports fixed token counts like an API would."""

    name = "fake"
    max_concurrency = 1

    def __init__(self, gold, *, chat=False, drop=(), fail_calls=(), usage=None, shuffle=True):
        self.gold, self.chat, self.drop, self.fail_calls = gold, chat, set(drop), set(fail_calls)
        self.usage, self.shuffle = usage, shuffle
        self.prompts, self.asked = [], []
        self.lock = threading.Lock()

    def complete(self, prompt, *, max_tokens, stop=(), temperature=0.0):
        with self.lock:
            self.prompts.append(prompt)
            call = len(self.prompts)
        if call in self.fail_calls:
            raise LLMRequestError("scripted failure")
        last = prompt if isinstance(prompt, str) else prompt[-1]["content"]
        block = last.split("\n\n")[-1]
        slots = [(int(i), q) for i, q in Q_LINE.findall(block)]
        lines = []
        for i, q in (reversed(slots) if self.shuffle else slots):
            if q in self.drop:
                self.drop.discard(q)
                continue
            lines.append(f"A[{i}]: The answer is {self.gold[q]}.")
        self.asked.append([q for _, q in slots])
        text = "\n".join(lines)
        if not self.chat and text.startswith("A[1]:"):
            text = text[len("A[1]:"):]
        elif not self.chat:
            text = "\n" + text
        pt, ct = self.usage if self.usage else (None, None)
        return Completion(text, pt, ct, "stop")


def toy(n, offset=0):
    samples = [Sample(f"id{i}", f"What is {i} plus {i + offset}?") for i in range(n)]
    gold = {s.fields[0][1]: str(2 * i + offset) for i, s in enumerate(samples)}
    return samples, gold


DEMOS = [Sample(f"d{i}", f"What is {i} plus {i}?", f"Twice {i}. The answer is {2 * i}.") for i in range(12)]


def test_all_ok_answers_by_id_and_calls():
    samples, gold = toy(10)
    llm = FakeLLM(gold)
    res = run_batched(samples, llm, demos=DEMOS, config=BatchConfig(batch_size=4), fmt=FMT, count_tokens=words)
    assert res.answers == {f"id{i}": str(2 * i) for i in range(10)}
    assert res.cost.calls == 3 and res.cost.retry_calls == 0
    assert list(res.items) == [s.id for s in samples]


def test_reask_recovers_dropped_and_failed_items():
    samples, gold = toy(8)
    llm = FakeLLM(gold, drop={"What is 1 plus 1?", "What is 2 plus 2?"}, fail_calls={2})
    cfg = BatchConfig(batch_size=4, max_retries=1, retry_batch_size=2)
    res = run_batched(samples, llm, demos=DEMOS, config=cfg, fmt=FMT, count_tokens=words)
    assert res.status_counts == {"ok": 8}
    assert res.items["id1"].attempts == 2
    # first pass: 2 calls (the second failed: ids 4-7 missing); re-ask: ids 1, 2, 4..7 in batches of 2 -> 3 calls
    assert (res.cost.calls, res.cost.retry_calls) == (5, 3)


def test_failures_end_with_a_status_never_lost():
    samples, gold = toy(6)
    llm = FakeLLM(gold, fail_calls=set(range(1, 100)))
    res = run_batched(samples, llm, demos=DEMOS, config=BatchConfig(batch_size=3, max_retries=2), fmt=FMT,
                      count_tokens=words)
    assert set(res.items) == {s.id for s in samples}
    assert all(r.status == "missing" and "scripted failure" in r.note for r in res.items.values())
    assert res.cost.calls == 2 + 6 + 6  # two batches, then two rounds re-asking all 6 singly (3 // 2 = 1)


def test_exact_cost_numbers_on_toy_set():
    fmt = BatchFormat(answer_pattern=GSM8K_PATTERN, instruction_rule=False, count_reminder=False)
    demos = [Sample("d1", "d1?", "x1"), Sample("d2", "d2?", "x2")]
    samples = [Sample(f"s{i}", f"q{i}?") for i in range(4)]
    gold = {f"q{i}?": str(i) for i in range(4)}
    llm = FakeLLM(gold, usage=(100, 10), shuffle=False)
    res = run_batched(samples, llm, demos=demos, config=BatchConfig(batch_size=2), fmt=fmt, count_tokens=words,
                      prices=Prices(input_per_million=1.0, output_per_million=4.0))
    c = res.cost
    # prefix "Q[1]: d1?\nQ[2]: d2?\nA[1]: x1\nA[2]: x2" = 8 words; batch tail "Q[1]: q0?\nQ[2]: q1?\nA[1]:" = 5
    assert (c.prefix_tokens_original, c.prefix_tokens, c.calls) == (8, 8, 2)
    assert c.counted_prompt_tokens == 2 * 13
    # one by one: plain prefix "Q[1]: d1?\nA[1]: x1\n\nQ[1]: d2?\nA[1]: x2" = 8 words + "Q[1]: q?\nA[1]:" = 3
    assert (c.baseline_calls, c.baseline_prompt_tokens, c.baseline_compressed_prompt_tokens) == (4, 44, 44)
    # completion " The answer is 0.\nA[2]: The answer is 1." = 9 words per call
    assert c.counted_completion_tokens == 18
    assert (c.prompt_tokens, c.completion_tokens, c.usage_source) == (200, 20, "api")
    assert c.prompt_tokens_per_sample == 6.5 and c.baseline_prompt_tokens_per_sample == 11.0
    assert c.vs_one_by_one == pytest.approx(26 / 44)
    assert c.usd == pytest.approx((200 * 1.0 + 20 * 4.0) / 1e6)
    assert c.baseline_usd == pytest.approx((44 * 200 / 26 * 1.0 + 20 * 4.0) / 1e6)
    assert c.to_dict()["vs_one_by_one"] == round(26 / 44, 4)


def test_no_saving_at_batch_size_one_without_compression():
    samples, gold = toy(5)
    res = run_batched(samples, FakeLLM(gold), demos=DEMOS, config=BatchConfig(batch_size=1), fmt=FMT,
                      count_tokens=words)
    assert res.cost.vs_one_by_one == 1.0 and res.cost.batching_gain == 1.0


def test_prompt_tokens_per_sample_fall_with_batch_size():
    samples, gold = toy(12)
    per = []
    for b in (1, 2, 3, 4, 6):
        res = run_batched(samples, FakeLLM(gold), demos=DEMOS, config=BatchConfig(batch_size=b), fmt=FMT,
                          count_tokens=words)
        per.append(res.cost.prompt_tokens_per_sample)
    assert per == sorted(per, reverse=True)
    assert per[-1] <= per[0] / 3


class CountingCompressor:
    """Drops every second plain word; keeps markers, numbers and the answer phrase, like a protected pass."""

    def __init__(self):
        self.calls = 0
        self.cache_key = f"counting-{id(self)}"

    def compress(self, prompt, ratio, *, keep=(), target_tokenizer=None):
        from lingua_compress.segment import PART_SEPARATOR, build_parts

        self.calls += 1
        text, _ = build_parts(prompt)
        out = []
        for block in text.split(PART_SEPARATOR):
            lines = []
            for line in block.split("\n"):
                toks = line.split(" ")
                lines.append(" ".join(t for i, t in enumerate(toks) if i % 2 == 0 or re.search(r"[\[\d]|answer|is|The", t)))
            out.append("\n".join(lines))

        class R:
            pass

        r = R()
        r.text = PART_SEPARATOR.join(out)
        return r


def test_compressor_called_once_for_many_batches_and_prefix_identical():
    clear_prefix_cache()
    samples, gold = toy(12)
    comp = CountingCompressor()
    llm = FakeLLM(gold)
    cfg = BatchConfig(batch_size=3, ratio=0.5)
    res = run_batched(samples, llm, demos=DEMOS, instruction="Solve these arithmetic questions carefully please.",
                      config=cfg, fmt=FMT, compressor=comp, count_tokens=words)
    assert comp.calls == 1 and len(llm.prompts) == 4
    assert res.prefix.compressed and res.prefix.tokens < res.prefix.original_tokens
    assert all(p.startswith(res.prefix.text + "\n\n") for p in llm.prompts)
    assert res.status_counts == {"ok": 12}
    assert res.cost.vs_one_by_one < res.cost.vs_one_by_one_compressed < 1.0
    assert res.cost.compression_gain > 1.0 and res.cost.batching_gain > 1.0
    run_batched(samples, FakeLLM(gold), demos=DEMOS, instruction="Solve these arithmetic questions carefully please.",
                config=cfg, fmt=FMT, compressor=comp, count_tokens=words)
    assert comp.calls == 1  # cache hit on the second run


def test_real_compressor_keeps_markers(scorer):
    from lingua_compress import Compressor

    clear_prefix_cache()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prefix = build_prefix("Answer the questions.", DEMOS, FMT, block_size=4, ratio=0.4,
                              compressor=Compressor(scorer=scorer), count_tokens=words, drop_blocks=False)
    # A lost marker would warn and fall back to the uncompressed prefix.
    assert not [w for w in caught if "structure" in str(w.message)]
    assert prefix.compressed and prefix.tokens < prefix.original_tokens
    for tag in ("Q", "A"):
        for i in (1, 2, 3, 4):
            assert prefix.text.count(f"{tag}[{i}]:") == 3


LONG_DEMOS = [Sample(f"L{i}", f"Tom has {i} apples and walks to the busy market near his old house to buy more. "
                           "How many apples does he carry home?",
                     f"He starts with {i} apples, then the friendly shop keeper adds {i} more apples to his bag, "
                     f"so he carries {2 * i} home. The answer is {2 * i}.") for i in range(1, 9)]


def _words_in_order(short: str, long: str) -> bool:
    """``short`` is ``long`` with characters removed (whitespace ignored)."""
    rest = iter("".join(long.split()))
    return all(c in rest for c in "".join(short.split()))


@pytest.mark.parametrize("block_size", [1, 2])
def test_drop_blocks_keeps_whole_blocks_only(scorer, block_size):
    from lingua_compress import Compressor

    clear_prefix_cache()
    compressor = Compressor(scorer=scorer)
    kept_all = build_prefix("Answer the questions.", LONG_DEMOS, FMT, block_size=block_size, ratio=0.3,
                            compressor=compressor, count_tokens=words, drop_blocks=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prefix = build_prefix("Answer the questions.", LONG_DEMOS, FMT, block_size=block_size, ratio=0.3,
                              compressor=compressor, count_tokens=words, drop_blocks=True)
    assert not [w for w in caught if "structure" in str(w.message)]
    assert len(kept_all.blocks) == len(LONG_DEMOS) // block_size
    assert 1 <= len(prefix.blocks) < len(kept_all.blocks)
    original = [build_prefix("", LONG_DEMOS, FMT, block_size=block_size, count_tokens=words).blocks][0]
    # Every sent block is a thinned copy of one original block, in order, with all of its markers.
    src = iter(enumerate(original))
    sources = [next(i for i, o in src if _words_in_order(b, o)) for b in prefix.blocks]
    for b in prefix.blocks:
        for tag in ("Q", "A"):
            assert [b.count(f"{tag}[{j}]:") for j in range(1, block_size + 1)] == [1] * block_size
    # The demo-copy check knows the answers of the sent blocks only.
    answers = [tuple(d.answer for d in LONG_DEMOS[i * block_size:(i + 1) * block_size]) for i in sources]
    assert list(prefix.demo_answers) == answers
    assert prefix.key != kept_all.key
    with pytest.raises(ConfigError, match="drop_blocks"):
        BatchConfig(drop_blocks="yes")


def test_chat_mode_and_knn_mode():
    samples, gold = toy(6)
    llm = FakeLLM(gold, chat=True)
    res = run_batched(samples, llm, demos=DEMOS, config=BatchConfig(batch_size=3, group="knn"), fmt=FMT,
                      embed=TfidfEmbedder(), count_tokens=words)
    assert res.status_counts == {"ok": 6} and res.cost.calls == 6
    assert isinstance(llm.prompts[0], tuple) and llm.prompts[0][0]["role"] == "system"
    assert all(len(a) == 3 for a in llm.asked)


def test_auto_demo_style_round_trip():
    samples, gold = toy(4)
    fmt = BatchFormat(style="auto_demo", answer_pattern=GSM8K_PATTERN)

    class Echoing(FakeLLM):
        def complete(self, prompt, **kw):
            block = prompt.split("\n\n")[-1].split("Answers:")[0]
            slots = Q_LINE.findall(block)
            out = "\n".join(f"Q[{i}]: {q}\nA[{i}]: The answer is {self.gold[q]}." for i, q in slots)
            self.prompts.append(prompt)
            return Completion(out.removeprefix("Q[1]:"), None, None, "stop")

    res = run_batched(samples, Echoing(gold), demos=DEMOS, config=BatchConfig(batch_size=2), fmt=fmt,
                      count_tokens=words)
    assert res.status_counts == {"ok": 4}
    assert all(r.echo for r in res.items.values())


def test_bad_inputs():
    samples, gold = toy(2)
    with pytest.raises(ConfigError, match="occurs twice"):
        run_batched([samples[0], samples[0]], FakeLLM(gold))
    with pytest.raises(ConfigError, match="needs a compressor"):
        run_batched(samples, FakeLLM(gold), demos=DEMOS, config=BatchConfig(ratio=0.3))
    with pytest.raises(ConfigError, match="batch_size"):
        BatchConfig(batch_size=0)
    with pytest.raises(ConfigError, match="retry_statuses"):
        BatchConfig(retry_statuses=("lost",))


@pytest.mark.model
def test_end_to_end_real_model(real_compressor):
    from lingua_compress.llm import LocalLLM

    llm = LocalLLM(loaded=real_compressor.scorer.loaded)
    demos = [Sample(f"d{i}", f"Tom has {i} apples and buys {i + 1} more. How many apples does he have?",
                    f"{i} + {i + 1} = {2 * i + 1}. The answer is {2 * i + 1}.") for i in range(1, 9)]
    samples = [Sample(f"q{i}", f"Ann has {i} pens and gets {i + 2} more. How many pens does she have?")
               for i in range(1, 9)]
    res = run_batched(samples, llm, demos=demos, instruction="Solve each problem.", fmt=FMT,
                      config=BatchConfig(batch_size=4, max_tokens_per_item=14, max_retries=0))
    assert list(res.items) == [s.id for s in samples]
    assert all(r.status in STATUSES for r in res.items.values())
    assert res.cost.calls == 2 and res.cost.usage_source == "api"
    assert res.cost.vs_one_by_one < 0.5
