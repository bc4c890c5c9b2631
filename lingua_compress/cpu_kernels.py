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

import ctypes
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

KERNELS = ("onednn-packed", "aten")
_PROBE_ROWS = 8
_malloc_trim: Any = None  # glibc's, looked up on first use; False where there is none
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
    """Replace each plain fp32 CPU ``nn.Linear`` under ``model`` by a :class:`PackedLinear`, one at a time so the
    original weight is released before the next is copied (packing all first would hold both, +400 MB for the
    default scorer). A layer whose packed output disagrees with ``F.linear`` on a probe keeps ATen's kernel.
    Returns how many were replaced (0 where the ops are missing)."""
    if not available():
        return 0
    slots = [(parent, name) for parent in model.modules() for name, child in parent.named_children()
             if packable(child)]
    replaced = 0
    for parent, name in slots:
        child = getattr(parent, name)
        try:
            matrix = PackedMatrix(child.weight, rows, child.bias)
        except RuntimeError:  # an op this build lacks for this shape: keep ATen's
            continue
        if matrix.agrees_with(child.weight, child.bias):
            setattr(parent, name, PackedLinear(matrix))
            replaced += 1
        del child, matrix
        release_freed_memory()
    return replaced


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS. The weights released here sit in glibc's arena, which oneDNN's own
    allocations do not reuse: without this the packed model measured 400 MB more resident (1.72 vs 1.32 GB)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to do
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


def count_linears(model: nn.Module) -> tuple[int, int]:
    """(packed, still ATen's) linear layers under ``model``."""
    packed = sum(isinstance(m, PackedLinear) for m in model.modules())
    return packed, sum(type(m) is nn.Linear for m in model.modules())


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
