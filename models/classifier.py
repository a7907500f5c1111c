"""Noise-conditional classifiers p_t(y | x_t) for classifier guidance (Song et al. 2021, App. I.1;
Dhariwal & Nichol 2021, Sec. 4.1).

Every classifier has forward(x, labels) -> logits (B, num_classes), with `labels` the same time
labels a score network receives (t*999 for VP, sigma(t) for VE). Normalisation is per example
(LayerNorm, GroupNorm): classifier guidance differentiates the sum of per-example log-probabilities
over the batch, which batch statistics would couple.

* `MLPClassifier` ("mlp"): the residual MLP of `ScoreMLP` with a linear head, for vector data.
* `ConvClassifier` ("conv"): the encoder half of the DDPM U-Net (residual blocks with the time
  embedding, downsampling between levels), then GroupNorm, global average pooling and a linear
  head; Dhariwal & Nichol's classifier is the same trunk with an attention pool.
"""
from typing import Sequence

import torch
import torch.nn as nn

from .layers import (DownLevel, Downsample, ResBlock, TimeEmbedding, check_inputs, conv3x3,
                     get_activation, group_norm, resolution_ladder)
from .mlp import MLPBlock

__all__ = ["MLPClassifier", "ConvClassifier"]


def _check_sizes(num_classes: int, dropout: float, **positive) -> None:
    bad = {k: v for k, v in positive.items() if v < 1}
    if num_classes < 2 or not 0 <= dropout < 1 or bad:
        raise ValueError(f"Need num_classes >= 2, 0 <= dropout < 1 and positive sizes; got "
                         f"num_classes={num_classes}, dropout={dropout}, {bad or ''}.")


class MLPClassifier(nn.Module):
    """Residual MLP classifier: forward(x, labels) -> logits (B, num_classes) for x (B, D).

    Args:
        data_dim: D.
        num_classes: K >= 2.
        hidden_dim: width of the residual stream (a multiple of 4, >= 16).
        num_blocks: residual blocks, each with the time embedding added.
        embedding_type: 'positional' (sinusoidal of the labels) or 'fourier' (of log labels).
        fourier_scale: std of the Fourier frequencies.
        nonlinearity: 'swish' | 'silu' | 'elu' | 'relu' | 'lrelu'.
        dropout: dropout probability inside the blocks.

    Raises:
        ValueError: for invalid sizes or option values.
    """

    def __init__(self, *, data_dim: int = 2, num_classes: int = 8, hidden_dim: int = 128,
                 num_blocks: int = 3, embedding_type: str = "positional",
                 fourier_scale: float = 16.0, nonlinearity: str = "swish", dropout: float = 0.0):
        super().__init__()
        _check_sizes(num_classes, dropout, data_dim=data_dim, num_blocks=num_blocks)
        if hidden_dim < 16 or hidden_dim % 4:
            raise ValueError(f"hidden_dim={hidden_dim} must be a multiple of 4 and >= 16.")
        self.data_dim, self.num_classes = data_dim, num_classes
        self.act = act = get_activation(nonlinearity)
        self.time_embed = TimeEmbedding(embedding_type, hidden_dim // 4, act, fourier_scale)
        self.linear_in = nn.Linear(data_dim, hidden_dim)
        self.blocks = nn.ModuleList(
            MLPBlock(hidden_dim, hidden_dim, act, dropout) for _ in range(num_blocks))
        self.norm_out = nn.LayerNorm(hidden_dim)
        self.head = nn.Linear(hidden_dim, num_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, D) points at (B,) time labels -> (B, K) logits."""
        labels = check_inputs(x, labels, (self.data_dim,))
        temb = self.time_embed(labels)
        h = self.linear_in(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.head(self.act(self.norm_out(h)))


def _groups(channels: int) -> int:
    """GroupNorm groups as NCSN++: min(C // 4, 32)."""
    return max(1, min(channels // 4, 32))


class ConvClassifier(nn.Module):
    """The encoder half of the DDPM U-Net with a linear head: forward(x, labels) -> logits (B, K).

    conv_in, then per resolution `num_res_blocks` residual blocks (time embedding added) and a
    downsampling step (not after the last level), then GroupNorm, activation, the mean over
    pixels and a linear layer. State dict: time_embed, conv_in, down["32x32"].blocks[i],
    .downsample, ..., norm_out, head.

    Args:
        image_size: S; divisible by 2**(len(ch_mult) - 1).
        num_channels: image channels C.
        num_classes: K >= 2.
        nf: base width; level i has nf * ch_mult[i] channels; time embedding 4 nf.
        ch_mult: one width multiplier per resolution S, S/2, ...
        num_res_blocks: residual blocks per level.
        embedding_type: 'positional' (of the labels, 999 t) or 'fourier' (of log sigma).
        fourier_scale: std of the Fourier frequencies.
        nonlinearity: 'swish' | 'silu' | 'elu' | 'relu' | 'lrelu'.
        dropout: dropout probability inside the residual blocks.

    Raises:
        ValueError: for invalid sizes or option values.
    """

    def __init__(self, *, image_size: int = 32, num_channels: int = 3, num_classes: int = 10,
                 nf: int = 64, ch_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 1,
                 embedding_type: str = "positional", fourier_scale: float = 16.0,
                 nonlinearity: str = "swish", dropout: float = 0.0):
        super().__init__()
        _check_sizes(num_classes, dropout, nf=nf, num_res_blocks=num_res_blocks)
        ch_mult = tuple(int(m) for m in ch_mult)
        ladder = resolution_ladder(image_size, len(ch_mult), ())
        self.image_size, self.num_channels, self.num_classes = image_size, num_channels, num_classes
        self.act = act = get_activation(nonlinearity)
        self.time_embed = TimeEmbedding(embedding_type, nf, act, fourier_scale)
        self.conv_in = conv3x3(num_channels, nf)
        in_ch = nf
        self.down = nn.ModuleDict()
        def resblock(in_ch, out_ch):
            return ResBlock(in_ch, out_ch, temb_dim=4 * nf, act=act, num_groups=_groups,
                            dropout=dropout, init_scale=0.0)

        for i, res in enumerate(ladder):
            level = DownLevel(in_ch, nf * ch_mult[i], num_res_blocks, resblock)
            in_ch = nf * ch_mult[i]
            if i != len(ladder) - 1:
                level.downsample = Downsample(in_ch, with_conv=True)
            self.down[f"{res}x{res}"] = level
        self.norm_out = group_norm(in_ch, _groups(in_ch))
        self.head = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) images at (B,) time labels -> (B, K) logits."""
        labels = check_inputs(x, labels, (self.num_channels, self.image_size, self.image_size))
        temb = self.time_embed(labels)
        h = self.conv_in(x)
        for level in self.down.values():
            h = level.forward_blocks(h, temb)
            if level.downsample is not None:
                h = level.downsample(h)
        h = self.act(self.norm_out(h)).mean(dim=(2, 3))
        return self.head(h)
