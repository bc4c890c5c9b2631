"""compress_batch's batched forwards (lingua_compress.batching) against one prompt at a time, on the tiny model.

The tiny model's two sliding layers (window 16) and one full layer are outgrown by every prompt here, and the prompts
differ in length, so rows are padded on both sides, sliding caches are bounded, and kept tokens leave gaps.
"""

from __future__ import annotations

import numpy as np
import pytest

from lingua_compress import CompressionConfig, Compressor, ConfigError, Prompt
from lingua_compress.batching import RoundBatcher
from lingua_compress.scoring import CausalLMScorer
from tiny import CORPUS, save_tiny_model, tiny_scorer

# The all-protected prompt (URLs, numbers, identifiers) overruns small budgets: expected, and beside the point here.
pytestmark = pytest.mark.filterwarnings("ignore::lingua_compress.BudgetWarning")

PROMPTS = [
    " ".join(CORPUS),
    CORPUS[0] + " " + CORPUS[2],
    Prompt(instruction=CORPUS[1], demonstrations=[CORPUS[0], CORPUS[4], CORPUS[2]], question=CORPUS[3]),
    CORPUS[5] * 3,
    CORPUS[3],
]


@pytest.fixture(scope="module")
def compressor():
    # 16-token windows: every prompt but the last takes several forwards, so rounds meet caches of every length.
    return Compressor(scorer=tiny_scorer(sliding_window=16), config=CompressionConfig(window_tokens=16))


@pytest.mark.parametrize("conditioning,question_aware", [("reuse", False), ("recompute", False), ("reuse", True)])
@pytest.mark.parametrize("ratio", [0.5, 0.2])
def test_batched_forwards_give_each_prompt_the_text_it_gets_alone(compressor, ratio, conditioning, question_aware,
                                                                   monkeypatch):
    import lingua_compress.batching as batching

    rounds = []
    real = batching.forward_rows
    monkeypatch.setattr(batching, "forward_rows", lambda scorer, reqs: rounds.append(len(reqs)) or real(scorer, reqs))
    # question_aware in the config: the Prompt with a question takes the question-aware path, the strings do not.
    config = CompressionConfig(window_tokens=16, conditioning=conditioning, question_aware=question_aware)
    c = Compressor(scorer=compressor.scorer, config=config)
    alone = [c.compress(p, ratio) for p in PROMPTS]
    batched = c.compress_batch(PROMPTS, ratio, batch_size=3)
    for a, b in zip(alone, batched):
        assert b.text == a.text and b.kept_spans == a.kept_spans
    assert max(rounds) == 3 and len(rounds) >= 10  # 5 prompts on 3 workers, each several windows


def test_sdpa_and_packed_kernels_batch_too(tmp_path):
    # A scorer loaded by path: oneDNN-packed linear layers, and sdpa, which takes boolean masks (eager adds floats).
    scorer = CausalLMScorer(str(save_tiny_model(tmp_path / "m")), device="cpu", dtype="float32", attention="sdpa")
    c = Compressor(scorer=scorer, config=CompressionConfig(window_tokens=16))
    alone = [c.compress(p, 0.3).text for p in PROMPTS]
    assert [r.text for r in c.compress_batch(PROMPTS, 0.3, batch_size=4)] == alone


def _three_sessions():
    """Three sessions of three windows each (gaps, sliding eviction, cache lengths that differ across rows), and
    their scores run one after another."""
    scorer = tiny_scorer(sliding_window=16)
    windows = [[5, 9, 30, 41, 7, 8, 60, 61, 62, 63, 12, 14, 90, 91, 3, 4, 5, 6, 7, 8], [11, 12, 13],
               list(range(20, 47))]
    keeps = [np.arange(len(w)) % 3 != 1 for w in windows]

    def run(seed):
        session, out = scorer.session(), []
        for i in range(3):
            w = windows[(seed + i) % 3]
            out.append(session.score(w))
            session.keep(keeps[(seed + i) % 3])
        return np.concatenate(out)

    return scorer, run, [run(s) for s in range(3)]


def test_a_session_scores_the_same_in_a_batch_as_alone():
    scorer, run, alone = _three_sessions()
    for a, b in zip(alone, RoundBatcher(scorer, 3).map(run, range(3))):
        assert np.allclose(a, b, atol=1e-4)


def test_a_model_whose_layers_cannot_be_batched_runs_each_row_alone(monkeypatch):
    import lingua_compress.batching as batching

    scorer, run, alone = _three_sessions()
    monkeypatch.setattr(batching, "_batchable", lambda per_row: False)
    for a, b in zip(alone, RoundBatcher(scorer, 3).map(run, range(3))):
        assert np.allclose(a, b, atol=1e-5)


def test_an_error_in_one_prompt_reaches_the_caller_after_the_others_finish(compressor):
    done = []

    def fn(i):
        if i == 1:
            raise ValueError("prompt 1 is bad")
        done.append(compressor.compress(PROMPTS[i], 0.5).text)
        return i

    with pytest.raises(ValueError, match="prompt 1 is bad"):
        RoundBatcher(compressor.scorer, 2).map(fn, range(4))
    assert len(done) == 3


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "4"])
def test_batch_size_is_checked(compressor, bad):
    with pytest.raises(ConfigError, match="batch_size"):
        compressor.compress_batch(PROMPTS[:2], 0.5, batch_size=bad)


def test_batch_size_defaults_to_one_at_a_time_on_a_cpu(compressor, monkeypatch):
    import lingua_compress.batching as batching

    monkeypatch.setattr(batching.RoundBatcher, "map", lambda *a: pytest.fail("batched on a CPU"))
    assert len(compressor.compress_batch(PROMPTS[:2], 0.5)) == 2


def test_a_corpus_worker_batches_a_chunk_into_the_outcomes_it_gives_one_by_one(tmp_path, monkeypatch):
    import lingua_compress.batching as batching
    from lingua_compress.corpus.worker import RecordCompressor, Task, WorkerSpec

    spec = WorkerSpec(model=str(save_tiny_model(tmp_path / "m")), device="cpu",
                      config=CompressionConfig(window_tokens=16), ratio=0.4, target_tokens=None, field="text",
                      output_field="compressed", threads=1)
    worker = RecordCompressor(spec)
    tasks = [Task(str(i), i, {"text": t}) for i, t in enumerate([*CORPUS, 12, CORPUS[0] * 3])]
    one_by_one = [worker(t) for t in tasks]
    monkeypatch.setattr(batching, "auto_batch_size", lambda scorer: 3)  # as on a GPU
    rounds = []
    real = batching.forward_rows
    monkeypatch.setattr(batching, "forward_rows", lambda scorer, reqs: rounds.append(len(reqs)) or real(scorer, reqs))
    assert worker.many(tasks) == one_by_one  # the bad record's rejection included, in its place
    assert max(rounds) == 3
    assert one_by_one[len(CORPUS)].error is not None
