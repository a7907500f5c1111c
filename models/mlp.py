"""A residual MLP score network for vector data (the 2-D toy problems).

Pre-norm residual blocks (LayerNorm -> SiLU -> Linear, plus the projected time embedding,
-> SiLU -> Linear), the time embedding added in every block, as in the U-Nets' residual blocks
(Ho et al. 2020) but with linear layers. ~170k parameters with the defaults.
"""
from typing import Optional

import torch
import torch.nn as nn

from .layers import TimeEmbedding, check_inputs, embed_conditions, get_activation, output_channels, per_example

__all__ = ["ScoreMLP"]


class MLPBlock(nn.Module):
    """h + linear2(dropout(act(linear1(act(norm(h))) + temb_proj(act(temb)))))."""

    def __init__(self, width: int, temb_dim: Optional[int], act: nn.Module, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear1 = nn.Linear(width, width)
        self.temb_proj = nn.Linear(temb_dim, width) if temb_dim is not None else None
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(width, width)
        self.act = act

    def forward(self, h: torch.Tensor, temb: Optional[torch.Tensor]) -> torch.Tensor:
        """(B, width), (B, temb_dim) or None -> (B, width)."""
        r = self.linear1(self.act(self.norm(h)))
        if self.temb_proj is not None and temb is not None:
            r = r + self.temb_proj(self.act(temb))
        r = self.linear2(self.dropout(self.act(r)))
        return h + r


class ScoreMLP(nn.Module):
    """Residual MLP score network: forward(x, labels, y=None) -> tensor shaped like x (B, D).

    Args:
        data_dim: D, the dimension of the data vectors (2 for the toy problems).
        hidden_dim: width of the residual stream; the time embedding has the same width.
        num_blocks: number of residual blocks (depth).
        embedding_type: 'positional' (sinusoidal of the labels, e.g. t*999) or 'fourier'
            (Gaussian Fourier features of log(labels), for labels that are sigmas).
        fourier_scale: std of the Fourier frequencies.
        nonlinearity: 'swish' | 'silu' | 'elu' | 'relu' | 'lrelu'.
        dropout: dropout probability inside the blocks.
        scale_by_sigma: divide the output by `labels` read as sigma.
        conditional: condition on the noise level.
        num_classes: number of classes (0 = none); row num_classes of the class embedding is the
            null label.
        learned_variance: output 2 D values, eps and the variance output v of improved DDPM
            (Nichol & Dhariwal 2021; `sde_lib.learned_variance`).

    Raises:
        ValueError: for invalid sizes or option values.
    """

    def __init__(self, *, data_dim: int = 2, hidden_dim: int = 128, num_blocks: int = 3,
                 embedding_type: str = "positional", fourier_scale: float = 16.0,
                 nonlinearity: str = "swish", dropout: float = 0.0, scale_by_sigma: bool = False,
                 conditional: bool = True, num_classes: int = 0, learned_variance: bool = False):
        super().__init__()
        out_dim = output_channels(data_dim, learned_variance, scale_by_sigma)
        if data_dim < 1 or num_blocks < 1 or num_classes < 0 or not 0 <= dropout < 1:
            raise ValueError(
                f"Need data_dim >= 1, num_blocks >= 1, num_classes >= 0, 0 <= dropout < 1; got "
                f"data_dim={data_dim}, num_blocks={num_blocks}, num_classes={num_classes}, "
                f"dropout={dropout}.")
        if hidden_dim < 16 or hidden_dim % 4:
            raise ValueError(f"hidden_dim={hidden_dim} must be a multiple of 4 and >= 16 (the "
                             f"time embedding uses hidden_dim / 4 frequencies).")
        self.data_dim, self.num_classes = data_dim, num_classes
        self.conditional, self.scale_by_sigma = bool(conditional), bool(scale_by_sigma)
        self.act = act = get_activation(nonlinearity)
        temb_dim = hidden_dim if (conditional or num_classes > 0) else None
        # TimeEmbedding(nf) embeds into nf features and maps to 4 nf = hidden_dim.
        self.time_embed = (TimeEmbedding(embedding_type, hidden_dim // 4, act, fourier_scale)
                           if conditional else None)
        self.class_embed = None
        if num_classes > 0:
            self.class_embed = nn.Embedding(num_classes + 1, hidden_dim)
            nn.init.zeros_(self.class_embed.weight)
        self.linear_in = nn.Linear(data_dim, hidden_dim)
        self.blocks = nn.ModuleList(
            MLPBlock(hidden_dim, temb_dim, act, dropout) for _ in range(num_blocks))
        self.norm_out = nn.LayerNorm(hidden_dim)
        self.linear_out = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor,
                y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Network output for points x at noise labels.

        Args:
            x: (B, D) data.
            labels: (B,) float noise labels (t*999 for VP, sigma for VE with 'fourier').
            y: optional (B,) LongTensor of class labels; None = null label.

        Returns:
            (B, D), or (B, 2 D) with learned_variance.
        """
        labels = check_inputs(x, labels, (self.data_dim,))
        temb = embed_conditions(labels, y, self.time_embed, self.class_embed)
        h = self.linear_in(x)
        for block in self.blocks:
            h = block(h, temb)
        out = self.linear_out(self.act(self.norm_out(h)))
        if self.scale_by_sigma:
            out = out / per_example(labels, out)
        return out
