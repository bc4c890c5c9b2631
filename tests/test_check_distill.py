"""benchmarks/check_distill.py on the tiny model: the student's formula, the cut, the fit, and the student as a
library scorer."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import check_distill as D  # noqa: E402
from tiny import CORPUS, tiny_model, tiny_tokenizer  # noqa: E402

torch = pytest.importorskip("torch")


class ExactLse(torch.nn.Module):
    """The log-partition the student's MLP learns to predict, computed exactly over the whole head."""

    def __init__(self, lm) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, h):
        logits = h @ self.lm.get_output_embeddings().weight.T
        cap = self.lm.config.final_logit_softcapping
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return torch.logsumexp(logits, -1, keepdim=True)


def _rows(scorer, width: int = 24) -> np.ndarray:
    return D.chunks(scorer, CORPUS * 3, budget=10_000, width=width)


def test_with_an_exact_log_partition_the_student_formula_is_the_models_own_nll(scorer):
    lm = tiny_model()
    student = D.Student(lm, 3)
    student.lse = ExactLse(student.lm)
    ids = torch.as_tensor(_rows(scorer)[:2])
    with torch.no_grad():
        ref = torch.nn.functional.cross_entropy(lm(input_ids=ids).logits[:, :-1].transpose(1, 2), ids[:, 1:],
                                                reduction="none")
        assert torch.allclose(student(ids), ref, atol=1e-4)


def test_the_cut_keeps_the_first_layers_and_leaves_the_model_given_whole():
    lm = tiny_model()
    student = D.Student(lm, 2)
    assert len(student.lm.get_decoder().layers) == 2 and student.lm.config.num_hidden_layers == 2
    assert student.lm.config.layer_types == ["sliding_attention", "sliding_attention"]
    assert len(lm.get_decoder().layers) == 3 and lm.config.num_hidden_layers == 3
    assert not student.lm.get_input_embeddings().weight.requires_grad
    with pytest.raises(ValueError, match="--layers 4"):
        D.cut(tiny_model(), 4)


def test_rows_start_with_bos_and_follow_the_text_stream(scorer):
    rows = _rows(scorer, width=16)
    assert rows.shape[1] == 16 and (rows[:, 0] == scorer._bos).all()
    first = scorer.tokenize(CORPUS[0])[0][:15]
    assert rows[0, 1:].tolist() == first.tolist()


def test_training_brings_a_shallow_student_toward_the_whole_models_nll(scorer):
    torch.manual_seed(0)
    rows = _rows(scorer)
    targets = D.teacher_targets(scorer, rows)
    student = D.Student(scorer.loaded.model, 1)
    before = D.validate(student, rows, targets)
    log = D.train(student, rows, targets, minutes=1.0, steps=120, batch=4, lr=3e-3, head_lr=1e-2)
    after = D.validate(student, rows, targets)
    assert log["steps"] == 120 and log["last_loss"] < log["first_loss"]
    assert after["mse"] < 0.5 * before["mse"]


def test_teacher_targets_resume_from_their_file(scorer, tmp_path):
    rows = _rows(scorer)
    path = tmp_path / "t.npy"
    full = D.teacher_targets(scorer, rows, path)
    np.save(path, full[:2] + 1.0)  # a partial file: kept as it is, the rest computed
    again = D.teacher_targets(scorer, rows, path)
    assert np.allclose(again[:2], full[:2] + 1.0) and np.allclose(again[2:], full[2:], atol=1e-5)
    assert np.allclose(full[0], scorer.token_nll(rows[0, 1:]), atol=1e-5)


def test_the_student_runs_the_library_pipeline_as_a_scorer(scorer):
    from lingua_compress import Compressor

    student = D.Student(scorer.loaded.model, 2)
    fast = Compressor(scorer=D.student_scorer(student, tiny_tokenizer(), "float32", pack=False))
    text = " ".join(CORPUS)
    res = fast.compress(text, 0.5)
    assert 0 < res.compressed_tokens < res.original_tokens
    kept = iter(text)
    assert all(c in kept for c in res.text.replace(" ", ""))  # an in-order subsequence of the input
    ids = fast.scorer.tokenize(text)[0]
    with torch.no_grad():
        ref = student(torch.as_tensor(np.concatenate([[scorer._bos], ids]))[None])[0].numpy()
    assert np.allclose(fast.scorer.token_nll(ids), ref, atol=1e-4)


def test_unigram_pearson_is_one_where_the_nll_depends_on_the_id_alone():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, size=(20, 10))
    value = rng.normal(size=50)
    out = D.unigram_pearson(ids, value[ids], {"e": (ids[0], value[ids[0]])})
    assert out["e"] == pytest.approx(1.0)


def test_a_lora_student_trains_only_its_updates_norms_and_head_and_merges_back_to_plain_layers(scorer):
    pytest.importorskip("peft")
    rows = _rows(scorer)
    targets = D.teacher_targets(scorer, rows)
    student = D.Student(scorer.loaded.model, 2)
    whole = student.shipped()
    student.use_lora(4)
    names = {n for n, p in student.named_parameters() if p.requires_grad}
    assert names and all("lora_" in n or "norm" in n or n.startswith("lse.") for n in names)
    assert student.shipped() < whole
    D.train(student, rows, targets, minutes=1.0, steps=5, batch=2)
    with torch.no_grad():
        before = student(torch.as_tensor(rows[:2]))
    student.merge()
    assert type(student.lm).__name__ == "Gemma3ForCausalLM"
    assert not any("lora_" in n for n, _ in student.named_parameters())
    with torch.no_grad():
        assert torch.allclose(student(torch.as_tensor(rows[:2])), before, atol=1e-4)


