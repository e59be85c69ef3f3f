"""Attention for decoding on CPU: one new token against the cache, as two small matmuls.

PyTorch's CPU ``scaled_dot_product_attention`` (its flash kernel) is slow for a single query:
measured on 2 cores with SmolVLM-256M's shape (9 query heads, 3 key/value heads, head dim 64),
580-700 µs per layer against 1300 cached tokens and 1.8 ms against 4000, where ``q @ kᵀ``,
softmax and ``@ v`` in float32 take 340 µs and 1.1 ms. Per decoded token that is 30 layers ×
the difference: after a photo, more than half of the token's time.

Here a decode step (one query, no mask) takes the matmul path: the query heads grouped by the
key/value head they share (no copy of the cache, as ``repeat_kv`` would make), in float32 as SDPA
computes inside (bf16 scores round the logits enough to flip near-tied greedy tokens).
Everything else — the prompt, masks, sliding windows, soft-capping, the vision tower — goes to
transformers' own SDPA function unchanged.

Registered under :data:`NAME` for ``from_pretrained(attn_implementation=NAME)``, with SDPA's
mask function, so the masks a model builds are exactly SDPA's.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "sdpa_cpu_decode"


def decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    plain = (
        length == 1
        and attention_mask is None
        and query.device.type == "cpu"
        and not dropout
        and heads % kv_heads == 0
        and key.shape[-1] == value.shape[-1] == dim
        and kwargs.get("softcap") is None
        and kwargs.get("s_aux") is None
        and kwargs.get("position_bias") is None
        and not kwargs.get("output_attentions")
    )
    if not plain:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = scaling if scaling is not None else dim**-0.5
    # Query head h uses key/value head h // group (the order repeat_kv gives).
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(grouped.float(), key.float().transpose(-1, -2)) * scale
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, value.float()).to(value.dtype)  # [batch, kv_heads, group, dim]
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def register() -> str:
    """Make :data:`NAME` known to transformers (once); returns it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, decode_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    return NAME
