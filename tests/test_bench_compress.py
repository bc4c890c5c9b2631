"""The speed benchmark: its one-pass reference on the tiny model, and a dry end-to-end run on the embedded model that
reports ours / one pass, the CPU flags, torch's threads and the scorer's backend."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_compress  # noqa: E402


def test_one_pass_times_the_body_and_then_the_head(scorer):
    body_s, total_s = bench_compress.one_pass(scorer, "Natalia sold clips to 48 of her friends in April.")
    assert 0 < body_s <= total_s
    assert bench_compress.chunked_pass(scorer, "Natalia sold clips to 48 of her friends in April.") > 0


def test_linear_floor_counts_every_linear_layer_of_the_body(scorer):
    import torch

    floor = bench_compress.linear_floor(scorer, n_tokens=64, rows=16, repeats=1)
    params = sum(m.in_features * m.out_features for m in scorer._body.modules() if isinstance(m, torch.nn.Linear))
    assert floor["linear_gflop"] == round(2 * params * 64 / 1e9, 1)
    assert floor["linear_floor_s"] > 0 and floor["linear_rows"] == 16


@pytest.mark.model
@pytest.mark.skipif(not (bench_compress.DEFAULT_DATA / "train.jsonl").exists(), reason="needs shared/data/gsm8k")
def test_dry_run_reports_the_ratio_to_one_pass(tmp_path):
    assert bench_compress.main(["--dry", "--dtype", "float32", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench_compress_dry.json").read_text())
    assert report["dry"] and report["repeats"] == 1 and report["one_pass_s"] >= report["one_pass_body_s"] > 0
    assert report["backend"]["dtype"] == "float32" and report["backend"]["requested"] == "float32"
    assert report["torch_threads"] >= 1 and set(report["flags"]) <= {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    for row in report["runs"]:
        assert row["ours_over_one_pass"] == pytest.approx(row["wall_s_best"] / report["one_pass_s"], rel=0.02)
        assert row["ours_over_chunked_pass"] == pytest.approx(row["wall_s_best"] / report["chunked_pass_s"], rel=0.02)
        assert row["ours_over_linear_floor"] == pytest.approx(row["wall_s_best"] / report["linear_floor_s"], rel=0.05)
    assert report["linear_gflops_per_s"] > 0
