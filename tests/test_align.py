"""Distribution alignment on the tiny random-weight model: collect (resumable), tune (LoRA), save, load, refuse."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("peft")

import lingua_compress  # noqa: E402
from lingua_compress import Compressor, cli  # noqa: E402
from lingua_compress.align import (  # noqa: E402
    CollectConfig,
    Pair,
    PairLog,
    TuneConfig,
    collect_responses,
    kept_overlap,
    model_fingerprint,
    perplexity,
    read_manifest,
    read_pairs,
    read_prompts,
    tune_adapter,
)
from lingua_compress.align.loss import IGNORE, collate, encode_pair, response_nll  # noqa: E402
from lingua_compress.errors import ConfigError, ModelLoadError  # noqa: E402
from lingua_compress.llm import Completion, LLMRequestError, LlamaCppLLM  # noqa: E402
from lingua_compress.models import load_model  # noqa: E402
from tiny import save_tiny_model, tiny_model, tiny_tokenizer  # noqa: E402

RESPONSE = "The answer is 72."
PAIRS = [Pair(f"Question {i}: how many clips did Natalia sell?", RESPONSE) for i in range(6)]
TEXT = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. " * 3


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("m") / "tiny"))


@pytest.fixture(scope="module")
def tuned(tiny_dir, tmp_path_factory):
    config = TuneConfig(steps=25, lr=1e-2, batch_size=2, dropout=0.0, device="cpu")
    out = tmp_path_factory.mktemp("a") / "adapter"
    return tune_adapter(PAIRS, out, config=config, model=tiny_dir, target="fake:target", progress=False)


# --- tuning, saving, loading ------------------------------------------------------------------------------------

def test_loss_falls_on_a_repeated_response(tuned):
    first, last = sum(tuned.losses[:3]) / 3, sum(tuned.losses[-5:]) / 5
    assert len(tuned.losses) == 25 and last < 0.3 * first


def test_adapter_round_trips_to_the_same_logits(tuned, tiny_dir):
    import torch

    ids = torch.tensor([tiny_tokenizer()("Question 9: how many clips?\n" + RESPONSE)["input_ids"]])
    merged = Compressor(tiny_dir, device="cpu", dtype="float32", adapter=tuned.path).scorer.loaded
    base = load_model(tiny_dir, device="cpu", dtype="float32").model
    with torch.no_grad():
        want, got, plain = tuned.model(ids).logits, merged.model(ids).logits, base(ids).logits
    assert torch.allclose(want, got, atol=1e-4)
    assert not torch.allclose(plain, got, atol=1e-2)  # the adapter did change the model
    assert merged.adapter == str(tuned.path) and merged.name == tiny_dir


def test_adapter_is_refused_on_another_base_model(tuned, tmp_path):
    other = str(save_tiny_model(tmp_path / "other", seed=1))
    fingerprint = model_fingerprint(load_model(other, device="cpu", dtype="float32").model)
    with pytest.raises(ModelLoadError) as exc:
        Compressor(other, device="cpu", adapter=tuned.path).scorer
    message = str(exc.value)
    assert tuned.manifest["base_model"]["fingerprint"] in message and fingerprint in message


def test_manifest_names_base_target_steps_and_loss(tuned, tiny_dir):
    m = read_manifest(tuned.path)
    assert m == tuned.manifest
    assert m["base_model"]["name"] == tiny_dir
    assert m["base_model"]["fingerprint"] == model_fingerprint(tiny_model())
    assert m["target"] == "fake:target" and m["steps"] == 25 and m["stopped_by"] == "steps"
    assert m["final_loss"] < m["first_loss"] and m["library_version"] == lingua_compress.__version__
    assert datetime.fromisoformat(m["created"]).tzinfo is not None
    assert m["config"]["rank"] == 8 and m["pairs"] == len(PAIRS)
    files = sorted(p.name for p in tuned.path.iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors", "manifest.json"]
    assert (tuned.path / "adapter_model.safetensors").stat().st_size < 200_000  # the adapter alone


def test_fingerprint_is_the_same_for_fp32_and_bf16_loads(tiny_dir):
    fp32 = load_model(tiny_dir, device="cpu", dtype="float32").model
    bf16 = load_model(tiny_dir, device="cpu", dtype="bfloat16").model
    assert model_fingerprint(fp32) == model_fingerprint(bf16) != model_fingerprint(tiny_model(seed=1))


def test_max_minutes_stops_after_one_step_and_retune_replaces(tiny_dir, tuned, tmp_path):
    config = TuneConfig(steps=1000, max_minutes=1e-9, device="cpu")
    out = tmp_path / "a"
    first = tune_adapter(PAIRS[:2], out, config=config, model=tiny_dir, progress=False)
    assert first.manifest["steps"] == 1 and first.manifest["stopped_by"] == "max_minutes"
    again = tune_adapter(PAIRS[:2], out, config=TuneConfig(steps=2, device="cpu"), model=tiny_dir, progress=False)
    assert read_manifest(out)["steps"] == again.manifest["steps"] == 2


def test_output_that_is_not_an_adapter_is_not_overwritten(tiny_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an adapter directory"):
        tune_adapter(PAIRS, tmp_path, config=TuneConfig(steps=1), model=tiny_dir)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("kwargs, bad", [
    ({"steps": 0}, "steps=0"), ({"lr": 2.0}, "lr=2.0"), ({"dropout": 1.0}, "dropout=1.0"),
    ({"target_modules": "q_proj"}, "target_modules='q_proj'"), ({"device": "gpu"}, "device='gpu'"),
    ({"max_minutes": -1}, "max_minutes=-1"), ({"max_length": 4}, "max_length=4"), ({"batch_size": 1.5}, "1.5"),
])
def test_tune_config_names_the_bad_value(kwargs, bad):
    with pytest.raises(ConfigError, match=bad.replace("[", r"\[")):
        TuneConfig(**kwargs)


def test_compressor_checks_the_adapter_at_construction(tmp_path, scorer, tuned, monkeypatch):
    with pytest.raises(ConfigError, match="lacks manifest.json"):
        Compressor(adapter=tmp_path)
    with pytest.raises(ConfigError, match="adapter= or scorer="):
        Compressor(scorer=scorer, adapter=tmp_path)
    monkeypatch.setattr("lingua_compress.align.load.peft_available", lambda: False)
    with pytest.raises(ModelLoadError, match=r'pip install "lingua_compress\[align\]"'):
        Compressor(adapter=tuned.path)


# --- the loss -----------------------------------------------------------------------------------------------------

def test_chunked_response_nll_equals_full_cross_entropy():
    import torch

    lm, tok = tiny_model(), tiny_tokenizer()
    examples = [encode_pair(tok, p, 64) for p in (PAIRS[0], Pair("Short?", "Yes, 48 clips."))]
    batch = collate(examples, tok.pad_token_id, "cpu")
    total, n = response_nll(lm, batch, chunk_rows=3)
    logits = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    full = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                                             ignore_index=IGNORE, reduction="sum")
    assert n == sum(e.n_response for e in examples)
    assert torch.allclose(total, full, rtol=1e-5)
    total.backward()  # differentiable through the checkpointed chunks
    assert lm.model.layers[0].self_attn.q_proj.weight.grad is not None


def test_encode_pair_cuts_the_prompt_from_the_left():
    tok = tiny_tokenizer()
    ex = encode_pair(tok, Pair("word " * 100, RESPONSE), 24)
    response = tok(RESPONSE, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert len(ex.ids) == 24 and list(ex.ids[-len(response):]) == response and ex.n_response == len(response)
    assert ex.ids[0] == tok.bos_token_id
    batch = collate([ex], tok.pad_token_id, "cpu")
    assert (batch["labels"][0, : ex.n_prompt] == IGNORE).all()


def test_perplexity_falls_after_tuning_and_overlap_of_a_scorer_with_itself(tuned, tiny_dir, scorer):
    before = perplexity(load_model(tiny_dir, device="cpu", dtype="float32"), PAIRS)
    assert before["tokens"] == sum(encode_pair(tiny_tokenizer(), p, 512).n_response for p in PAIRS)
    after = perplexity(Compressor(tiny_dir, device="cpu", dtype="float32", adapter=tuned.path).scorer.loaded, PAIRS)
    assert after["mean_nll"] < 0.3 * before["mean_nll"]
    same = kept_overlap([TEXT], 0.5, Compressor(scorer=scorer), Compressor(scorer=scorer))
    assert same["mean"] == 1.0 and same["per_prompt"] == [1.0]


# --- collection ---------------------------------------------------------------------------------------------------

class FakeLLM:
    """The LLM interface without a network: answers "A:<prompt>", fails on the prompts in ``fail``."""

    def __init__(self, fail=(), chat=False, max_concurrency=1):
        self.name, self.chat, self.max_concurrency = "fake:llm", chat, max_concurrency
        self.fail, self.asked = set(fail), []
        self._lock = threading.Lock()

    def complete(self, prompt, *, max_tokens, stop=(), temperature=0.0):
        text = prompt[-1]["content"] if self.chat else prompt
        with self._lock:
            self.asked.append(text)
        if text in self.fail:
            raise LLMRequestError(f"refused {text}")
        return Completion(f"A:{text}", 3, 2, "stop", "fake")


def test_collect_resumes_after_failures_and_a_torn_last_line(tmp_path):
    prompts = ["p1", "p2", "p3", "p4", "p5", "p2"]
    out = tmp_path / "pairs.jsonl"
    first = collect_responses(prompts, FakeLLM(fail={"p3"}), out, progress=False)
    assert (first.prompts, first.answered, first.failed) == (5, 4, 1) and "refused p3" in first.first_error
    with open(out, "ab") as fh:
        fh.write(b'{"prompt": "p9", "resp')  # a kill in the middle of a write
    assert [p.prompt for p in read_pairs(out)] == ["p1", "p2", "p4", "p5"]
    llm = FakeLLM()
    second = collect_responses(prompts, llm, out, progress=False)
    assert llm.asked == ["p3"] and (second.already_answered, second.answered) == (4, 1)
    pairs = read_pairs(out)
    assert sorted(p.prompt for p in pairs) == ["p1", "p2", "p3", "p4", "p5"]
    assert all(p.response == f"A:{p.prompt}" for p in pairs)
    assert all(line.endswith("}") for line in out.read_text().splitlines())
    third = FakeLLM()
    collect_responses(prompts, third, out, progress=False)
    assert third.asked == []


def test_collect_concurrent_chat_and_giving_up(tmp_path):
    llm = FakeLLM(chat=True, max_concurrency=3)
    summary = collect_responses([f"q{i}" for i in range(10)], llm, tmp_path / "a.jsonl", progress=False)
    assert summary.answered == 10 and sorted(llm.asked) == sorted(f"q{i}" for i in range(10))
    record = json.loads((tmp_path / "a.jsonl").read_text().splitlines()[0])
    assert record["target"] == "fake:llm" and record["finish_reason"] == "stop"
    down = FakeLLM(fail={f"q{i}" for i in range(10)})
    with pytest.raises(LLMRequestError, match="rerun"):
        collect_responses([f"q{i}" for i in range(10)], down, tmp_path / "b.jsonl", progress=False,
                          config=CollectConfig(max_consecutive_failures=2))
    assert len(down.asked) == 2


def test_pair_log_ends_a_hand_written_last_line(tmp_path):
    out = tmp_path / "p.jsonl"
    out.write_text('{"prompt": "a", "response": "b"}')  # no newline: whole, kept
    with PairLog(out) as log:
        assert log.open() == {"a"}
        log.append({"prompt": "c", "response": "d"})
    assert [p.prompt for p in read_pairs(out)] == ["a", "c"]


def test_read_prompts_formats_and_bad_lines(tmp_path):
    (tmp_path / "p.txt").write_text("first prompt\n\n{not json, a text prompt}\n")
    assert read_prompts(tmp_path / "p.txt") == ["first prompt", "{not json, a text prompt}"]
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n{"text": "b"}\n')
    with pytest.raises(ConfigError, match=r"p\.jsonl:2: field 'prompt'"):
        read_prompts(tmp_path / "p.jsonl")
    (tmp_path / "q").write_text('{"prompt": "a"}\n{"prompt": "b"\n')
    with pytest.raises(ConfigError, match=r"q:2: not valid JSON"):
        read_prompts(tmp_path / "q")
    (tmp_path / "e.txt").write_text("\n\n")
    with pytest.raises(ConfigError, match="no prompts"):
        read_prompts(tmp_path / "e.txt")
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "response": "b"}\nnot json\n{"prompt": "c", "response": "d"}\n')
    with pytest.raises(ConfigError, match=r"d\.jsonl:2"):
        read_pairs(tmp_path / "d.jsonl")


def test_llama_cpp_client_with_a_fake_backend(tmp_path, monkeypatch):
    class Llama:
        def __init__(self, path, **kwargs):
            self.kwargs = kwargs

        def create_chat_completion(self, messages, **kw):
            if "x" * 10 in messages[0]["content"]:
                raise ValueError("Requested tokens exceed context window")
            return {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 4, "completion_tokens": 1}}

        def create_completion(self, prompt, **kw):
            assert kw["top_k"] == 1 and kw["temperature"] == 0
            return {"choices": [{"text": prompt.upper(), "finish_reason": "length"}]}

    monkeypatch.setitem(sys.modules, "llama_cpp", type(sys)("llama_cpp"))
    sys.modules["llama_cpp"].Llama = Llama
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    chat = LlamaCppLLM(gguf)
    c = chat.complete([{"role": "user", "content": "hello"}], max_tokens=5)
    assert (c.text, c.prompt_tokens, c.finish_reason, chat.name) == ("hi", 4, "stop", "llama.cpp:m.gguf")
    with pytest.raises(LLMRequestError, match="context window"):
        chat.complete([{"role": "user", "content": "x" * 20}], max_tokens=5)
    assert LlamaCppLLM(gguf, chat=False).complete("abc", max_tokens=5).text == "ABC"
    with pytest.raises(ConfigError, match="does not exist"):
        LlamaCppLLM(tmp_path / "missing.gguf")


# --- command line -------------------------------------------------------------------------------------------------

def run_cli(argv, monkeypatch):
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture()
def server():
    """A local OpenAI-compatible chat endpoint that answers every prompt the same way (no network)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reply = {"choices": [{"message": {"content": RESPONSE}, "finish_reason": "stop"}], "model": body["model"],
                     "usage": {"prompt_tokens": 5, "completion_tokens": 5}}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_cli_collects_tunes_and_resumes(server, tiny_dir, tmp_path, monkeypatch):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(p.prompt for p in PAIRS) + "\n")
    argv = ["align", "--prompts", str(prompts), "--base-url", server, "--model", "qwen", "-o",
            str(tmp_path / "ad"), "--scorer", tiny_dir, "--steps", "3", "--device", "cpu", "-q"]
    code, out, err = run_cli(argv, monkeypatch)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["collect"]["answered"] == len(PAIRS) and summary["manifest"]["target"] == "openai:qwen"
    assert summary["pairs_file"] == str(tmp_path / "ad.pairs.jsonl") and summary["manifest"]["steps"] == 3
    code, out, _ = run_cli(argv, monkeypatch)
    assert code == 0 and json.loads(out)["collect"]["already_answered"] == len(PAIRS)
    code, out, _ = run_cli(["align", "-o", str(tmp_path / "ad"), "--scorer", tiny_dir, "--steps", "1", "-q"],
                           monkeypatch)  # no target: tune on the pairs already collected
    assert code == 0 and json.loads(out)["manifest"]["target"] == "openai:qwen"
    code, _, err = run_cli(argv[:6] + ["other"] + argv[7:], monkeypatch)
    assert code == 2 and "holds responses of openai:qwen" in err


