"""Long unbroken units (base64, hashes, minified code) and budgets the result cannot meet.

A unit is never split for dropping, but it must not make a scoring call unbounded: a spy session records the
length of every ``score()`` call. A result far from its budget, or empty while the budget is not, must say so.
"""

import json
import re
import string
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lingua_compress import BudgetWarning, CompressionConfig, Compressor, Prompt
from lingua_compress.prune import plan_windows
from fakes import FakeScorer


def call_bound(window_tokens: int) -> int:
    """The bound asserted on every score() call: looser than the implementation's own, far below a long unit."""
    return 2 * max(window_tokens, 512)


class SpySession:
    """Passes calls through, recording each score() length and checking that score() and keep() alternate."""

    def __init__(self, inner, calls: list[int]):
        self.inner, self.calls, self.open = inner, calls, None

    def score(self, ids, need=None):
        assert self.open is None, "score() called twice without keep()"
        assert need is None or len(need) == len(ids)
        self.calls.append(len(ids))
        self.open = len(ids)
        out = self.inner.score(ids, need)
        assert len(out) == len(ids)
        return out

    def keep(self, mask):
        assert self.open == len(mask), "keep() mask does not match the window just scored"
        self.open = None
        self.inner.keep(mask)


class SpyScorer:
    def __init__(self, inner):
        self.inner, self.name, self.calls = inner, inner.name, []

    def tokenize(self, text):
        return self.inner.tokenize(text)

    def token_nll(self, ids):
        return self.inner.token_nll(ids)

    def session(self, conditioning="reuse"):
        return SpySession(self.inner.session(conditioning), self.calls)


def compress_recording(compressor, prompt, **kwargs):
    """Result, BudgetWarning messages and score() lengths of one compression."""
    compressor.scorer.calls.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = compressor.compress(prompt, **kwargs)
    budget = [str(w.message) for w in caught if issubclass(w.category, BudgetWarning)]
    return res, budget, list(compressor.scorer.calls)


def off_budget(res) -> bool:
    """Farther from the budget than the compressor may land without a BudgetWarning."""
    target = res.target_tokens
    return abs(res.compressed_tokens - target) > max(0.1 * target, 4) + 1 or (res.text == "" and target >= 1)


@pytest.fixture()
def fake():
    return Compressor(scorer=SpyScorer(FakeScorer()))


def test_one_huge_unit_is_scored_in_bounded_calls(fake):
    res, _, calls = compress_recording(fake, "a" * 50000, ratio=0.5)
    assert max(calls) <= call_bound(200), f"a score() call of {max(calls)} tokens"
    assert sum(calls) == res.timings.scored_tokens == 12500  # every token scored once, in order


def test_one_huge_unit_at_half_ratio_is_not_silently_empty(fake):
    res, budget, _ = compress_recording(fake, "a" * 50000, ratio=0.5)
    assert res.text or budget, "an empty result with no BudgetWarning"
    assert not budget or re.search(r"\b6250\b", budget[0]), budget  # the warning names the budget


def test_a_huge_unit_among_prose_keeps_prose_windows_bounded(fake):
    prose = "The quick brown fox jumps over the lazy dog. " * 40
    blob = "".join(string.hexdigits[i * 7 % 16] for i in range(20000))
    res, _, calls = compress_recording(fake, prose + blob + " " + prose, ratio=0.3)
    assert max(calls) <= call_bound(200)
    assert sum(calls) == res.timings.scored_tokens


RUN = st.builds(lambda ch, n: (ch * n)[:n], st.sampled_from(["a", "0f3c9", "Zk-q_8", "xY", "=+"]),
                st.integers(100, 6000))
