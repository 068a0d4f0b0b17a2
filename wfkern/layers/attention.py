"""WF wrapper of nn.MultiheadAttention (torchvision ViTs): gates on the q/k/v in-projection."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wfkern.layers.base import ForgetContext, WFLayer

__all__ = ["WFMultiheadAttention", "unsupported_reason"]


def unsupported_reason(mha: nn.MultiheadAttention) -> Optional[str]:
    """Why ``mha`` cannot be wrapped, or None when it can."""
    if not mha._qkv_same_embed_dim:
        return "separate q/k/v projection weights (kdim/vdim != embed_dim)"
    if mha.bias_k is not None or mha.add_zero_attn:
        return "add_bias_kv / add_zero_attn"
    return None


def _float_mask(mask: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    if mask is None or mask.is_floating_point():
        return None if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))


class WFMultiheadAttention(WFLayer):
    """``nn.MultiheadAttention`` whose in-projection ``[W_q; W_k; W_v]`` is gated per output feature.

    Without forget labels it calls the base module unchanged. With labels it runs the same math
    explicitly (gated in-projection, scaled dot-product attention, out-projection), so the
    signature and return value are those of ``nn.MultiheadAttention.forward``.
    """

    kind = "mha"

    def __init__(self, base: nn.MultiheadAttention, num_classes: int, context: ForgetContext, init: float = 3.0):
        reason = unsupported_reason(base)
        if reason is not None:
            raise ValueError(f"wfkern.WFMultiheadAttention: base must use a packed in-projection, got {reason}")
        super().__init__(base, num_classes, 3 * base.embed_dim, base.in_proj_bias is not None, context, init)

    def __getattr__(self, name: str):
        # A drop-in: callers (nn.TransformerEncoderLayer, nn.TransformerEncoder, ...) read the wrapped
        # layer's attributes (batch_first, embed_dim, in_proj_weight, out_proj, merge_masks, ...).
        try:
            return super().__getattr__(name)
        except AttributeError:
            base = self.__dict__.get("_modules", {}).get("base")
            if base is None:
                raise
            return getattr(base, name)

    @property
    def _qkv_same_embed_dim(self) -> bool:
        # torch's fused encoder fast path checks this and, when True, runs its own kernel on
        # in_proj_weight, which would skip the gates: report False while a masked forward runs.
        return self.base._qkv_same_embed_dim and self.context.labels is None

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Optional[Tensor] = None,
                need_weights: bool = True, attn_mask: Optional[Tensor] = None, average_attn_weights: bool = True,
                is_causal: bool = False, *, forget: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        mha = self.base
        labels = self.labels_for(forget)
        if labels is None:
            return mha(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                       attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal)
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        if not mha.batch_first or unbatched:  # (L, B, E) -> (B, L, E): labels index dim 0
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = self._project(query, key, value, labels)
        batch, tgt_len, embed = q.shape
        heads = mha.num_heads
        q, k, v = (t.reshape(batch, t.shape[1], heads, embed // heads).transpose(1, 2) for t in (q, k, v))
        mask = self._merged_mask(key_padding_mask, attn_mask, batch, q.dtype)
        dropout = mha.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            if mask is not None:
                scores = scores + mask
            if is_causal and mask is None:
                causal = torch.ones(tgt_len, k.shape[2], dtype=torch.bool, device=q.device).triu(1)
                scores = scores.masked_fill(causal, float("-inf"))
            attn = torch.softmax(scores, dim=-1)
            weights = attn.mean(dim=1) if average_attn_weights else attn
            out = F.dropout(attn, dropout, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                 is_causal=is_causal and mask is None)
        out = F.linear(out.transpose(1, 2).reshape(batch, tgt_len, embed), mha.out_proj.weight, mha.out_proj.bias)
        if not mha.batch_first or unbatched:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(1)
            weights = None if weights is None else weights.squeeze(0)
        return out, weights

    def _project(self, query: Tensor, key: Tensor, value: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Gated in-projection; one GEMM for self-attention, three slices otherwise."""
        weight, in_bias = self.base.in_proj_weight, self.base.in_proj_bias
        embed = self.base.embed_dim
        if query is key and key is value:
            return self.masked(F.linear(query, weight, in_bias), labels, in_bias, channel_dim=-1,
                               save_output=True).split(embed, dim=-1)
        parts = []
        for i, x in enumerate((query, key, value)):
            cols = slice(i * embed, (i + 1) * embed)
            bias = None if in_bias is None else in_bias[cols]
            alpha_b = None if self.alpha_b is None else self.alpha_b[:, cols].contiguous()
            parts.append(self.masked(F.linear(x, weight[cols], bias), labels, bias, -1,
                                     self.alpha_w[:, cols].contiguous(), alpha_b, save_output=True))
        return tuple(parts)

    def _merged_mask(self, key_padding_mask: Optional[Tensor], attn_mask: Optional[Tensor], batch: int,
                     dtype: torch.dtype) -> Optional[Tensor]:
        """Additive float mask broadcastable to (B, heads, L, S), or None."""
        padding = _float_mask(key_padding_mask, dtype)
        attention = _float_mask(attn_mask, dtype)
        if attention is not None and attention.dim() == 3:  # (B * heads, L, S)
            attention = attention.view(batch, self.base.num_heads, attention.shape[-2], attention.shape[-1])
        if padding is not None:
            padding = padding.view(batch, 1, 1, padding.shape[-1])
            return padding if attention is None else attention + padding
        return attention
