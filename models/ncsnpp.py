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

from .layers import (AttnBlock, Combine, Downsample, DownLevel, MidBlock, ResBlock, TimeEmbedding,
                     Upsample, UpLevel, check_choice, check_inputs, conv3x3, embed_conditions,
                     get_activation, group_norm, per_example, resolution_ladder)

__all__ = ["NCSNpp"]


def ncsnpp_groups(channels: int) -> int:
    """GroupNorm groups in NCSN++: min(C // 4, 32)."""
    return min(channels // 4, 32)


class NCSNpp(nn.Module):
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
                 scale_by_sigma: bool = False, conditional: bool = True, num_classes: int = 0):
        super().__init__()
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
        if nf < 4 or num_res_blocks < 1 or num_classes < 0 or not 0 <= dropout < 1:
            raise ValueError(
                f"Need nf >= 4, num_res_blocks >= 1, num_classes >= 0 and 0 <= dropout < 1; got "
                f"nf={nf}, num_res_blocks={num_res_blocks}, num_classes={num_classes}, "
                f"dropout={dropout}.")
        ch_mult = tuple(int(m) for m in ch_mult)
        attn_resolutions = tuple(int(r) for r in attn_resolutions)
        ladder = resolution_ladder(image_size, len(ch_mult), attn_resolutions)

        self.image_size, self.num_channels = image_size, num_channels
        self.nf, self.ch_mult, self.num_res_blocks = nf, ch_mult, num_res_blocks
        self.attn_resolutions = attn_resolutions
        self.embedding_type = check_choice("embedding_type", embedding_type,
                                           ("fourier", "positional"))
        self.conditional, self.num_classes = bool(conditional), int(num_classes)
        self.scale_by_sigma = bool(scale_by_sigma)
        self.skip_rescale = bool(skip_rescale)
        self.act = act = get_activation(nonlinearity)
        fir_kernel = tuple(fir_kernel) if fir else None
        temb_dim = 4 * nf if (conditional or num_classes > 0) else None

        self.time_embed = (TimeEmbedding(self.embedding_type, nf, act, fourier_scale)
                           if conditional else None)
        self.class_embed = None
        if num_classes > 0:
            self.class_embed = nn.Embedding(num_classes + 1, 4 * nf)
            nn.init.zeros_(self.class_embed.weight)

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
            level = DownLevel()
            for _ in range(num_res_blocks):
                out_ch = nf * ch_mult[i]
                level.blocks.append(resblock(in_ch, out_ch))
                in_ch = out_ch
                if res in attn_resolutions:
                    level.attns.append(attention(in_ch))
                skip_channels.append(in_ch)
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
            level = UpLevel()
            for _ in range(num_res_blocks + 1):
                out_ch = nf * ch_mult[i]
                level.blocks.append(resblock(in_ch + skip_channels.pop(), out_ch))
                in_ch = out_ch
            if res in attn_resolutions:
                level.attn = attention(in_ch)
            coarsest = i == len(ladder) - 1
            if self.progressive == "output_skip":
                if not coarsest:
                    level.pyramid_upsample = Upsample(pyramid_ch, with_conv=False,
                                                      fir_kernel=fir_kernel)
                level.pyramid_norm = group_norm(in_ch, ncsnpp_groups(in_ch))
                level.pyramid_conv = conv3x3(in_ch, num_channels, init_scale=init_scale)
                pyramid_ch = num_channels
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
            self.conv_out = conv3x3(in_ch, num_channels, init_scale=init_scale)
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
            (B, C, S, S).
        """
        labels = check_inputs(x, labels, (self.num_channels, self.image_size, self.image_size))
        temb = embed_conditions(labels, y, self.time_embed, self.class_embed)
        biggan = self.resblock_type == "biggan"

        # Encoder.
        h = self.conv_in(x)
        skips = [h]
        pyramid = x
        for level in self.down.values():
            for i, block in enumerate(level.blocks):
                h = block(h, temb)
                if len(level.attns) > 0:
                    h = level.attns[i](h)
                skips.append(h)
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
            for block in level.blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), temb)
            if level.attn is not None:
                h = level.attn(h)
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
        if self.scale_by_sigma:
            h = h / per_example(labels, h)
        return h

    def _rescaled_sum(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a + b).div_(math.sqrt(2.0)) if self.skip_rescale else a + b