WORD = st.sampled_from("the a cat sat on mat because it was late 12 $40 user_id . , \n\n".split(" "))
PIECES = st.lists(st.one_of(WORD, WORD, WORD, RUN), min_size=1, max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PIECES, st.floats(0.05, 0.9), st.sampled_from([16, 200]))
def test_any_units_bounded_calls_every_token_once_and_off_budget_warns(pieces, ratio, window):
    c = Compressor(scorer=SpyScorer(FakeScorer()), config=CompressionConfig(window_tokens=window))
    res, budget, calls = compress_recording(c, " ".join(pieces), ratio=ratio)
    if calls:
        assert max(calls) <= call_bound(window)
        assert sum(calls) == res.timings.scored_tokens
    if off_budget(res):
        assert budget, (res.compressed_tokens, res.target_tokens)


def reference_windows(tokens_per_unit, window_tokens):
    """The planning rule before long units were bounded; prose must still get exactly these windows."""
    windows, lo, acc = [], 0, 0
    for i, n in enumerate(tokens_per_unit):
        acc += n
        if acc >= window_tokens:
            windows.append((lo, i + 1))
            lo, acc = i + 1, 0
    if lo < len(tokens_per_unit):
        windows.append((lo, len(tokens_per_unit)))
    return windows


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 40), st.integers(0, 512)), max_size=300), st.sampled_from([16, 64, 200, 1000]))
def test_prose_windows_are_planned_as_before(tokens, window):
    # Units of up to 512 tokens (far more than any word of prose) are planned exactly as they always were.
    assert plan_windows(np.array(tokens, dtype=np.int64), window) == reference_windows(tokens, window)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 40), st.integers(0, 5000)), max_size=200), st.sampled_from([16, 200]))
def test_windows_cover_all_units_and_only_a_lone_unit_exceeds_the_bound(tokens, window):
    tokens = np.array(tokens, dtype=np.int64)
    windows = plan_windows(tokens, window)
    assert [w[0] for w in windows[1:]] == [w[1] for w in windows[:-1]]
    assert (windows[0][0], windows[-1][1]) == (0, len(tokens)) if len(tokens) else windows == []
    for lo, hi in windows:
        assert tokens[lo:hi].sum() <= call_bound(window) or hi - lo == 1


def test_huge_unit_chunks_are_conditioned_on_the_chunks_before_them(scorer):
    """The unit's scores equal one pass over its tokens: each chunk sees the chunks before it."""
    spy = SpyScorer(scorer)
    nll_log = []
    inner_session = spy.session

    def session(conditioning="reuse"):
        s = inner_session(conditioning)
        score = s.score
        s.score = lambda ids, need=None: nll_log.append(score(ids, None)) or nll_log[-1]
        return s

    spy.session = session
    text = "nataliasoldclips" * 300  # one unit (no spaces, not an identifier) of well over 712 tiny tokens
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetWarning)  # the one unit is kept or dropped whole: far from 0.5
        Compressor(scorer=spy, config=CompressionConfig(coarse=False)).compress(text, 0.5)
    assert len(spy.calls) > 1 and max(spy.calls) <= call_bound(200)
    whole = scorer.session().score(scorer.tokenize(text)[0])  # one call, no chunks
    np.testing.assert_allclose(np.concatenate(nll_log), whole, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("conditioning", ["reuse", "recompute"])
def test_huge_unit_on_the_tiny_model_finishes_bounded(scorer, conditioning):
    spy = Compressor(scorer=SpyScorer(scorer), config=CompressionConfig(conditioning=conditioning))
    res, budget, calls = compress_recording(spy, "a" * 3000, ratio=0.5)
    assert max(calls) <= call_bound(200)
    assert res.text or budget


# --- one rule for a zero budget and a tiny ratio -------------------------------------------------------------


@pytest.mark.parametrize("prompt", [
    "Pay $40 now to the clerk.\n\nThe cat sat on the mat 3 times.\n\nIt cost 7 dollars in the end.",
    Prompt(instruction="Answer.", demonstrations=["Tom has 3 apples. The answer is 3",
                                                  "Ann has 5 pears. The answer is 5"],
           question="How many plums does Bo have if he has 9?"),
])
def test_target_zero_is_the_limit_of_a_tiny_ratio(fake, prompt):
    zero, zero_warned, _ = compress_recording(fake, prompt, target_tokens=0)
    tiny, tiny_warned, _ = compress_recording(fake, prompt, ratio=1e-9)
    assert zero.text == tiny.text
    assert zero.text, "protected numbers are kept at any budget"
    assert zero_warned and tiny_warned
    assert "budget of 0" in zero_warned[0]


def test_plain_words_at_target_zero_are_empty_without_a_warning(fake):
    res, budget, _ = compress_recording(fake, "The quick brown fox jumps over the lazy dog.", target_tokens=0)
    assert res.text == "" and not budget


def test_an_empty_result_under_a_positive_budget_warns(fake):
    res, budget, _ = compress_recording(fake, "a" * 20, target_tokens=2)
    assert res.text or budget


# --- ordinary prompts at ordinary ratios do not warn ---------------------------------------------------------


def gsm8k_prompt() -> Prompt:
    rows = [json.loads(line) for line in (Path(__file__).parent / "data/mini_gsm8k/train.jsonl").open()]
    demos = [f"Question: {r['question']}\nLet's think step by step\n{r['answer']}" for r in rows[:6]]
    return Prompt(instruction="Please reference the following examples to answer the math question.",
                  demonstrations=demos, question=demos[-1].split("\n")[0])


@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.33, 0.5, 0.8])
def test_ordinary_prompts_do_not_warn(scorer, ratio):
    from test_compress import PROMPT

    questions = [json.loads(line)["question"] for line in (Path(__file__).parent / "data/mini_gsm8k/test.jsonl").open()]
    prose = "\n\n".join(questions)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetWarning)
        Compressor(scorer=scorer).compress(PROMPT, ratio)
        for prompt in (gsm8k_prompt(), prose):
            Compressor(scorer=FakeScorer()).compress(prompt, ratio)


