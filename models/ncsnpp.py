"""NCSN++ and DDPM++: the score networks of Song et al. (ICLR 2021), Sec. 4.4 and Appendix H.

One configurable U-Net covers both families (official score_sde_pytorch `models/ncsnpp.py`):

* NCSN++ (VE): Fourier embedding of log sigma, BigGAN blocks with FIR resampling, an input
  pyramid ('residual'), skip rescaling by 1/sqrt(2);
* DDPM++ (VP): sinusoidal embedding of t*999, plain resampling, no pyramids;
* the "deep" variants double `num_res_blocks`.

Layout of the state dict (here for 32x32, ch_mult=(1, 2, 2, 2)):
    time_embed.{fourier,linear1,linear2}   class_embed (num_classes > 0)   conv_in
    down["32x32"].blocks[i], .attns[i], .downsample, .pyramid_downsample, .pyramid_combine
    ... down["4x4"]                       mid.{block1,attn,block2}
    up["4x4"].blocks[i] (num_res_blocks + 1), .attn, .pyramid_{upsample,norm,conv}, .upsample
    ... up["32x32"]                       norm_out, conv_out (unless progressive='output_skip')
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn as nn

from .layers import (AttnBlock, Combine, Downsample, MidBlock, ResBlock, UNet, Upsample,
                     check_choice, conv3x3, group_norm, output_channels)

__all__ = ["NCSNpp"]


def ncsnpp_groups(channels: int) -> int:
    """GroupNorm groups in NCSN++: min(C // 4, 32)."""
    return min(channels // 4, 32)


class NCSNpp(UNet):
    """NCSN++ / DDPM++ score network: forward(x, labels, y=None) -> tensor shaped like x.

    Defaults are NCSN++ for CIFAR-10 (ve/cifar10_ncsnpp_continuous) except `scale_by_sigma`.

    Args:
        image_size: input height = width S; must be divisible by 2**(len(ch_mult) - 1).
        num_channels: image channels C.
        nf: base width; level i has nf * ch_mult[i] channels; time embedding width 4 nf.
        ch_mult: width multipliers, one per resolution (S, S/2, ...).
        num_res_blocks: residual blocks per encoder level (decoder levels get one more).
        attn_resolutions: resolutions with self-attention (must be on the ladder).
        dropout: dropout probability inside residual blocks.
        resamp_with_conv: learned 3x3 convolution in Downsample/Upsample (resblock_type='ddpm').
        fir: FIR (StyleGAN2) resampling instead of nearest / average pooling.
        fir_kernel: FIR taps.
        skip_rescale: divide residual sums by sqrt(2).
        resblock_type: 'biggan' (blocks resample) or 'ddpm' (separate Up/Downsample layers).
        progressive: output pyramid, 'none' | 'output_skip' | 'residual'.
        progressive_input: input pyramid, 'none' | 'input_skip' | 'residual'.
        progressive_combine: how 'input_skip' merges, 'sum' | 'cat'.
        embedding_type: 'fourier' (of log(labels); labels are sigmas) or 'positional' (of labels).
        fourier_scale: std of the Fourier frequencies.
        init_scale: init scale of the last layer of each residual branch and of the output.
        conv_size: convolution size; only 3 (official).
        nonlinearity: 'swish' | 'silu' | 'elu' | 'relu' | 'lrelu'.
        normalization: only 'GroupNorm' (official).
        attention_type: only 'ddpm' (official).
        scale_by_sigma: divide the output by `labels` read as sigma (continuous VE only).
        conditional: condition on the noise level (time embedding); official networks always do.
        num_classes: number of classes for class conditioning, 0 for none. The class embedding
            has num_classes + 1 rows; row num_classes is the null label.
        learned_variance: output 2 C channels, eps and the variance output v of improved DDPM
            (Nichol & Dhariwal 2021; `sde_lib.learned_variance`).

    Raises:
        ValueError: for an unknown option value or a size the network cannot take.
    """

    def __init__(self, *, image_size: int = 32, num_channels: int = 3, nf: int = 128,
                 ch_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 4,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.1,
                 resamp_with_conv: bool = True, fir: bool = True,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), skip_rescale: bool = True,
                 resblock_type: str = "biggan", progressive: str = "none",
                 progressive_input: str = "residual", progressive_combine: str = "sum",
                 embedding_type: str = "fourier", fourier_scale: float = 16.0,
                 init_scale: float = 0.0, conv_size: int = 3, nonlinearity: str = "swish",
                 normalization: str = "GroupNorm", attention_type: str = "ddpm",
                 scale_by_sigma: bool = False, conditional: bool = True, num_classes: int = 0,
                 learned_variance: bool = False):
        super().__init__()
        out_ch = output_channels(num_channels, learned_variance, scale_by_sigma)
        self.resblock_type = check_choice("resblock_type", resblock_type, ("ddpm", "biggan"))
        self.progressive = check_choice("progressive", progressive,
                                        ("none", "output_skip", "residual"))
        self.progressive_input = check_choice("progressive_input", progressive_input,
                                              ("none", "input_skip", "residual"))
        combine = check_choice("progressive_combine", progressive_combine, ("sum", "cat"))
        check_choice("normalization", normalization, ("groupnorm",))
        check_choice("attention_type", attention_type, ("ddpm",))
        if conv_size != 3:
            raise ValueError(
                f"conv_size={conv_size} is not supported; NCSN++ uses 3x3 convolutions.")
        self.embedding_type = check_choice("embedding_type", embedding_type,
                                           ("fourier", "positional"))
        ladder, temb_dim = self._init_unet(
            image_size=image_size, num_channels=num_channels, nf=nf, ch_mult=ch_mult,
            num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions, dropout=dropout,
            nonlinearity=nonlinearity, conditional=conditional, num_classes=num_classes,
            scale_by_sigma=scale_by_sigma, embedding_type=self.embedding_type,
            fourier_scale=fourier_scale)
        act = self.act
        self.skip_rescale = bool(skip_rescale)
        fir_kernel = tuple(fir_kernel) if fir else None

        def resblock(in_ch, out_ch=None, resample=None):
            return ResBlock(in_ch, out_ch or in_ch, temb_dim=temb_dim, act=act,
                            num_groups=ncsnpp_groups, dropout=dropout, skip_rescale=skip_rescale,
                            init_scale=init_scale, kind=self.resblock_type, resample=resample,
                            fir_kernel=fir_kernel)

        def attention(channels):
            return AttnBlock(channels, num_groups=ncsnpp_groups(channels),
                             skip_rescale=skip_rescale, init_scale=init_scale)

        # Encoder. Channel bookkeeping follows the official constructor exactly.
        self.conv_in = conv3x3(num_channels, nf)
        skip_channels = [nf]
        in_ch = nf
        pyramid_ch = num_channels
        self.down = nn.ModuleDict()
        for i, res in enumerate(ladder):
            level, in_ch = self._down_level(i, res, in_ch, resblock, attention, skip_channels)
            if i != len(ladder) - 1:
                if self.resblock_type == "ddpm":
                    level.downsample = Downsample(in_ch, with_conv=resamp_with_conv,
                                                  fir_kernel=fir_kernel)
                else:
                    level.downsample = resblock(in_ch, resample="down")
                if self.progressive_input == "input_skip":
                    level.pyramid_downsample = Downsample(pyramid_ch, with_conv=False,
                                                          fir_kernel=fir_kernel)
                    level.pyramid_combine = Combine(pyramid_ch, in_ch, combine)
                    if combine == "cat":
                        in_ch *= 2
                elif self.progressive_input == "residual":
                    level.pyramid_downsample = Downsample(pyramid_ch, in_ch, with_conv=True,
                                                          fir_kernel=fir_kernel)
                    pyramid_ch = in_ch
                skip_channels.append(in_ch)
            self.down[f"{res}x{res}"] = level

        in_ch = skip_channels[-1]
        self.mid = MidBlock(resblock(in_ch), attention(in_ch), resblock(in_ch))

        # Decoder, coarsest level first.
        pyramid_ch = 0
        self.up = nn.ModuleDict()
        for i in reversed(range(len(ladder))):
            res = ladder[i]
            level, in_ch = self._up_level(i, res, in_ch, resblock, attention, skip_channels)
            coarsest = i == len(ladder) - 1
            if self.progressive == "output_skip":
                if not coarsest:
                    level.pyramid_upsample = Upsample(pyramid_ch, with_conv=False,
                                                      fir_kernel=fir_kernel)
                level.pyramid_norm = group_norm(in_ch, ncsnpp_groups(in_ch))
                level.pyramid_conv = conv3x3(in_ch, out_ch, init_scale=init_scale)
                pyramid_ch = out_ch
            elif self.progressive == "residual":
                if coarsest:
                    level.pyramid_norm = group_norm(in_ch, ncsnpp_groups(in_ch))
                    level.pyramid_conv = conv3x3(in_ch, in_ch)
                else:
                    level.pyramid_upsample = Upsample(pyramid_ch, in_ch, with_conv=True,
                                                      fir_kernel=fir_kernel)
                pyramid_ch = in_ch
            if i != 0:
                if self.resblock_type == "ddpm":
                    level.upsample = Upsample(in_ch, with_conv=resamp_with_conv,
                                              fir_kernel=fir_kernel)
                else:
                    level.upsample = resblock(in_ch, resample="up")
            self.up[f"{res}x{res}"] = level
        if skip_channels:  # pragma: no cover - guards the bookkeeping above
            raise RuntimeError("internal error: unused skip connections")

        if self.progressive != "output_skip":
            self.norm_out = group_norm(in_ch, ncsnpp_groups(in_ch))
            self.conv_out = conv3x3(in_ch, out_ch, init_scale=init_scale)
        else:
            self.norm_out = self.conv_out = None

    def forward(self, x: torch.Tensor, labels: torch.Tensor,
                y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Network output for images x at noise labels.

        Args:
            x: (B, C, S, S) images, already scaled to the range the network is trained on.
            labels: (B,) float noise labels: sigma for Fourier embedding (continuous VE),
                t*999 or a discrete step index for positional embedding.
            y: optional (B,) LongTensor of class labels in [0, num_classes]; None = null label.

        Returns:
            (B, C, S, S), or (B, 2 C, S, S) with learned_variance.
        """
        labels, temb = self._conditioning(x, labels, y)
        biggan = self.resblock_type == "biggan"

        # Encoder.
        h = self.conv_in(x)
        skips = [h]
        pyramid = x
        for level in self.down.values():
            h = level.forward_blocks(h, temb, skips)
            if level.downsample is not None:
                h = level.downsample(h, temb) if biggan else level.downsample(h)
                if self.progressive_input == "input_skip":
                    pyramid = level.pyramid_downsample(pyramid)
                    h = level.pyramid_combine(pyramid, h)
                elif self.progressive_input == "residual":
                    pyramid = self._rescaled_sum(level.pyramid_downsample(pyramid), h)
                    h = pyramid
                skips.append(h)

        h = self.mid(h, temb)

        # Decoder.
        pyramid = None
        for level in self.up.values():
            h = level.forward_blocks(h, temb, skips)
            if self.progressive == "output_skip":
                out = level.pyramid_conv(self.act(level.pyramid_norm(h)))
                pyramid = out if pyramid is None else level.pyramid_upsample(pyramid) + out
            elif self.progressive == "residual":
                if pyramid is None:
                    pyramid = level.pyramid_conv(self.act(level.pyramid_norm(h)))
                else:
                    pyramid = self._rescaled_sum(level.pyramid_upsample(pyramid), h)
                    h = pyramid
            if level.upsample is not None:
                h = level.upsample(h, temb) if biggan else level.upsample(h)

        if self.progressive == "output_skip":
            h = pyramid
        else:
            h = self.conv_out(self.act(self.norm_out(h)))
        return self._scale_output(h, labels)

    def _rescaled_sum(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a + b).div_(math.sqrt(2.0)) if self.skip_rescale else a + b