def test_a_saved_student_loads_back_as_the_same_scorer(scorer, tmp_path):
    from tiny import save_tiny_model

    from lingua_compress.models import load_model

    base = save_tiny_model(tmp_path / "base")
    student = D.Student(load_model(str(base), dtype="float32").model, 2)
    with torch.no_grad():
        student.lse[-1].bias += 3.0  # anything a fresh head would not have
    weights = tmp_path / "student.pt"
    torch.save({k: v for k, v in student.state_dict().items() if "embed_tokens" not in k}, weights)
    loaded = D.load_student(weights, pack=False, model=str(base))
    ids = loaded.tokenize(CORPUS[0])[0]
    with torch.no_grad():
        ref = student(torch.as_tensor(np.concatenate([[loaded._bos], ids]))[None])[0].numpy()
    assert len(loaded.loaded.model.get_decoder().layers) == 2
    assert np.allclose(loaded.token_nll(ids), ref, atol=1e-4)


def test_a_student_variant_of_ours_is_measured_anew_when_its_weights_change(tmp_path):
    import quality_methods as Q

    weights = tmp_path / "w.pt"
    weights.write_bytes(b"one")
    name = f"ours[student={weights}]"
    assert Q.known(name) and Q.ours_settings(name) == {"student": str(weights)}
    first = Q.fingerprint(name)
    weights.write_bytes(b"two")
    assert Q.fingerprint(name) != first


def test_a_student_cut_in_place_keeps_its_bf16_table_and_is_timed(tmp_path):
    """--speed-only: the student is cut from the loaded model without a copy and keeps the table in bf16, as the
    library's fp32 path does, so its peak RSS is a shipped student's; each ratio is timed on the prompt."""
    from lingua_compress import Compressor, Prompt
    from lingua_compress.models import load_model

    path = tmp_path / "m"
    tiny_model().to(torch.bfloat16).save_pretrained(str(path))
    tiny_tokenizer().save_pretrained(str(path))
    base = load_model(str(path), device="cpu", dtype="float32", bf16_embedding=True)
    student = D.Student(base.model, 2, copy_lm=False)
    assert student.lm is base.model and len(base.model.get_decoder().layers) == 2
    fast = Compressor(scorer=D.student_scorer(student, base.tokenizer, "float32"))
    assert fast.scorer.backend.embedding_dtype == "bfloat16" and fast.scorer.backend.dtype == "float32"
    prompt = Prompt(instruction="Answer.", demonstrations=CORPUS[:4], question=CORPUS[4])
    timed = D.time_compressions(fast, prompt, repeats=2)
    assert set(timed) == {"0.5", "0.2", "0.1"}
    assert all(len(row["runs_s"]) == 2 and row["best_s"] == min(row["runs_s"]) for row in timed.values())
    assert all(0 < row["tokens"][1] < row["tokens"][0] for row in timed.values())


def test_a_lora_students_adapter_file_loads_back_merged_over_the_base(scorer, tmp_path):
    """--lora keeps the adapter (updates, norms, log-partition head: what would ship) in results/; read back over
    the base model's own layers it is the trained student; an adapter missing its updates is refused."""
    pytest.importorskip("peft")
    from tiny import save_tiny_model

    from lingua_compress.models import load_model

    base = save_tiny_model(tmp_path / "base")
    rows = _rows(scorer)
    student = D.Student(load_model(str(base), dtype="float32").model, 2)
    student.use_lora(4)
    D.train(student, rows, D.teacher_targets(scorer, rows), minutes=1.0, steps=5, batch=2, lr=1e-2)
    trained = {n for n, p in student.named_parameters() if p.requires_grad}
    adapter = {k: v for k, v in student.state_dict().items() if k in trained}
    assert any(".lora_A." in k for k in adapter) and not any("embed_tokens" in k for k in adapter)
    torch.save(adapter, tmp_path / "adapter.pt")
    student.merge()
    back, _ = D.read_student(tmp_path / "adapter.pt", model=str(base))
    x = torch.as_tensor(rows[:2])
    with torch.no_grad():
        assert torch.allclose(back(x), student(x), atol=1e-4)
    torch.save({k: v for k, v in adapter.items() if ".lora_B." not in k}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="incomplete adapter"):
        D.read_student(tmp_path / "partial.pt", model=str(base))


def test_distill_loss_ordering_term_counts_only_misordered_pairs_and_is_off_by_default():
    target = torch.tensor([[0.5, 3.0, 1.0, 6.0]])
    same_order = target * 2 + 1  # every pair in the teacher's order, scale and level wrong
    swapped = target.flip(-1)
    mse = torch.nn.functional.mse_loss(swapped, target)
    assert torch.equal(D.distill_loss(swapped, target), mse)  # rank_weight 0: squared error alone
    ordered = D.distill_loss(same_order, target, rank_weight=1.0, rank_temp=0.01)
    misordered = D.distill_loss(swapped, target, rank_weight=1.0, rank_temp=0.01)
    assert float(ordered - torch.nn.functional.mse_loss(same_order, target)) < 1e-6  # nothing to reorder
    assert float(misordered - mse) > 10  # sharply penalised: swapped pairs at a tiny temperature
    pred = swapped.clone().requires_grad_(True)
    D.distill_loss(pred, target, rank_weight=1.0).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


@pytest.mark.parametrize("flags", [["--rank-weight", "-1"], ["--rank-temp", "0"]])
def test_ordering_term_settings_out_of_range_are_refused_by_name(flags, capsys):
    with pytest.raises(SystemExit):
        D.parse_args(flags)
    assert flags[0] in capsys.readouterr().err
