"""Linear layers with weights prepacked for oneDNN, for the fp32 CPU path.

On a CPU without native bf16 the scorer computes in fp32 and is compute-bound: the body's linear layers are about two
thirds of a compression and the output head most of the rest. ATen's fp32 linear calls MKL's sgemm, which lays the
weight out for its kernel again on every call; oneDNN, given the weight reordered once into its own blocked layout,
ran the default scorer's shapes faster on an AVX2-only AMD EPYC (bench_compress, ``linear_kernel``). The maths is the
same, only the summation order differs: NLL within ~1e-4 nats of ATen's.

The ops are torch's own (``torch.ops.mkldnn``, what Inductor's CPU freezing uses), private to torch: every layer is
checked against ``F.linear`` on a probe when packed, and anything missing or off leaves the model as it was.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

KERNELS = ("onednn-packed", "aten")
_PROBE_ROWS = 8
_TOLERANCE = 1e-3  # of the output's scale: reordering a sum of 2k fp32 products moves it by ~1e-6 of it


def available() -> bool:
    """Whether this torch build has oneDNN and the packed-linear ops."""
    ops = getattr(torch.ops, "mkldnn", None)
    return bool(torch.backends.mkldnn.is_available() and ops is not None
                and hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise"))


class PackedMatrix:
    """``x @ weight.T`` (+ bias) through a copy of ``weight`` reordered once for oneDNN; ``rows`` is the batch
    size the layout is tuned for (any batch size works)."""

    def __init__(self, weight: torch.Tensor, rows: int, bias: torch.Tensor | None = None) -> None:
        weight = weight.detach()
        self.out_features, self.in_features = weight.shape
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), rows)
        self.bias = None if bias is None else bias.detach()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def agrees_with(self, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
        probe = torch.randn(_PROBE_ROWS, self.in_features, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            want = F.linear(probe, weight.detach(), None if bias is None else bias.detach())
            got = self(probe)
        scale = float(want.abs().max()) or 1.0
        return got.shape == want.shape and bool((got - want).abs().max() <= _TOLERANCE * scale)


class PackedLinear(nn.Module):
    """An inference-only stand-in for an fp32 ``nn.Linear`` on the CPU (no autograd through it)."""

    def __init__(self, matrix: PackedMatrix) -> None:
        super().__init__()
        self.matrix = matrix
        self.in_features, self.out_features = matrix.in_features, matrix.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matrix(x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel=onednn-packed"


def packable(module: nn.Module) -> bool:
    w = getattr(module, "weight", None)
    return (type(module) is nn.Linear and w is not None and w.dtype == torch.float32 and w.device.type == "cpu")


def pack_linears(model: nn.Module, rows: int) -> int:
    """Replace every plain fp32 CPU ``nn.Linear`` under ``model`` by a :class:`PackedLinear`, all or none: returns
    how many were replaced (0 where the ops are missing or any layer disagrees with ``F.linear``). The original
    weights are released, so memory does not grow."""
    if not available():
        return 0
    swaps: list[tuple[nn.Module, str, PackedLinear]] = []
    try:
        for parent in model.modules():
            for name, child in parent.named_children():
                if packable(child):
                    matrix = PackedMatrix(child.weight, rows, child.bias)
                    if not matrix.agrees_with(child.weight, child.bias):
                        return 0
                    swaps.append((parent, name, PackedLinear(matrix)))
    except RuntimeError:  # an op this build lacks for these shapes: keep ATen's
        return 0
    for parent, name, packed in swaps:
        setattr(parent, name, packed)
    return len(swaps)


def pack_matrix(weight: torch.Tensor, rows: int) -> Any:
    """A callable ``x -> x @ weight.T``: packed where available and checked, else the plain matmul."""
    if available() and weight.dtype == torch.float32 and weight.device.type == "cpu":
        try:
            matrix = PackedMatrix(weight, rows)
            if matrix.agrees_with(weight, None):
                return matrix
        except RuntimeError:
            pass
    return lambda x: x @ weight.T
