import io
import json
import sys

import pytest

from lingua_compress import cli
from tiny import save_tiny_model

TEXT = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.\n" * 5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("m") / "tiny"))


def run(argv, stdin="", monkeypatch=None):
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def test_stdin_to_stdout_with_summary_on_stderr(model_dir, monkeypatch):
    code, out, err = run(["--ratio", "0.3", "--model", model_dir], TEXT, monkeypatch)
    assert code == 0 and out.strip() and len(out) < len(TEXT)
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["original_tokens"] > summary["compressed_tokens"] > 0


def test_json_output_and_files(model_dir, monkeypatch, tmp_path):
    src, dst = tmp_path / "in.txt", tmp_path / "out.json"
    src.write_text(TEXT)
    code, _, _ = run([str(src), "--target-tokens", "20", "--json", "-o", str(dst), "--model", model_dir], "",
                     monkeypatch)
    data = json.loads(dst.read_text())
    assert code == 0 and abs(data["compressed_tokens"] - 20) <= 3 and isinstance(data["kept_ratio"], float)


def test_show_marks_dropped_text(model_dir, monkeypatch):
    code, out, _ = run(["--ratio", "0.3", "--show", "--keep", "Natalia", "--model", model_dir], TEXT, monkeypatch)
    assert code == 0 and "[-" in out and "Natalia" in out


def test_usage_errors_exit_2(model_dir, monkeypatch):
    code, _, err = run(["--ratio", "3", "--model", model_dir], TEXT, monkeypatch)
    assert code == 2 and "ratio=3.0" in err
    with pytest.raises(SystemExit) as exc:
        run(["--ratio", "0.2", "--target-tokens", "5"], TEXT, monkeypatch)
    assert exc.value.code == 2


def test_missing_model_exit_1(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(["--ratio", "0.5", "--model", str(tmp_path / "nope")], TEXT, monkeypatch)
    assert code == 1 and "ModelLoadError" in err


def test_python_dash_m_entry_point():
    import subprocess

    out = subprocess.run([sys.executable, "-m", "lingua_compress", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--ratio" in out.stdout and "batch" in out.stdout


@pytest.mark.parametrize("dtype", ["auto", "float32"])
def test_json_and_summary_say_which_compute_path_ran(model_dir, monkeypatch, tmp_path, dtype):
    from lingua_compress.models import cpu_bf16_feature, resolve_dtype

    dst = tmp_path / "out.json"
    code, _, err = run(["--ratio", "0.3", "--json", "-o", str(dst), "--dtype", dtype, "--model", model_dir], TEXT,
                       monkeypatch)
    backend = json.loads(dst.read_text())["backend"]
    want = str(resolve_dtype(dtype, "cpu")).replace("torch.", "")
    assert code == 0 and backend["dtype"] == want and backend["requested"] == dtype
    assert backend["device"] == "cpu" and backend["cpu_bf16"] == cpu_bf16_feature()
    assert json.loads(err.strip().splitlines()[-1])["backend"] == backend


def test_bad_dtype_is_a_usage_error(monkeypatch):
    with pytest.raises(SystemExit) as exc:
        run(["--dtype", "int4"], TEXT, monkeypatch)
    assert exc.value.code == 2