@pytest.mark.model
def test_real_model_scores_a_long_base64_run_in_bounded_calls(real_compressor):
    import base64
    import random

    blob = base64.urlsafe_b64encode(random.Random(0).randbytes(2500)).decode()[:2500]  # one unit, ~1.7k tokens
    prose = "Please decode the attachment below and summarise what it contains in one sentence. "
    c = Compressor(scorer=SpyScorer(real_compressor.scorer))
    res, budget, calls = compress_recording(c, prose + blob + "\n\n" + prose, ratio=0.5)
    assert len(calls) > 1 and max(calls) <= call_bound(200)
    assert sum(calls) == res.timings.scored_tokens
    assert res.text or budget
    assert not off_budget(res) or budget


@pytest.mark.parametrize("conditioning", ["reuse", "recompute"])
def test_restart_past_the_context_prefills_in_bounded_chunks(monkeypatch, conditioning):
    """Past the model's context the session restarts from half of it: that prefix must go through in chunks,
    and chunking it must not change a score (a causal prefix is exact in any chunking)."""
    import lingua_compress.scoring as scoring
    from tiny import tiny_scorer

    rng = np.random.default_rng(0)
    ids = rng.integers(5, 300, size=3000).tolist()

    def run(chunk: int) -> tuple[np.ndarray, int]:
        monkeypatch.setattr(scoring, "_ONE_SHOT_CHUNK", chunk)
        scorer = tiny_scorer(max_positions=2048)
        calls = []
        forward = scorer.forward
        monkeypatch.setattr(scorer, "forward", lambda x, **kw: calls.append(len(x)) or forward(x, **kw))
        session = scorer.session(conditioning)
        out = []
        for i in range(0, len(ids), 200):
            out.append(session.score(ids[i:i + 200]))
            session.keep(np.ones(len(out[-1]), dtype=bool))
        return np.concatenate(out), max(calls)

    chunked, largest = run(64)
    whole, largest_whole = run(10 ** 6)
    assert largest <= 64 + 200 < largest_whole  # the restart prefix went through in chunks
    np.testing.assert_allclose(chunked, whole, atol=2e-3)
