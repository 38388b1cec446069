"""Objectives (paper Sec. 3.4): joint reconstruction and modality inpainting.

Joint reconstruction (Eq. 1): each modality's decoder sequence is Unshuffle(e, m), the encoded
visible tokens with mask tokens inserted at the removed positions; the loss is the MSE on the
masked tokens only, each token's error averaged over its patch values.

Modality inpainting (Fig. 3): the decoder sequence for modality A is [e_B || m_A, ..., m_A], the
encoded tokens of the other modality B followed by A's mask token repeated to fill A's length
n_A, i.e. n_A - (1 - alpha_B) n_B mask tokens. The mask token at position i stands for A's patch i,
and only those positions are in the loss.
"""

from __future__ import annotations

import torch

from avmae.config import ConfigError


def reconstruction_target(patches: torch.Tensor, norm_targets: bool) -> torch.Tensor:
    """Raw patches (the paper's default) or patches normalised per patch (MAE's option)."""
    if not norm_targets:
        return patches
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + 1e-6) ** 0.5


def masked_mse(pred: torch.Tensor, target: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Eq. 1: mean over tokens with loss_mask == 1 of the per-token mean squared error.

    pred, target: (B, N, P); loss_mask: (B, N), 1 where the loss is taken.
    """
    per_token = ((pred.float() - target.float()) ** 2).mean(dim=-1)   # (B, N)
    return (per_token * loss_mask).sum() / loss_mask.sum().clamp(min=1.0)


def inpaint_sequence(encoded_other: torch.Tensor, mask_token: torch.Tensor, n_target: int):
    """[e_B || m_A repeated]: (B, u_B, Dd) -> (B, n_A, Dd), and the loss mask (B, n_A).

    Positions u_B..n_A-1 hold mask tokens and are reconstructed; the first u_B are not.
    """
    B, u, D = encoded_other.shape
    if u >= n_target:
        raise ConfigError(f"modality inpainting needs more target tokens ({n_target}) than visible "
                          f"tokens of the other modality ({u}): lower that modality's visible share "
                          "(raise its mask ratio) or use a longer target input")
    seq = torch.cat([encoded_other, mask_token.to(encoded_other.dtype).expand(B, n_target - u, D)], dim=1)
    loss_mask = torch.zeros(B, n_target, device=encoded_other.device)
    loss_mask[:, u:] = 1.0
    return seq, loss_mask
