"""The ranking check and bench_rag's ranking rows: rank arithmetic, and dry end-to-end runs on the embedded model
(TF-IDF standing in for MiniLM) of the check and of ours-qa (retrieval scores fused) beside ours-qa-nll (not)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_rag  # noqa: E402
import check_rank  # noqa: E402
from test_bench_rag import _rows  # noqa: E402


def test_ranks_put_the_highest_score_first_and_break_ties_by_order():
    assert check_rank.ranks(np.array([0.1, 0.9, 0.5, 0.9])).tolist() == [3, 0, 2, 1]


def test_fusions_combine_both_rankings():
    nll = np.array([-2.0, -1.0, -3.0])  # document 1 first by NLL
    emb = np.array([0.9, 0.5, 0.2])  # document 0 first by embedding
    scores = check_rank.fused(nll, emb)
    assert check_rank.ranks(scores["nll"])[1] == 0 and check_rank.ranks(scores["embed"])[0] == 0
    # Equal mean ranks (0 and 1 both average 0.5): NLL breaks the tie.
    assert check_rank.ranks(scores["rank-mean"]).tolist() == [1, 0, 2]
    from lingua_compress.question import fuse

    z = fuse(nll, emb)
    assert np.allclose(z, (nll - nll.mean()) / nll.std() + (emb - emb.mean()) / emb.std())
    assert np.allclose(scores["z-sum"], z)
    assert np.allclose(fuse(nll, np.ones(3)), (nll - nll.mean()) / nll.std())  # a flat prior adds nothing


@pytest.mark.model
def test_check_rank_dry_ranks_every_item_by_every_ranking(tmp_path):
    summary = check_rank.main(["--dry", "--data", str(_rows(tmp_path, 230)), "--out", str(tmp_path / "o")])
    assert summary["meta"]["n"] == 2 and summary["meta"]["embedder"] == "tfidf"
    saved = json.loads((tmp_path / "o" / "check_rank_dry.json").read_text())
    assert len(saved["records"]) == 2
    for rec in saved["records"]:
        assert set(rec["gold_rank"]) == {"nll", "embed", "rank-mean", "z-sum"}
        assert all(0 <= r < 3 for r in rec["gold_rank"].values())
    for name, row in summary["rankings"].items():
        assert 0 <= row["top1"] <= row["top2"] <= row["top3"] <= 1 and ("mrr_vs_nll" in row) == (name != "nll")


@pytest.mark.model
def test_ours_qa_fuses_retrieval_scores_and_the_nll_ablation_does_not(tmp_path):
    argv = ["--dry", "--data", str(_rows(tmp_path, 230)), "--seed", "1", "--disjoint-from", "0", "--n", "1",
            "--methods", "ours-qa,ours-qa-nll", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "o")]
    assert bench_rag.main(argv) == 0
    report = json.loads((tmp_path / "o" / "bench_rag_dry.json").read_text())
    assert {d["vs"] for d in report["paired"] if d["method"] == "ours-qa"} == {"ours-qa-nll"}
    recs = [json.loads(x) for x in next((tmp_path / "work").glob("rag-*/records.jsonl")).read_text().splitlines()]
    assert {r["method"] for r in recs} == {"ours-qa", "ours-qa-nll"}
    assert all(r["status"] == "ok" and 0.4 <= r["achieved"] <= 0.6 for r in recs)
    args = bench_rag.parse_args(["--methods", "ours-qa,ours-qa-nll"])
    assert bench_rag.fingerprint("ours-qa-nll", args) != bench_rag.fingerprint("ours-qa", args)
    assert "ours-qa-nll" not in bench_rag.parse_args([]).methods  # an ablation runs only when named
