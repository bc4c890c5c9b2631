"""The training example and its loss, shared by tuning and evaluation so both measure the same thing.

An example is ``<bos> prompt \\n response <eos>``; the loss is the mean NLL of the response tokens and the
<eos> only (prompt tokens carry label -100), i.e. what the target said given what it was asked. The NLL is
computed from hidden states with a chunked, checkpointed output head: Gemma's 262k-entry vocabulary would need
~2 GB of logits (and as much again for their gradient) for one batch of 4 x 512 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .pairs import Pair

IGNORE = -100  # the label PyTorch's and transformers' losses skip
PROMPT_SUFFIX = "\n"  # between the prompt and the response
TEMPLATE = "<bos>{prompt}\\n{response}<eos>"  # recorded in the manifest
_CHUNK_ROWS = 256  # response rows per head chunk: 256 x 262k fp32 logits = 268 MB, freed before the next


@dataclass(frozen=True)
class Example:
    ids: tuple[int, ...]
    n_prompt: int  # leading ids that are context only (<bos> and the prompt): their labels are IGNORE

    @property
    def n_response(self) -> int:
        return len(self.ids) - self.n_prompt


def encode_pair(tokenizer: Any, pair: Pair, max_length: int) -> Example:
    """Token ids of one pair, at most ``max_length``: a long prompt loses its beginning (the response is what is
    learned, and its nearest context matters most), a response longer than the whole budget loses its end."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prompt = tokenizer(pair.prompt + PROMPT_SUFFIX, add_special_tokens=False)["input_ids"]
    response = tokenizer(pair.response, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        response = response + [tokenizer.eos_token_id]
    response = response[: max_length - 2]  # room for <bos> and at least one prompt token
    prompt = prompt[max(0, len(prompt) - (max_length - 1 - len(response))):]
    return Example(tuple([bos] + prompt + response), 1 + len(prompt))


def collate(examples: Sequence[Example], pad_id: int, device: Any) -> dict[str, Any]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (IGNORE on the prompt and the padding)."""
    import torch

    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.ids)
        ids[row, :n] = torch.tensor(e.ids)
        mask[row, :n] = 1
        labels[row, e.n_prompt:n] = ids[row, e.n_prompt:n]
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def response_nll(lm: Any, batch: dict[str, Any], chunk_rows: int = _CHUNK_ROWS) -> tuple[Any, int]:
    """Summed NLL (a scalar tensor, differentiable when grad is on) of the labelled tokens, and their count.

    Works on a plain transformers causal LM and on one with LoRA layers injected (peft changes the modules in
    place, so the decoder body and the tied output head are reached the same way).
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    body = lm.get_decoder()
    out = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    hidden = out.last_hidden_state[:, :-1]  # the state at i predicts token i + 1
    labels = batch["labels"][:, 1:]
    take = labels != IGNORE
    rows, targets = hidden[take], labels[take]
    head = lm.get_output_embeddings().weight
    softcap = getattr(lm.config, "final_logit_softcapping", None)
    total = hidden.new_zeros((), dtype=torch.float32)
    for r0 in range(0, len(targets), chunk_rows):
        args = (rows[r0:r0 + chunk_rows], head, targets[r0:r0 + chunk_rows], softcap)
        # Checkpointed: backward recomputes this chunk's logits instead of keeping every chunk's alive.
        total = total + (checkpoint(_chunk_nll, *args, use_reentrant=False) if torch.is_grad_enabled()
                         else _chunk_nll(*args))
    return total, int(take.sum())


def _chunk_nll(rows: Any, head: Any, targets: Any, softcap: float | None) -> Any:
    import torch

    logits = (rows @ head.T).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return (torch.logsumexp(logits, dim=-1) - logits.gather(1, targets[:, None])[:, 0]).sum()
