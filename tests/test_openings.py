"""A single worked example has no repeated format to learn from: its line labels and answer phrase are kept first
by the token pass (salient), but not protected, so tight budgets still hold."""

import warnings

import pytest

from lingua_compress import Compressor, Prompt
from lingua_compress.segment import segment
from fakes import FakeScorer

NATALIA = ("Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
           "How many clips did Natalia sell altogether in April and May?\nNatalia sold 48/2 = 24 clips in May.\n"
           "Natalia sold 48+24 = 72 clips altogether in April and May.\nThe answer is 72\n")


def salient_words(text):
    seg = segment(text)
    return [text[a:b] for a, b, s in zip(seg.unit_start, seg.unit_end, seg.salient) if s]


def test_labels_and_the_answer_phrase_are_salient_not_protected():
    assert salient_words(NATALIA) == ["Question", ":", "The", "answer", "is"]
    seg = segment(NATALIA)
    assert not (seg.salient & seg.protected).any()


def test_a_colon_inside_a_line_or_before_a_number_is_no_label():
    assert salient_words("It was 3:45 when we left: the bus was late.\nFords:3+2x\n") == []


def test_repeated_demonstrations_use_the_protected_template_instead():
    demos = [NATALIA.replace("48", str(40 + i)) for i in range(4)]
    seg = segment(Prompt(demonstrations=demos))
    assert not seg.salient.any()
    words = [seg.text[a:b] for a, b, p in zip(seg.unit_start, seg.unit_end, seg.protected) if p]
    assert words.count("Question") == 4 and words.count("answer") == 4


@pytest.fixture(scope="module")
def fake():
    return Compressor(scorer=FakeScorer())


def test_half_the_example_keeps_its_format(fake):
    out = fake.compress(NATALIA, 0.5).text
    assert out.startswith("Question:") and "The answer is 72" in out


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.2, 0.3])
def test_tight_budgets_still_hold(fake, ratio):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a BudgetWarning would mean the lift broke the budget
        res = fake.compress(NATALIA, ratio)
    assert abs(res.compressed_tokens - res.target_tokens) <= 2
