"""Linear layers with weights prepacked for oneDNN, for the CPU paths (fp32, and bf16 where the CPU computes it).

On a CPU without native bf16 the scorer computes in fp32 and is compute-bound: the body's linear layers are about two
thirds of a compression and the output head most of the rest. ATen's fp32 linear calls MKL's sgemm, which lays the
weight out for its kernel again on every call; oneDNN, given the weight reordered once into its own blocked layout,
ran the default scorer's shapes faster on an AVX2-only AMD EPYC (bench_compress, ``linear_kernel``). The maths is the
same, only the summation order differs: NLL within ~1e-4 nats of ATen's. ATen's bf16 linear goes to oneDNN too,
but reorders the weight on every call; prepacked, the scorer's shapes ran 10-25 % faster on an AMX Xeon, with the
same kept text on check_packed_linear's prompts (token NLL Pearson 0.9995: bf16 rounds each product sum).

The ops are torch's own (``torch.ops.mkldnn``, what Inductor's CPU freezing uses), private to torch: every layer is
checked against ``F.linear`` on a probe when packed, and anything missing or off leaves the model as it was.
"""

from __future__ import annotations

import ctypes
import mmap
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

KERNELS = ("onednn-packed", "aten")
_PROBE_ROWS = 8
_libc: dict[str, Any] = {}  # glibc's functions, looked up on first use
_MADV_DONTNEED = 4  # Linux's value: the pages are dropped, a file-backed one is read again when touched
# Of the output's scale: reordering a sum of 2k fp32 products moves it by ~1e-6 of it; a bf16 output is rounded to
# 2^-8 of itself, so a kernel that sums in another order may differ by an ulp of the largest outputs.
_TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 2e-2}


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
        probe = probe.to(weight.dtype)
        with torch.inference_mode():
            want = F.linear(probe, weight.detach(), None if bias is None else bias.detach())
            got = self(probe)
        scale = float(want.abs().max()) or 1.0
        err = float((got.float() - want.float()).abs().max())
        return got.shape == want.shape and got.dtype == want.dtype and err <= _TOLERANCE[weight.dtype] * scale


class PackedLinear(nn.Module):
    """An inference-only stand-in for an fp32 or bf16 ``nn.Linear`` on the CPU (no autograd through it)."""

    def __init__(self, matrix: PackedMatrix) -> None:
        super().__init__()
        self.matrix = matrix
        self.in_features, self.out_features = matrix.in_features, matrix.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matrix(x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel=onednn-packed"


def packable_weight(weight: torch.Tensor) -> bool:
    return weight.dtype in _TOLERANCE and weight.device.type == "cpu"


def packable(module: nn.Module) -> bool:
    w = getattr(module, "weight", None)
    return type(module) is nn.Linear and w is not None and packable_weight(w)


def pack_linears(model: nn.Module, rows: int) -> int:
    """Replace each plain fp32 or bf16 CPU ``nn.Linear`` under ``model`` by a :class:`PackedLinear`, one at a time
    so the original weight is released before the next is copied (packing all first would hold both, +400 MB for
    the default scorer in fp32). A layer whose packed output disagrees with ``F.linear`` on a probe keeps ATen's
    kernel. The replaced layers are for dropping: where a weight is a view of a mapped checkpoint its pages are
    evicted (:func:`evict_file_pages`), so a replaced layer kept and used elsewhere would read the file's values,
    not changes made to it in place. Returns how many were replaced (0 where the ops are missing)."""
    if not available():
        return 0
    slots = [(parent, name) for parent in model.modules() for name, child in parent.named_children()
             if packable(child)]
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    mappings = file_mappings()
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
            if uses[id(child.weight)] == 1:  # a weight tied elsewhere stays in use: its pages too
                evict_file_pages(child.weight, mappings)
        del child, matrix
        release_freed_memory()
    return replaced


def file_mappings() -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of files; [] where /proc/self/maps is not there (off Linux)."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            lo, hi = fields[0].split("-")
            ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


def evict_file_pages(tensor: torch.Tensor, mappings: list[tuple[int, int]]) -> bool:
    """Drop from the resident set the whole pages of a released ``tensor`` that a file mapping backs.

    A checkpoint loaded zero-copy leaves its weights as views of the mapped file: packing reads each one, so its
    pages become resident, and they stay resident after the weight is released, as long as any other tensor keeps
    the mapping alive (the bf16 default scorer measured +190 MB). Only pages wholly inside the tensor are dropped,
    only inside a file mapping, and only for a tensor nothing uses any more: a page is re-read from the file if
    touched again. Returns whether anything was dropped."""
    madvise = _libc_function("madvise")
    if not madvise or not tensor.is_contiguous() or tensor.device.type != "cpu":
        return False
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    if not any(lo <= start and end <= hi for lo, hi in mappings):
        return False
    page = mmap.PAGESIZE
    first, last = -(-start // page) * page, end // page * page
    return last > first and madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED) == 0


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS. The weights released here sit in glibc's arena, which oneDNN's own
    allocations do not reuse: without this the packed model measured 400 MB more resident (1.72 vs 1.32 GB)."""
    malloc_trim = _libc_function("malloc_trim")
    if malloc_trim:
        malloc_trim(0)


def _libc_function(name: str) -> Any:
    """glibc's ``name``, looked up once; None where there is none (musl, macOS, Windows): then nothing to do."""
    if name not in _libc:
        try:
            function = getattr(ctypes.CDLL("libc.so.6", use_errno=True), name)
            if name == "madvise":
                function.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
            _libc[name] = function
        except (OSError, AttributeError):
            _libc[name] = None
    return _libc[name]


def count_linears(model: nn.Module) -> tuple[int, int]:
    """(packed, still ATen's) linear layers under ``model``."""
    packed = sum(isinstance(m, PackedLinear) for m in model.modules())
    return packed, sum(type(m) is nn.Linear for m in model.modules())


def pack_matrix(weight: torch.Tensor, rows: int) -> Any:
    """A callable ``x -> x @ weight.T``: packed where available and checked, else the plain matmul."""
    if available() and packable_weight(weight):
        try:
            matrix = PackedMatrix(weight, rows)
            if matrix.agrees_with(weight, None):
                return matrix
        except RuntimeError:
            pass
    return lambda x: x @ weight.T
