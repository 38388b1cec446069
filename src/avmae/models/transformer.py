"""A pre-norm ViT transformer on `scaled_dot_product_attention` (Vaswani et al.; ViT, Sec. 3.1).

Parameter names follow timm's `VisionTransformer` (`blocks.N.norm1`, `blocks.N.attn.qkv`,
`blocks.N.attn.proj`, `blocks.N.norm2`, `blocks.N.mlp.fc1`, `blocks.N.mlp.fc2`, `norm`), so public
ViT / MAE / AudioMAE / VideoMAE checkpoints map onto it by key.

Shapes: B batch, N tokens, D width, H heads.

Two details are configurable because the official release differs from PyTorch's defaults:
`gelu` "exact" (torch's default, timm) or "tanh" (flax `nn.gelu`'s default approximation, used by
every official AV-MAE and MBT model), and the LayerNorm epsilon (1e-6 in both timm's ViT and flax).

Activation checkpointing (`train.grad_checkpointing`, set on a model by `set_grad_checkpointing`):
each block's activations are dropped after its forward and recomputed in the backward, so memory
grows with one block's activations instead of all of them, for about a third more compute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample with probability `p`."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        # (B, N, 3D) -> (3, B, H, N, D/H)
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x.transpose(1, 2).reshape(B, N, D)  # (B, H, N, D/H) -> (B, N, D)
        return self.proj(x)


GELUS = {"exact": "none", "tanh": "tanh"}  # config value -> nn.GELU(approximate=...)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, gelu: str = "exact"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate=GELUS[gelu])
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, drop_path: float = 0.0,
                 gelu: str = "exact", eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, gelu)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Transformer(nn.Module):
    """A stack of blocks and an optional final LayerNorm (`norm`), as timm's ViT trunk.

    `drop_path_rates` gives one stochastic-depth rate per block (linearly increasing in ViT);
    `gelu` and `eps` as in the module docstring. With `grad_checkpointing` on, `forward_block`
    (what `forward` and MBT's fusion layers call) recomputes each block in the backward.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_dim: int,
                 drop_path_rates: list[float] | None = None, final_norm: bool = True,
                 gelu: str = "exact", eps: float = 1e-6):
        super().__init__()
        rates = drop_path_rates if drop_path_rates is not None else [0.0] * depth
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_dim, r, gelu, eps) for r in rates)
        self.norm = nn.LayerNorm(dim, eps=eps) if final_norm else nn.Identity()
        self.grad_checkpointing = False

    def forward_block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Block i on x (B, N, D). Checkpointed only where a backward will follow; the RNG state
        is restored for the recomputation, so stochastic depth drops the same samples twice."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(self.blocks[i], x, use_reentrant=False)
        return self.blocks[i](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(len(self.blocks)):
            x = self.forward_block(i, x)
        return self.norm(x)


def set_grad_checkpointing(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Turn activation checkpointing on or off in every Transformer of `model` (encoders,
    decoders, classifier streams); returns `model`."""
    for module in model.modules():
        if isinstance(module, Transformer):
            module.grad_checkpointing = enabled
    return model


def drop_path_schedule(rate: float, depth: int) -> list[float]:
    """ViT's linearly increasing stochastic-depth rates, 0 at the first block."""
    if depth <= 1:
        return [rate] * depth
    return [rate * i / (depth - 1) for i in range(depth)]


def init_weights(module: nn.Module) -> None:
    """MAE initialisation: xavier-uniform linears with zero bias, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
