"""benchmarks/chat_copy.py: copy shares and per-band retention from bench_chat's cached results (no model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import chat_copy  # noqa: E402

LETTER = "Dear hiring manager I am writing to apply for the director position at your association today"


def conversation(cid, reply):
    return {"id": cid, "conversations": [{"from": "human", "value": "Write a cover letter"},
                                         {"from": "gpt", "value": LETTER},
                                         {"from": "human", "value": "Rewrite it"},
                                         {"from": "gpt", "value": reply}]}


def test_copy_share_counts_the_replys_4grams_found_in_the_history():
    assert chat_copy.copy_share(conversation("a", LETTER), 1200) == 1.0
    assert chat_copy.copy_share(conversation("b", "Something else entirely, with new words in it"), 1200) == 0.0
    assert chat_copy.copy_share(conversation("c", "Sure."), 1200) == 0.0  # no 4-gram at all: nothing copied
    assert chat_copy.copy_share({"id": "d", "conversations": [{"from": "gpt", "value": LETTER}]}, 1200) is None


def test_bands_weigh_conversations_by_their_history_worth(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(conversation(c, r)) + "\n"
                            for c, r in (("copy", LETTER), ("fresh", "A brand new answer with nothing repeated here"))))
    rows = []
    for cid, full, none, ours in (("copy", 10.0, 50.0, 30.0), ("fresh", 20.0, 30.0, 21.0)):
        rows += [{"id": cid, "method": "full", "ratio": 1.0, "nll": full},
                 {"id": cid, "method": "no-history", "ratio": 0.0, "nll": none},
                 {"id": cid, "method": "ours", "ratio": 0.5, "nll": ours + 5},  # superseded by the next record
                 {"id": cid, "method": "ours", "ratio": 0.5, "nll": ours}]
    work = tmp_path / "chat-x"
    work.mkdir()
    (work / "evals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert chat_copy.main(["--work", str(work), "--data", str(data), "--methods", "ours", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "chat_copy.json").read_text())
    low, high = report["bands"][0], report["bands"][-1]
    assert report["conversations"] == 2 and low["n"] == 1 and high["n"] == 1
    assert low["share_of_worth"] == pytest.approx(10 / 50) and high["share_of_worth"] == pytest.approx(40 / 50)
    assert high["ours"]["retention_in_band"] == pytest.approx(0.5)  # lost 20 of the copy conversation's 40
    assert high["ours"]["points_lost_overall"] == pytest.approx(40.0)  # 20 of the 50 nats both are worth
    assert low["ours"]["retention_in_band"] == pytest.approx(0.9)
