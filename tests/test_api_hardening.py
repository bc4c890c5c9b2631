"""Issue 9, API and CLI errors: bad arguments fail early with typed errors that name the value and what is
accepted; numpy scalars are numbers; the CLI turns undecodable input and Ctrl-C into one line and an exit code."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lingua_compress import (
    CompressionConfig,
    Compressor,
    ConfigError,
    InvalidPromptError,
    LinguaCompressError,
    ModelLoadError,
    Prompt,
)
from lingua_compress import cli
from fakes import FakeScorer
from tiny import save_tiny_model

TEXT = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.\n" * 4
SECRET = "the-secret-prompt-words"
FAST = settings(max_examples=30, deadline=None)


@pytest.fixture(scope="module")
def fake():
    return Compressor(scorer=FakeScorer())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("m") / "tiny"))


def plain(value):
    """Every number in a JSON-ready structure is a plain Python int/float (no numpy scalar leaks through)."""
    if isinstance(value, dict):
        return all(plain(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(plain(v) for v in value)
    return value is None or type(value) in (int, float, str, bool)


# --- compress_prompt(context=...) -------------------------------------------------------------------------------

NOT_CONTEXT = st.one_of(
    st.none(), st.integers(), st.floats(allow_nan=False), st.binary(min_size=1), st.just(object()),
    st.lists(st.one_of(st.none(), st.integers(), st.binary()), min_size=1),
    st.dictionaries(st.text(min_size=1), st.text(), min_size=1),
)


def test_compress_prompt_rejects_none_context_naming_what_is_accepted(fake):
    with pytest.raises(InvalidPromptError, match=r"context=None.*str or a sequence of str"):
        fake.compress_prompt(context=None)


@FAST
@given(NOT_CONTEXT)
def test_compress_prompt_rejects_every_non_text_context(fake, context):
    with pytest.raises(InvalidPromptError, match="context"):
        fake.compress_prompt(context=context)


def test_compress_prompt_names_the_bad_element_and_bad_numbers(fake):
    with pytest.raises(InvalidPromptError, match=r"context\[1\].*int"):
        fake.compress_prompt(["fine text", 7])
    with pytest.raises(InvalidPromptError, match="instruction"):
        fake.compress_prompt(["fine text"], instruction=None)
    with pytest.raises(ConfigError, match="target_token='50'"):
        fake.compress_prompt(["fine text"], target_token="50")
    with pytest.raises(ConfigError, match="rate=nan"):
        fake.compress_prompt(["fine text"], rate=float("nan"))


def test_compress_prompt_accepts_numpy_numbers_and_tuples(fake):
    out = fake.compress_prompt(("one two three four five six seven eight nine ten",), target_token=np.int64(4))
    assert plain(out) and out["compressed_tokens"] <= 6
    out = fake.compress_prompt(["one two three four five six seven eight nine ten"], rate=np.float32(0.5))
    assert plain(out) and 0 < out["rate"] <= 0.7


# --- compress_batch(prompts) ------------------------------------------------------------------------------------

@pytest.mark.parametrize("prompts", ["abc def", b"abc def", Prompt(question="q?"), {"a": "b"}, {"abc", "def"}, 3, None])
def test_compress_batch_rejects_a_single_prompt_or_unordered_collection(fake, prompts):
    with pytest.raises(InvalidPromptError, match="prompts="):
        fake.compress_batch(prompts, 0.5)


def test_compress_batch_checks_every_prompt_before_compressing_any(fake, monkeypatch):
    calls = []
    monkeypatch.setattr(fake, "compress", lambda *a, **k: calls.append(a))
    with pytest.raises(InvalidPromptError, match=r"prompts\[2\].*NoneType"):
        fake.compress_batch(["one", "two", None], 0.5)
    assert calls == []


def test_compress_batch_takes_lists_tuples_and_generators(fake):
    texts = ["alpha beta gamma delta", "epsilon zeta eta theta"]
    for prompts in (texts, tuple(texts), (t for t in texts)):
        assert [r.original for r in fake.compress_batch(prompts, 0.5)] == texts


# --- numbers: numpy scalars accepted, bool / NaN / inf rejected -------------------------------------------------

@FAST
@given(st.floats(0.01, 1.0), st.sampled_from([float, np.float16, np.float32, np.float64]))
def test_numpy_ratio_is_accepted_and_results_hold_plain_numbers(fake, ratio, kind):
    value = kind(ratio)
    if not 0 < float(value) <= 1:
        return
    res = fake.compress(TEXT, value)
    assert plain(res.to_dict()) and type(res.kept_ratio) is float
    json.dumps(res.to_dict())


@FAST
@given(st.integers(0, 200), st.sampled_from([int, np.int8, np.int32, np.int64, np.uint16]))
def test_numpy_target_tokens_is_accepted(fake, target, kind):
    res = fake.compress(TEXT, target_tokens=kind(min(target, 127)))
    assert plain(res.to_dict()) and type(res.target_tokens) is int


BAD_NUMBERS = [True, False, np.bool_(True), float("nan"), float("inf"), -float("inf"), np.float32("nan"),
               np.float64("inf"), "0.5", None, 1 + 0j]


@pytest.mark.parametrize("bad", BAD_NUMBERS + [0.0, 1.5, -0.1])
def test_bad_ratio_is_a_config_error_naming_it(fake, bad):
    with pytest.raises(ConfigError, match="ratio="):
        fake.compress(TEXT, bad)


@pytest.mark.parametrize("bad", BAD_NUMBERS + [2.0, np.float64(3.0), -1, np.int64(-5)])
def test_bad_target_tokens_is_a_config_error_naming_it(fake, bad):
    if bad is None:
        return  # None means "not given"
    with pytest.raises(ConfigError, match="target_tokens="):
        fake.compress(TEXT, target_tokens=bad)


CONFIG_REALS = {"instruction_ratio": (0.01, 1.0), "question_ratio": (0.01, 1.0), "context_budget_factor": (1.0, 9.0),
                "sentence_budget_factor": (1.0, 9.0),
                "tolerance": (0.0, 0.49)}
CONFIG_INTS = {"window_tokens": (16, 8192), "tolerance_tokens": (0, 50)}


@FAST
@given(st.sampled_from(sorted(CONFIG_REALS)), st.floats(0, 1), st.sampled_from([np.float32, np.float64, float]))
def test_config_real_fields_take_numpy_and_store_plain_floats(name, frac, kind):
    lo, hi = CONFIG_REALS[name]
    value = kind(lo + frac * (hi - lo))
    if not lo <= float(value) <= hi or (name.endswith("ratio") and float(value) <= 0) or float(value) >= 0.5 > hi:
        return
    cfg = CompressionConfig(**{name: value})
    assert type(getattr(cfg, name)) is float and getattr(cfg, name) == float(value)


@FAST
@given(st.sampled_from(sorted(CONFIG_INTS)), st.integers(0, 8192), st.sampled_from([np.int16, np.int64, int]))
def test_config_int_fields_take_numpy_and_store_plain_ints(name, raw, kind):
    lo, hi = CONFIG_INTS[name]
    value = kind(lo + raw % (hi - lo + 1))
    cfg = CompressionConfig(**{name: value})
    assert type(getattr(cfg, name)) is int and getattr(cfg, name) == int(value)


@pytest.mark.parametrize("name", sorted(CONFIG_REALS) + sorted(CONFIG_INTS))
@pytest.mark.parametrize("bad", [True, np.bool_(False), float("nan"), float("inf"), "1", None])
def test_config_rejects_bool_nan_inf_and_text(name, bad):
    with pytest.raises(ConfigError, match=f"{name}="):
        CompressionConfig(**{name: bad})


def test_config_flags_must_be_booleans():
    assert CompressionConfig(coarse=np.bool_(False)).coarse is False
    with pytest.raises(ConfigError, match="iterative='no'"):
        CompressionConfig(iterative="no")


# --- text that cannot be encoded ---------------------------------------------------------------------------------

def test_lone_surrogate_in_a_prompt_is_an_invalid_prompt_error(fake):
    with pytest.raises(InvalidPromptError, match=r"surrogate.*character 6"):
        fake.compress("hello \udcff world", 0.5)
    with pytest.raises(InvalidPromptError, match=r"question"):
        fake.compress(Prompt(question="what \ud800?"), 0.5)


# --- target_tokenizer ---------------------------------------------------------------------------------------------

def test_unknown_tokenizer_name_is_a_load_error_naming_it_not_the_prompt(fake):
    with pytest.raises(ModelLoadError, match="'gpt2-does-not-exist'") as exc:
        fake.compress(f"{SECRET} " * 5, 0.5, target_tokenizer="gpt2-does-not-exist")
    assert SECRET not in str(exc.value)


def test_tokenizer_given_by_local_path_is_loaded(fake, model_dir):
    from tiny import tiny_tokenizer

    res = fake.compress(TEXT, 0.5, target_tokenizer=model_dir)
    assert res.original_tokens == len(tiny_tokenizer()(TEXT, add_special_tokens=False)["input_ids"])
    assert res.tokenizer.endswith("tiny")


class Encoder:
    def __init__(self, returns):
        self.returns = returns

    def encode(self, text):
        return self.returns(text)


def test_encode_returning_a_generator_or_array_is_counted(fake):
    words = len(TEXT.split())
    for enc in (Encoder(lambda t: (i for i, _ in enumerate(t.split()))),
                Encoder(lambda t: np.arange(len(t.split())))):
        assert fake.compress(TEXT, 1.0, target_tokenizer=enc).original_tokens == words


@pytest.mark.parametrize("returns, named", [(lambda t: None, "None"), (lambda t: len(t), "int"),
                                            (lambda t: t.split(), "str"), (lambda t: t, "str")])
def test_encode_returning_no_token_ids_is_a_config_error(fake, returns, named):
    with pytest.raises(ConfigError, match=f"target_tokenizer.*{named}"):
        fake.compress(TEXT, 0.5, target_tokenizer=Encoder(returns))


@pytest.mark.parametrize("returns, named", [(lambda t: None, "None"), (lambda t: 3, "int")])
def test_callable_returning_no_tokens_is_a_config_error(fake, returns, named):
    with pytest.raises(ConfigError, match=f"target_tokenizer.*{named}"):
        fake.compress(TEXT, 0.5, target_tokenizer=returns)


def test_callable_returning_a_generator_is_counted(fake):
    res = fake.compress(TEXT, 1.0, target_tokenizer=lambda t: iter(t.split()))
    assert res.original_tokens == len(TEXT.split())


# --- Compressor construction ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"dtype": "float64"}, "dtype='float64'"), ({"dtype": None}, "dtype=None"),
    ({"device": "cuda:x"}, "device='cuda:x'"), ({"device": "gpu"}, "device='gpu'"),
    ({"model": 3}, "model=3"), ({"model": ""}, "model=''"),
])
def test_constructor_validates_every_spec_before_loading(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Compressor(**kwargs)


def test_constructor_accepts_a_path_object(model_dir):
    from pathlib import Path

    c = Compressor(Path(model_dir), device="cpu", dtype="float32")
    assert c.compress(TEXT, 0.5).original_tokens > 0


def test_models_are_looked_up_locally_first(monkeypatch, model_dir):
    from transformers import AutoModelForCausalLM

    from lingua_compress import models

    seen = []
    real = AutoModelForCausalLM.from_pretrained

    def spy(path, *a, **k):
        seen.append(k.get("local_files_only"))
        return real(path, *a, **k)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    models.load_model(model_dir, device="cpu")
    assert seen == [True]


def test_hub_is_asked_only_after_local_files_and_only_when_reachable(monkeypatch):
    from lingua_compress import models

    calls = []

    def load(local_files_only):
        calls.append(local_files_only)
        if local_files_only:
            raise OSError("not in the cache")
        return "fetched"

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(models, "_online", lambda: True)
    assert models.load_local_first(load, "org/name", "model") == "fetched" and calls == [True, False]
    calls.clear()
    monkeypatch.setattr(models, "_online", lambda: False)
    with pytest.raises(ModelLoadError, match="'org/name'.*offline"):
        models.load_local_first(load, "org/name", "model")
    assert calls == [True]


def test_missing_hub_model_fails_fast_when_the_hub_is_unreachable():
    # A fresh interpreter without HF_HUB_OFFLINE: huggingface_hub reads it once, at import.
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    code = ("import time, torch, transformers; from lingua_compress import models\n"
            "models._online = lambda: False\n"
            "t = time.perf_counter()\n"
            "try:\n    models.load_model('does/not-exist', device='cpu')\n"
            "except models.ModelLoadError as e:\n    print(round(time.perf_counter() - t, 1), 'offline' in str(e))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    seconds, says_offline = out.stdout.split()
    assert float(seconds) < 10 and says_offline == "True", out.stderr[-2000:]  # it took ~49 s


# --- CLI ------------------------------------------------------------------------------------------------------------

def run_cli(argv, monkeypatch, stdin=b""):
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def test_cli_invalid_utf8_file_names_file_and_byte_offset(monkeypatch, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff world\n")
    code, out, err = run_cli([str(bad), "--model", str(tmp_path / "nope")], monkeypatch)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert str(bad) in err and "byte offset 6" in err and "0xff" in err and "--errors replace" in err


def test_cli_invalid_utf8_stdin(monkeypatch, tmp_path):
    code, _, err = run_cli(["--model", str(tmp_path / "nope")], monkeypatch, stdin=b"ok \xc3\x28 text")
    assert code == 2 and "<stdin>" in err and "byte offset 3" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("mode, kept", [("replace", "\ufffd"), ("ignore", "helloworld")])
def test_cli_errors_option_decodes_leniently(monkeypatch, model_dir, mode, kept):
    text = b"hello\xffworld " + TEXT.encode()
    code, out, err = run_cli(["--ratio", "1.0", "--errors", mode, "--model", model_dir], monkeypatch, stdin=text)
    assert code == 0, err
    assert kept in out


def test_cli_random_bytes_subprocess_fails_before_loading_the_model(tmp_path):
    data = bytes(range(256)) * 4
    out = subprocess.run([sys.executable, "-m", "lingua_compress", "--model", str(tmp_path / "nope")], input=data,
                         capture_output=True, timeout=120)
    err = out.stderr.decode()
    assert out.returncode == 2 and "Traceback" not in err and "byte offset 128" in err, err
    assert len(err.strip().splitlines()) == 1


def test_cli_target_tokenizer_name_offline_is_one_line_exit_1(monkeypatch, model_dir):
    code, _, err = run_cli(["--ratio", "0.5", "--model", model_dir, "--target-tokenizer", "no/such-tok"],
                           monkeypatch, stdin=TEXT.encode())
    assert code == 1 and "'no/such-tok'" in err and len(err.strip().splitlines()) == 1
    assert "Natalia" not in err


def test_cli_ctrl_c_exits_130_with_one_line(monkeypatch, model_dir):
    from lingua_compress import api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api.Compressor, "compress", interrupted)
    code, out, err = run_cli(["--ratio", "0.5", "--model", model_dir], monkeypatch, stdin=TEXT.encode())
    assert code == 130 and out == ""
    assert err.strip().splitlines() == ["lingua-compress: interrupted"]

