"""Prompt building: golden completion prompt, chat messages, stops from the prefill, budgets scaled with size."""

from __future__ import annotations

import pytest

from lingua_compress.batch import BatchFormat, Sample, build_batch, build_prefix
from lingua_compress.errors import ConfigError

DEMOS = [Sample(f"d{i}", f"dq{i}?", f"da{i}") for i in (1, 2, 3, 4)]
QS = [Sample("x", "qx?"), Sample("y", "qy?")]
PLAIN = BatchFormat(instruction_rule=False)


def test_golden_completion_prompt():
    prefix = build_prefix("Answer.", DEMOS, PLAIN, block_size=2, count_tokens=len)
    batch = build_batch(prefix, QS, max_tokens_per_item=10)
    assert batch.prompt == (
        "Answer.\n\n"
        "Q[1]: dq1?\nQ[2]: dq2?\nA[1]: da1\nA[2]: da2\n\n"
        "Q[1]: dq3?\nQ[2]: dq4?\nA[1]: da3\nA[2]: da4\n\n"
        "(2 questions; answer each, A[1] to A[2].)\nQ[1]: qx?\nQ[2]: qy?\nA[1]:"
    )
    assert batch.sample_ids == ("x", "y") and batch.prefill == "A[1]:"
    assert batch.stop == ("\nQ[", "\nA[1]:", "\n\n")
    assert batch.max_tokens == 2 * 10 + 8


def test_prefix_identical_across_batches_and_sizes():
    prefix = build_prefix("Answer.", DEMOS, BatchFormat(), block_size=2, count_tokens=len)
    prompts = [build_batch(prefix, QS[:n]).prompt for n in (1, 2)]
    assert all(p.startswith(prefix.text + "\n\n") for p in prompts)
    assert "Each block lists questions" in prefix.text  # the format rule follows the instruction


def test_chat_messages_shape():
    prefix = build_prefix("Answer.", DEMOS, PLAIN, block_size=2, count_tokens=len)
    batch = build_batch(prefix, QS, chat=True)
    roles = [m["role"] for m in batch.prompt]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert batch.prompt[2]["content"] == "A[1]: da1\nA[2]: da2"
    assert batch.prompt[-1]["content"].startswith("(2 questions;")
    assert batch.prefill == "" and batch.stop == ("\nQ[",)


def test_auto_demo_and_json_shapes():
    auto = BatchFormat(style="auto_demo", instruction_rule=False, count_reminder=False)
    prefix = build_prefix("", DEMOS[:2], auto, block_size=2, count_tokens=len)
    assert prefix.text == "Q[1]: dq1?\nQ[2]: dq2?\nAnswers:\nQ[1]: dq1?\nA[1]: da1\nQ[2]: dq2?\nA[2]: da2"
    batch = build_batch(prefix, QS, max_tokens_per_item=10)
    assert batch.prompt.endswith("Q[1]: qx?\nQ[2]: qy?\nAnswers:\nQ[1]:")
    assert batch.stop[0] == "\nQ[1]:" and batch.max_tokens == 2 * 2 * 10 + 8  # room for the echo
    js = BatchFormat(style="json", instruction_rule=False, count_reminder=False)
    prefix = build_prefix("", DEMOS[:2], js, block_size=2, count_tokens=len)
    assert prefix.text.endswith('A: {"1": "da1", "2": "da2"}')
    assert build_batch(prefix, QS).prompt.endswith("Q[2]: qy?\nA: {")


def test_blank_lines_inside_inputs_cannot_break_blocks():
    demo = Sample("d", "line one\n\nline two", "step one\n\n\nThe answer is 3.")
    prefix = build_prefix("", [demo], PLAIN, block_size=1, count_tokens=len)
    assert len(prefix.blocks) == 1 and "\n\n" not in prefix.blocks[0]


def test_bad_arguments():
    with pytest.raises(ConfigError, match="no answer"):
        build_prefix("", [Sample("d", "q")], PLAIN, block_size=1, count_tokens=len)
    with pytest.raises(ConfigError, match="block_size"):
        build_prefix("", DEMOS, PLAIN, block_size=0, count_tokens=len)
    with pytest.raises(ConfigError, match="style"):
        BatchFormat(style="xml")
    with pytest.raises(ConfigError, match="exactly one group"):
        BatchFormat(answer_pattern=r"\d+")
    with pytest.raises(ConfigError, match="Sample.id"):
        Sample("", "q")
