"""bench_batch_llm: condition selection, the server's start/stop, and a dry end-to-end run (scripted
OpenAI-compatible server in a child process, mini data under tests/data) that accounts for every id and resumes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_batch_llm as bbl  # noqa: E402
import llm_server  # noqa: E402

DATA = Path(__file__).parent / "data" / "mini_gsm8k_batch"  # tests never read ../shared


def _argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["--dry", "--data", str(DATA), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), *extra]


def test_condition_names_presets_and_filters(tmp_path):
    assert bbl.Cond(6, "auto_demo", "knn", 0.3, 3).name == "k6-auto_demo-knn-c0.3-v3"
    core = bbl.parse_args(["--block", "12"]).conds
    assert [c.name for c in core] == ["k1-indexed-seq-full", "k4-indexed-seq-full", "k4-auto_demo-seq-full",
                                      "k6-indexed-seq-full", "k6-auto_demo-seq-full", "k4-indexed-seq-full-v3",
                                      "k6-indexed-seq-full-v3"]
    grid = bbl.parse_args(["--conditions", "grid"]).conds
    assert len(grid) == len({c.name for c in grid}) == 2 + 16 + 3 + 8 + 4
    # a filtered slice keeps its K = 1 baselines with the same demonstrations
    part = bbl.parse_args(["--conditions", "grid", "--k", "4", "--demo-mode", "compressed"]).conds
    assert [c.name for c in part] == ["k1-indexed-seq-c0.3", "k4-indexed-seq-c0.3", "k4-auto_demo-seq-c0.3"]
    blocks = bbl.parse_args(["--conditions", "grid", "--k", "4", "--demo-mode", "blocks"]).conds
    assert [c.name for c in blocks] == ["k1-indexed-seq-c0.3-blocks", "k4-indexed-seq-c0.3-blocks"]
    named = bbl.parse_args(["--conditions", "k2-auto_demo-seq-full"]).conds
    assert [c.name for c in named] == ["k1-indexed-seq-full", "k2-auto_demo-seq-full"]
    for bad in (["--conditions", "k5-x"], ["--block", "10"], ["--k", "9"], ["--votes", "1"]):
        with pytest.raises(SystemExit):
            bbl.parse_args(bad)


def test_server_is_stopped_when_the_block_raises(tmp_path):
    answers = tmp_path / "a.json"
    answers.write_text("{}")
    port = llm_server.free_port()
    procs = []
    real_stop = llm_server.stop
    with pytest.raises(RuntimeError, match="boom"):
        llm_server.stop = lambda p: (procs.append(p), real_stop(p))
        try:
            with llm_server.serve(llm_server.fake_command(port, answers, 9), port, tmp_path / "log") as url:
                assert llm_server._healthy(url)
                raise RuntimeError("boom")
        finally:
            llm_server.stop = real_stop
    assert procs and procs[0].poll() is not None and not llm_server._healthy(f"http://127.0.0.1:{port}/v1")


def test_server_that_dies_is_reported_with_its_log(tmp_path):
    port = llm_server.free_port()
    cmd = [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"]
    with pytest.raises(llm_server.ServerError, match="(?s)code 3.*no model here"):
        with llm_server.serve(cmd, port, tmp_path / "log", timeout_s=30):
            pass


def test_dry_run_accounts_for_every_id_and_resumes(tmp_path):
    argv = _argv(tmp_path)
    assert bbl.main(argv) == 0
    args = bbl.parse_args(argv)
    records = next((tmp_path / "work").glob("batch-*/records.jsonl"))
    lines = records.read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    keys = {(r["cond"], r["id"]) for r in recs}
    ids = {f"test-{i}" for i in range(12)}
    assert len(keys) == len(recs) == 12 * len(args.conds)  # one record per id per condition
    assert keys == {(c.name, i) for c in args.conds for i in ids}
    from lingua_compress.batch import STATUSES

    assert all(r["status"] in STATUSES and r["calls"] > 0 and r["prompt_tokens"] > 0 for r in recs)
    report = json.loads((tmp_path / "out" / "bench_batch_llm_dry.json").read_text())
    assert report["accounting"] == {"conditions": len(args.conds), "records": len(recs), "lost": 0,
                                    "misattributed": 0, "pending": 0}
    rows = {r["condition"]: r for r in report["rows"]}
    # the stand-in answers wrong from slot 3 on: K <= 2 is exact, K = 3 loses a third, voting wins it back
    assert rows["k1-indexed-seq-full"]["accuracy"] == rows["k2-indexed-seq-full"]["accuracy"] == 1.0
    assert rows["k3-indexed-seq-full"]["accuracy"] == pytest.approx(2 / 3, abs=1e-3)
    assert rows["k3-indexed-seq-full-v3"]["accuracy"] == 1.0 and rows["k3-indexed-seq-full-v3"]["rounds_per_q"] > 1
    assert rows["k3-indexed-seq-full-v3"]["calls_per_q"] > rows["k3-indexed-seq-full"]["calls_per_q"]
    assert rows["k2-indexed-seq-c0.3"]["prompt_tokens_per_q"] < rows["k2-indexed-seq-full"]["prompt_tokens_per_q"]
    assert all(r["prefix_compressed"] == ("c0.3" in r["cond"]) for r in recs)
    assert rows["k2-indexed-seq-full"]["prompt_tokens_per_q"] < rows["k1-indexed-seq-full"]["prompt_tokens_per_q"]
    vs = {(d["condition"], d["vs"]) for d in report["paired"]}
    assert ("k3-indexed-seq-full-v3", "k3-indexed-seq-full") in vs
    assert ("k3-auto_demo-seq-full", "k1-indexed-seq-full") in vs and ("k3-auto_demo-seq-full", "k3-indexed-seq-full") in vs
    assert "| k3-indexed-seq-full-v3 | 12 | 100.0" in (tmp_path / "out" / "bench_batch_llm_dry.md").read_text()

    assert bbl.main(argv) == 0  # resumed: nothing asked twice
    assert records.read_text().splitlines() == lines
    # a run killed inside the last block of one condition: only that block is asked again
    kept = [ln for ln in lines if not (json.loads(ln)["cond"] == "k2-indexed-seq-full" and json.loads(ln)["block"] == 1
                                       and json.loads(ln)["id"] == "test-11")]
    records.write_text("\n".join(kept) + "\n")
    assert bbl.main(argv) == 0
    again = [json.loads(ln) for ln in records.read_text().splitlines()[len(kept):]]
    assert {(r["cond"], r["block"]) for r in again} == {("k2-indexed-seq-full", 1)} and len(again) == 6
