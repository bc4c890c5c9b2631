"""The local transformers backend on the tiny random-weight model: budgets, stops, chat fallback, counting."""

from __future__ import annotations

import pytest

from lingua_compress.errors import ConfigError
from lingua_compress.llm import LLM, LocalLLM
from lingua_compress.models import LoadedModel
from tiny import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def llm():
    return LocalLLM(loaded=LoadedModel(tiny_model(), tiny_tokenizer(), "tiny", "cpu", False))


PROMPT = "Natalia sold clips to 48 of her friends in April."


def test_protocol_and_budget(llm):
    assert isinstance(llm, LLM)
    c = llm.complete(PROMPT, max_tokens=6)
    assert c.prompt_tokens == len(tiny_tokenizer()(PROMPT)["input_ids"])
    assert c.completion_tokens <= 6
    assert c.finish_reason in ("stop", "length")


def test_stop_string_cuts_and_reports_stop(llm):
    free = llm.complete(PROMPT, max_tokens=8).text
    if len(free) < 3:
        pytest.skip("the random model ended at once")
    stop = free[1:3]
    c = llm.complete(PROMPT, max_tokens=8, stop=[stop])
    assert stop not in c.text and free.startswith(c.text)
    assert c.finish_reason == "stop"


def test_chat_without_template_uses_transcript(llm):
    chat = LocalLLM(loaded=llm.loaded, chat=True)
    c = chat.complete([{"role": "user", "content": "Q[1]: 2+3?"}], max_tokens=3)
    assert c.prompt_tokens > 5
    with pytest.raises(ConfigError, match="chat mode"):
        chat.complete("plain", max_tokens=1)


def test_count_tokens(llm):
    assert llm.count_tokens("") == 0
    assert llm.count_tokens(PROMPT) == len(tiny_tokenizer()(PROMPT, add_special_tokens=False)["input_ids"])
