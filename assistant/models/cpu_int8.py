"""Weight-only int8 for the language model on CPU (``--quantization int8`` without a GPU).

Decoding one token reads every weight once. Here each ``nn.Linear`` of the language model keeps
int8 weights with one scale per output row (symmetric, absmax): half the memory of bfloat16, and
torch's own int8 weight-only kernel (``aten._weight_int8pack_mm``) multiplies one token's
activations with them faster than a bfloat16 matvec (1.8x with the weights in cache, ~1.3x from
memory on 2 AMD EPYC cores, where widening int8 to float bounds it): models decode ~1.2x faster
(docs/benchmarks.md, section 2c).

Why not a library: bitsandbytes' LLM.int8 is built for GPUs (the SmolVLM-256M shape decoded at
18 tokens/s with it on CPU, 70 with this); torchao's ``Int8WeightOnlyConfig`` dequantizes the whole
matrix on every call in eager mode (14 ms instead of 0.6 ms for a 2048x11008 matvec here) and is
only fast under ``torch.compile``.

Prompts (many rows at once) are compute-bound, where the int8 kernel loses to a bfloat16 GEMM:
there the weights are widened slice by slice (a few MiB each, so they stay in cache) and
multiplied in the activations' dtype. The vision tower and projector stay as loaded: they only
ever see many rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

# Up to this many rows (tokens) per call the int8 kernel wins; beyond, widened slices do (the
# crossover measured on 576x1536 .. 2048x11008 weights lies between 16 and 64 rows).
KERNEL_MAX_ROWS = 32
SLICE_ELEMENTS = 1 << 20  # weights widened per step in the many-rows path
# The kernel reads the inner dimension in whole vectors: other widths crash or give NaN
# (K=100, K=578 on an AVX-512 CPU). Those layers use the widened path for every call.
KERNEL_INNER_MULTIPLE = 64


def _kernel_available() -> bool:
    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights and a per-output-row scale."""

    weight_int8: torch.Tensor
    scale: torch.Tensor
    kernel_scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear, compute_dtype: torch.dtype):
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        weight = linear.weight.detach().float()  # a copy: the in-place steps below may touch it
        if weight.data_ptr() == linear.weight.data_ptr():
            weight = weight.clone()
        scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127.0
        quantized = weight.div_(scale[:, None]).round_().clamp_(-127, 127).to(torch.int8)
        self.register_buffer("weight_int8", quantized)
        self.register_buffer("scale", scale.to(compute_dtype))
        # The kernel reads activations in bf16 (or fp16) even for a float32 model: its float32
        # version is 10x slower, slower than a float32 matvec, while the bf16 one is fast even on
        # CPUs without bf16 instructions (AVX2: 0.86 ms against 4.4 ms for a 2048x11008 fp32 matvec).
        kernel_dtype = compute_dtype if compute_dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        self.register_buffer("kernel_scale", scale.to(kernel_dtype))
        bias = linear.bias
        # A copy even in the same dtype: a view would keep the checkpoint's memory map alive.
        self.register_buffer("bias", None if bias is None else bias.detach().to(compute_dtype, copy=True))
        self.uses_kernel = _kernel_available() and self.in_features % KERNEL_INNER_MULTIPLE == 0
        self.slice_rows = max(1, SLICE_ELEMENTS // self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.scale.dtype
        flat = x.reshape(-1, self.in_features)
        if self.uses_kernel and flat.shape[0] <= KERNEL_MAX_ROWS:
            low = flat.to(self.kernel_scale.dtype).contiguous()
            out = torch.ops.aten._weight_int8pack_mm(low, self.weight_int8, self.kernel_scale).to(dtype)
        else:
            flat = flat.to(dtype)
            parts = [F.linear(flat, rows.to(dtype)) for rows in self.weight_int8.split(self.slice_rows)]
            out = torch.cat(parts, dim=-1) * self.scale
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def quantize_language_model(model: nn.Module, keep: Iterable[str], compute_dtype: torch.dtype) -> int:
    """Swap the model's ``nn.Linear`` layers for :class:`Int8Linear`, in place, except under
    module names matching a ``keep`` pattern (vision tower, projector). Returns how many were
    swapped. One layer at a time, so memory never holds two copies of the model."""
    patterns = [re.compile(p) for p in keep]
    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not any(p.match(name) for p in patterns)
    ]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int8Linear(getattr(parent, child), compute_dtype))
    _own_remaining_weights(model)
    _give_back_freed_memory()
    return len(targets)


def _own_remaining_weights(model: nn.Module) -> None:
    """Copy the weights left as loaded (vision tower, embeddings, norms) out of the checkpoint's
    memory map: while any tensor views it, the whole map stays, with every page the conversion
    read still resident (a 256M model's process kept ~370 MiB more than in bfloat16)."""
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.clone()
        for module in model.modules():
            for key, buffer in module._buffers.items():
                if buffer is not None and not isinstance(module, Int8Linear):
                    module._buffers[key] = buffer.clone()


def _give_back_freed_memory() -> None:
    """The float weights just freed sit in malloc's heap (blocks under its mmap threshold), so
    the process would keep their pages: hand them back to the OS (glibc only)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
