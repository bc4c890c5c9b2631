"""benchmarks/bench_gpu.py: the kit (config, tokenizer, prompt) and a dry run of its shrunk random model on the CPU,
through the library's own loading path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_gpu  # noqa: E402


def _gsm8k(folder: Path) -> Path:
    """A stand-in for shared/data/gsm8k: eight long worked solutions and three test questions."""
    folder.mkdir()
    answer = "\n".join(f"Step {i}: 2 + {i} = <<2+{i}={2 + i}>>{2 + i}" for i in range(9)) + "\n#### 10"
    rows = [{"question": f"Question number {k}: what is 2 + 8?", "answer": answer} for k in range(8)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "test.jsonl").write_text("".join(json.dumps({"question": f"Test {k}?", "answer": "#### 1"}) + "\n"
                                               for k in range(3)))
    return folder


@pytest.mark.model
@pytest.mark.filterwarnings("ignore::lingua_compress.BudgetWarning")  # the stand-in prompt is mostly numbers
def test_kit_and_dry_run_time_both_attention_kernels(tmp_path):
    kit = tmp_path / "kit"
    assert bench_gpu.main(["--make-kit", "--kit", str(kit), "--data", str(_gsm8k(tmp_path / "gsm8k"))]) == 0
    assert {p.name for p in kit.iterdir()} == set(bench_gpu.KIT_FILES) | {"prompt.json"}
    assert len(bench_gpu.prompts(kit, 3)) == 3 and len({str(p.demonstrations) for p in bench_gpu.prompts(kit, 3)}) == 3
    assert bench_gpu.main(["--dry", "--kit", str(kit), "--device", "cpu", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "bench_gpu_dry.json").read_text())
    assert [r["attention"] for r in report["rows"]] == ["eager", "sdpa"] and report["dry"]
    for row in report["rows"]:
        assert [r["ratio"] for r in row["runs"]] == list(bench_gpu.RATIOS)
        assert all(r["wall_s_best"] > 0 for r in row["runs"]) and row["one_pass_s"] > 0
        assert row["batch"]["prompts"] == 3 and row["batch"]["tokens"] == 3 * row["prompt_tokens"]
        assert row["batched"]["batch_size"] == 2 and row["batched"]["tokens"] == row["batch"]["tokens"]
        assert 0 <= row["batched"]["same_text"] <= 3 and 0 < row["batched"]["kept_jaccard_mean"] <= 1
        assert row["profile_0.2"]["cpu_ops"] > 0 and row["backend"]["attention"] == row["attention"]


def test_no_kit_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench_gpu.main(["--kit", str(tmp_path / "none")])
    assert "--make-kit" in capsys.readouterr().err
