"""The DDPM U-Net of Ho et al. (NeurIPS 2020), Appendix B, as in score_sde_pytorch `models/ddpm.py`.

Wide-ResNet blocks with GroupNorm(32), self-attention at the listed resolutions, sinusoidal time
embedding of the labels (t*999 or a step index), nearest/'SAME'-strided resampling.

State-dict layout (32x32, ch_mult=(1, 2, 2, 2)):
    time_embed.{linear1,linear2}   class_embed (num_classes > 0)   conv_in
    down["32x32"].blocks[i], .attns[i], .downsample   ...   mid.{block1,attn,block2}
    up["4x4"].blocks[i] (num_res_blocks + 1), .attn, .upsample   ...   norm_out, conv_out
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn

from .layers import (AttnBlock, Downsample, MidBlock, ResBlock, UNet, Upsample,
                     check_choice, conv3x3, group_norm, output_channels)

__all__ = ["DDPM"]

DDPM_GROUPS = 32  # GroupNorm groups everywhere in the DDPM U-Net.


def ddpm_groups(channels: int) -> int:
    """GroupNorm groups in DDPM: always 32."""
    return DDPM_GROUPS


class DDPM(UNet):
    """DDPM U-Net score network: forward(x, labels, y=None) -> tensor shaped like x.

    Defaults are the CIFAR-10 DDPM (vp/ddpm/cifar10_continuous: 35.7M parameters).

    Args:
        image_size: input height = width S; must be divisible by 2**(len(ch_mult) - 1).
        num_channels: image channels C.
        nf: base width (a multiple of 32, for GroupNorm(32)); time embedding width 4 nf.
        ch_mult: width multipliers, one per resolution.
        num_res_blocks: residual blocks per encoder level (decoder levels get one more).
        attn_resolutions: resolutions with self-attention.
        dropout: dropout probability inside residual blocks.
        resamp_with_conv: learned 3x3 convolution when resampling.
        nonlinearity: 'swish' | 'silu' | 'elu' | 'relu' | 'lrelu'.
        normalization: only 'GroupNorm'.
        embedding_type: only 'positional' (DDPM embeds the labels sinusoidally).
        scale_by_sigma: divide the output by `labels` read as sigma.
        conditional: condition on the noise level (time embedding).
        num_classes: number of classes (0 = none); row num_classes of the class embedding is the
            null label.
        learned_variance: output 2 C channels, eps and the variance output v of improved DDPM
            (Nichol & Dhariwal 2021; `sde_lib.learned_variance`).

    Raises:
        ValueError: for an unknown option value or a size the network cannot take.
    """

    def __init__(self, *, image_size: int = 32, num_channels: int = 3, nf: int = 128,
                 ch_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.1,
                 resamp_with_conv: bool = True, nonlinearity: str = "swish",
                 normalization: str = "GroupNorm", embedding_type: str = "positional",
                 scale_by_sigma: bool = False, conditional: bool = True, num_classes: int = 0,
                 learned_variance: bool = False):
        super().__init__()
        check_choice("normalization", normalization, ("groupnorm",))
        out_ch = output_channels(num_channels, learned_variance, scale_by_sigma)
        if str(embedding_type).lower() != "positional":
            raise ValueError(
                f"embedding_type={embedding_type!r}: the DDPM U-Net always uses the sinusoidal "
                f"('positional') embedding; use model 'ncsnpp' for Fourier features.")
        ladder, temb_dim = self._init_unet(
            image_size=image_size, num_channels=num_channels, nf=nf, ch_mult=ch_mult,
            num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions, dropout=dropout,
            nonlinearity=nonlinearity, conditional=conditional, num_classes=num_classes,
            scale_by_sigma=scale_by_sigma, embedding_type="positional")
        act = self.act

        def resblock(in_ch, out_ch=None):
            return ResBlock(in_ch, out_ch or in_ch, temb_dim=temb_dim, act=act,
                            num_groups=ddpm_groups, dropout=dropout, init_scale=0.0)

        def attention(channels):
            return AttnBlock(channels, num_groups=DDPM_GROUPS, init_scale=0.0)

        self.conv_in = conv3x3(num_channels, nf)
        skip_channels = [nf]
        in_ch = nf
        self.down = nn.ModuleDict()
        for i, res in enumerate(ladder):
            level, in_ch = self._down_level(i, res, in_ch, resblock, attention, skip_channels)
            if i != len(ladder) - 1:
                level.downsample = Downsample(in_ch, with_conv=resamp_with_conv)
                skip_channels.append(in_ch)
            self.down[f"{res}x{res}"] = level

        self.mid = MidBlock(resblock(in_ch), attention(in_ch), resblock(in_ch))

        self.up = nn.ModuleDict()
        for i in reversed(range(len(ladder))):
            res = ladder[i]
            level, in_ch = self._up_level(i, res, in_ch, resblock, attention, skip_channels)
            if i != 0:
                level.upsample = Upsample(in_ch, with_conv=resamp_with_conv)
            self.up[f"{res}x{res}"] = level

        self.norm_out = group_norm(in_ch, DDPM_GROUPS)
        self.conv_out = conv3x3(in_ch, out_ch, init_scale=0.0)

    def forward(self, x: torch.Tensor, labels: torch.Tensor,
                y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Network output for images x at noise labels.

        Args:
            x: (B, C, S, S) images, already scaled (e.g. to [-1, 1]).
            labels: (B,) time labels (t*999 for continuous VP, the step index for discrete DDPM).
            y: optional (B,) LongTensor of class labels; None = null label.

        Returns:
            (B, C, S, S), or (B, 2 C, S, S) with learned_variance.
        """
        labels, temb = self._conditioning(x, labels, y)
        h = self.conv_in(x)
        skips = [h]
        for level in self.down.values():
            h = level.forward_blocks(h, temb, skips)
            if level.downsample is not None:
                h = level.downsample(h)
                skips.append(h)
        h = self.mid(h, temb)
        for level in self.up.values():
            h = level.forward_blocks(h, temb, skips)
            if level.upsample is not None:
                h = level.upsample(h)
        return self._scale_output(self.conv_out(self.act(self.norm_out(h))), labels)
