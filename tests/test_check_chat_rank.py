"""benchmarks/check_chat_rank.py: the pickers and the summary on hand-made records, and a dry run on the embedded
model over its two built-in conversations."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import check_chat_rank as C  # noqa: E402


def test_pickers_name_the_newest_the_newest_reply_and_the_most_relevant():
    roles = ["user", "assistant", "user", "assistant", "user"]
    scores = {"question-nll": [-1.0, -3.0, -2.0, -4.0, -5.0], "question-nll-hint": [-9.0, -1.0, -9.0, -9.0, -9.0],
              "lexical": [0.0, 0.0, 0.5, 0.0, 0.0]}
    assert C.picks(roles, scores) == {"newest": 4, "newest-assistant": 3, "question-nll": 0, "question-nll-hint": 1,
                                      "lexical": 2, "question-nll-assistant": 1}
    assert C.picks(["user"], {k: [0.0] for k in scores})["question-nll-assistant"] == 0  # no reply: the newest


def test_summary_counts_hits_on_the_most_copied_message_and_the_share_held():
    def rec(copied, newest_pick):
        return {"copied": copied, "picks": {p: newest_pick if p == "newest" else 0 for p in C.PICKERS}}

    records = [rec([0, 12], 1), rec([20, 5], 1), rec([1, 2], 1)]  # the last copies too little to be judged
    s = C.summarise(records, 10)
    assert (s["conversations"], s["judged"]) == (3, 2)
    assert s["newest"] == {"picks_top_source": 1, "copied_in_pick": round(17 / 32, 3)}
    assert s["lexical"] == {"picks_top_source": 1, "copied_in_pick": round(20 / 32, 3)}
    assert C.lexical("Rewrite the fruits list", "a list of fruits") == pytest.approx(2 / 4)


@pytest.mark.model
def test_dry_run_scores_every_older_message(tmp_path):
    out = tmp_path / "r.json"
    summary = C.main(["--dry", "--out", str(out)])
    records = json.loads(out.read_text())["records"]
    assert [r["id"] for r in records] == [it["id"] for it in C.DRY]
    for r, it in zip(records, C.DRY):
        n = len(it["history"]) - 1
        assert len(r["copied"]) == len(r["question-nll"]) == len(r["lexical"]) == n
        assert all(0 <= p < n for p in r["picks"].values())
    assert records[0]["copied"][1] > 0 and records[1]["copied"][1] > 0  # each reply copies an older reply
    assert summary["judged"] == 2 and summary["newest"]["picks_top_source"] == 1  # the rewrite's source is newest