@pytest.mark.parametrize("argv, message", [
    (["--prompts", "p.txt", "--base-url", "http://127.0.0.1:9/v1"], "--base-url and --model go together"),
    (["--prompts", "p.txt", "--model", "m", "--base-url", "http://x/v1", "--target-gguf", "m.gguf"], "one target"),
    ([], "no target given and no pairs file"),
    (["--prompts", "p.txt"], "--prompts needs a target"),
    (["--base-url", "http://127.0.0.1:9/v1", "--model", "m"], "a target needs --prompts"),
    (["--prompts", "p.txt", "--target-gguf", "missing.gguf"], "does not exist"),
    (["--prompts", "p.txt", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--steps", "0"], "steps=0"),
])
def test_cli_usage_errors_exit_2(argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.txt").write_text("a prompt\n")
    code, _, err = run_cli(["align", "-o", "ad"] + argv, monkeypatch)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_cli_bad_prompts_file_names_the_line(tmp_path, monkeypatch):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": 3}\n')
    code, _, err = run_cli(["align", "--prompts", str(bad), "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                            "-o", str(tmp_path / "ad")], monkeypatch)
    assert code == 2 and "p.jsonl:2" in err and not (tmp_path / "ad.pairs.jsonl").exists()


def test_cli_missing_extra_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr("lingua_compress.align.cli.peft_available", lambda: False)
    code, _, err = run_cli(["align", "-o", str(tmp_path / "ad")], monkeypatch)
    assert code == 2 and 'pip install "lingua_compress[align]"' in err


def test_bench_align_dry_runs_on_the_tiny_model(tiny_dir, tmp_path, monkeypatch, capsys):
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_align.py"
    spec = importlib.util.spec_from_file_location("bench_align", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--dry", "--model", tiny_dir, "--device", "cpu", "--out", str(tmp_path / "b.json")]) == 0
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["mode"] == "dry" and result["manifest"]["steps"] == 2
    assert result["perplexity"]["before"]["tokens"] == result["perplexity"]["after"]["tokens"] > 0
    assert 0.0 <= result["overlap"]["mean"] <= 1.0 and result["pairs"]["heldout"] == 2
    # An adapter tuned elsewhere is measured on every pair given (--holdout 1), none spent on training.
    kept = tmp_path / "kept"
    assert bench.main(["--dry", "--model", tiny_dir, "--device", "cpu", "--keep-adapter", str(kept),
                       "--out", str(tmp_path / "c.json")]) == 0
    assert bench.main(["--dry", "--model", tiny_dir, "--device", "cpu", "--adapter", str(kept), "--holdout", "1",
                       "--out", str(tmp_path / "d.json")]) == 0
    again = json.loads((tmp_path / "d.json").read_text())
    assert again["pairs"] == {"train": 0, "heldout": 10} and again["seconds"]["tune"] == 0.0
