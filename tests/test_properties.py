"""Invariants over random prompts (fake scorer: no model, so hypothesis can run hundreds of cases)."""

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lingua_compress import CompressionConfig, Compressor, Prompt
from lingua_compress.render import render
from lingua_compress.segment import segment
from fakes import FakeScorer

WORDS = st.sampled_from(
    "the a cat sat on mat and then ran far away because it was late quickly 12 3.5 $40 user_id "
    "https://a.io/x Q[ ]: , . ? 東京 well-known it's".split()
)
SEPS = st.sampled_from([" ", " ", " ", "\n", "\n\n", "  "])
TEXT = st.lists(st.tuples(WORDS, SEPS), min_size=1, max_size=120).map(lambda xs: "".join(w + s for w, s in xs))
COMPRESSOR = Compressor(scorer=FakeScorer())
TOKEN_ONLY = Compressor(scorer=FakeScorer(), config=CompressionConfig(coarse=False))
NUMBER = re.compile(r"[$]?\d+(?:[.,:/]\d+)*%?")
# Random prompts are sometimes all numbers: the BudgetWarning is expected there, and checked in test_compress.
pytestmark = pytest.mark.filterwarnings("ignore::lingua_compress.BudgetWarning")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def unit_subsequence(res) -> bool:
    """Every kept span is a verbatim slice of the original, in order, without overlaps."""
    pos = 0
    for s, e in res.kept_spans:
        if s < pos or e <= s:
            return False
        pos = e
    joined = [res.original[s:e] for s, e in res.kept_spans]
    at = 0
    for piece in joined:
        found = res.text.find(piece, at)
        if found < 0:
            return False
        at = found + len(piece)
    return True


def protected_words(text):
    return [w.strip(",.?") for w in re.findall(r"\S+", text) if re.search(r"\d|_|https?://", w)]


def protected_floor(compressor, text):
    """Tokens of what the token pass may never drop: the segmenter's protected units (numbers, identifiers, URLs,
    and line openings most blocks share, e.g. "Q[" three times), rendered as the compressor would."""
    seg = segment(text)
    kept = render(seg.text, seg.unit_start, seg.unit_end, seg.protected)[0]
    return len(compressor.scorer.tokenize(kept)[0])


def budget_holds(compressor, res, protected):
    tol = max(0.02 * res.target_tokens, 3)
    floor = max(sum(len(compressor.scorer.tokenize(w)[0]) for w in protected), protected_floor(compressor, res.original))
    return abs(res.compressed_tokens - res.target_tokens) <= tol or res.compressed_tokens <= floor + tol


@SETTINGS
@given(TEXT, st.floats(0.05, 1.0))
def test_output_is_an_in_order_subsequence_and_meets_budget(text, ratio):
    res = COMPRESSOR.compress(text, ratio)
    assert unit_subsequence(res)
    assert budget_holds(COMPRESSOR, res, protected_words(text))
    # numbers come out whole or not at all (the coarse stage may drop a whole sentence)
    assert set(NUMBER.findall(res.text)) <= set(NUMBER.findall(text))


@SETTINGS
@example("Q[\n\nQ[\n\nQ[ ", 0.25)  # every unit is a shared line opening: all protected, over budget by design
@given(TEXT, st.floats(0.05, 1.0))
def test_token_pass_never_drops_protected_spans(text, ratio):
    res = TOKEN_ONLY.compress(text, ratio)
    protected = protected_words(text)
    for w in protected:
        assert w in res.text
    assert unit_subsequence(res)
    assert budget_holds(TOKEN_ONLY, res, protected)


@SETTINGS
@given(st.lists(TEXT, min_size=1, max_size=6), TEXT, st.floats(0.05, 1.0))
def test_structured_prompts_keep_forced_spans_and_are_deterministic(demos, question, ratio):
    prompt = Prompt(instruction="Answer.", demonstrations=[f"Q[{i}]: {d}" for i, d in enumerate(demos)],
                    question=question)
    res = COMPRESSOR.compress(prompt, ratio, keep=[r"Q\[\d+\]:"])
    for i in range(len(demos)):
        assert f"Q[{i}]:" in res.text
    assert unit_subsequence(res)
    assert COMPRESSOR.compress(prompt, ratio, keep=[r"Q\[\d+\]:"]).text == res.text
