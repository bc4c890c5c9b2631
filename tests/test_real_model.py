"""A few integration tests on the real embedded Gemma 3 270M (loaded once per session)."""

import json
import re

import pytest

from lingua_compress import Prompt

pytestmark = pytest.mark.model

DEMOS = [
    "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?\nLet's think step by step\n"
    "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n"
    "The answer is 72",
    "Question: Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?\nLet's think step by step\nWeng earns 12/60 = $0.2 per minute.\n"
    "Working 50 minutes, she earned 0.2 x 50 = $10.\nThe answer is 10",
    "Question: Betty is saving money for a new wallet which costs $100. Betty has only half of the money she "
    "needs. Her parents decided to give her $15 for that purpose, and her grandparents twice as much as her "
    "parents. How much more money does Betty need to buy the wallet?\nLet's think step by step\n"
    "In the beginning, Betty has only 100 / 2 = $50.\nBetty's grandparents gave her 15 * 2 = $30.\n"
    "This means, Betty needs 100 - 50 - 30 - 15 = $5 more.\nThe answer is 5",
]
PROMPT = Prompt(
    instruction="Please reference the following examples to answer the math question.",
    demonstrations=DEMOS,
    question="Question: Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
    "muffins for her friends every day with four. She sells the remainder at $2 per fresh duck egg. How much does "
    "she make every day?",
)


@pytest.mark.parametrize("ratio", [0.5, 0.2, 0.1])
def test_real_model_meets_budget_and_keeps_question_numbers(real_compressor, ratio):
    res = real_compressor.compress(PROMPT, ratio)
    assert abs(res.compressed_tokens - res.target_tokens) <= max(0.02 * res.target_tokens, 3)
    for n in ("16", "$2"):
        assert n in res.text
    for demo in DEMOS:  # a demonstration that survives keeps its final answer line's number
        answer = re.search(r"The answer is (\d+)", demo).group(1)
        question_words = demo.split("\n")[0].split()[1:4]
        if all(w in res.text for w in question_words):
            assert f" {answer}" in res.text
    assert res.tokenizer.startswith("scorer:")


def test_real_model_scores_are_informative(real_compressor):
    # A surprising word should outrank a predictable one: "the" rarely survives 5x compression.
    text = "The cat sat on the mat. " * 3 + "Then a purple xylophone exploded over Kathmandu."
    res = real_compressor.compress(text, 0.4)
    assert "xylophone" in res.text
    assert res.text.count("the ") < text.count("the ")


def test_llmlingua_drop_in_keys(real_compressor):
    out = real_compressor.compress_prompt(DEMOS, instruction=PROMPT.instruction, question=PROMPT.question,
                                          rate=0.3)
    json.dumps(out)
    assert 0.25 < out["rate"] < 0.35 and out["ratio"] > 2.5


def test_module_level_compress_uses_the_shared_default(real_compressor, monkeypatch):
    import lingua_compress
    from lingua_compress import api

    monkeypatch.setattr(api, "_default", real_compressor)  # the session's loaded model, not a second copy
    res = lingua_compress.compress(DEMOS[1], ratio=0.5)
    assert api.default_compressor() is real_compressor
    assert "$12" in res.text and abs(res.compressed_tokens - res.target_tokens) <= 3
