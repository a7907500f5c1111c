"""Building blocks shared by the DDPM and NCSN++ score networks.

Facts (formulas, initialisation, which layer sits where) follow score_sde_pytorch
`models/layers.py` and `models/layerspp.py` (Song et al. 2021), which port DDPM (Ho et al. 2020,
Appendix B) and NCSN++ (Song et al. 2021, Appendix H). Parameter shapes match the official ones so
that checkpoints import without reshaping; names are ours and say what each part is.

All image tensors are (B, C, H, W); time embeddings are (B, temb_dim).
"""
import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import fir

__all__ = [
    "ACTIVATIONS",
    "get_activation",
    "default_init_",
    "conv3x3",
    "conv1x1",
    "group_norm",
    "sinusoidal_embedding",
    "check_choice",
    "resolution_ladder",
    "per_example",
    "check_inputs",
    "TimeEmbedding",
    "embed_conditions",
    "GaussianFourierProjection",
    "PointwiseLinear",
    "AttnBlock",
    "ResBlock",
    "Downsample",
    "Upsample",
    "Combine",
    "DownLevel",
    "UpLevel",
    "MidBlock",
]

ACTIVATIONS = {
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "lrelu": lambda: nn.LeakyReLU(negative_slope=0.2),
}


def get_activation(name: str) -> nn.Module:
    """Activation module by the official config name ('swish' = SiLU, 'elu', 'relu', 'lrelu')."""
    key = str(name).lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"Unknown nonlinearity {name!r}; valid: {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[key]()


def default_init_(weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """DDPM initialisation in place: variance scaling, fan_avg, uniform (score_sde `default_init`).

    Bound sqrt(3 * scale / fan_avg) with fan_avg = (shape[0] + shape[1]) / 2 * prod(shape[2:]);
    scale 0 means 1e-10, as in the official code (a "zero" layer that still has a direction).
    """
    scale = 1e-10 if scale == 0 else scale
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    fan_avg = (weight.shape[0] + weight.shape[1]) * receptive / 2
    bound = math.sqrt(3.0 * scale / fan_avg)
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def conv3x3(in_ch: int, out_ch: int, *, stride: int = 1, padding: int = 1,
            init_scale: float = 1.0) -> nn.Conv2d:
    """3x3 convolution with DDPM initialisation and zero bias."""
    conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding)
    default_init_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def conv1x1(in_ch: int, out_ch: int, *, init_scale: float = 1.0) -> nn.Conv2d:
    """1x1 convolution with DDPM initialisation and zero bias."""
    conv = nn.Conv2d(in_ch, out_ch, 1)
    default_init_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def dense(in_dim: int, out_dim: int) -> nn.Linear:
    """Linear layer with DDPM initialisation and zero bias."""
    linear = nn.Linear(in_dim, out_dim)
    default_init_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


def group_norm(channels: int, num_groups: int) -> nn.GroupNorm:
    """GroupNorm with eps 1e-6 (official); a clear error if `channels` does not split evenly."""
    if num_groups < 1 or channels % num_groups:
        raise ValueError(
            f"GroupNorm cannot split {channels} channels into {num_groups} groups; choose nf and "
            f"ch_mult so that every width is a multiple of the group count.")
    return nn.GroupNorm(num_groups, channels, eps=1e-6)


def sinusoidal_embedding(labels: torch.Tensor, dim: int, max_positions: float = 10000.0
                         ) -> torch.Tensor:
    """Transformer sinusoidal embedding of (B,) labels -> (B, dim) (DDPM, Ho et al. 2020).

    Frequencies exp(-log(max_positions) * i / (dim/2 - 1)); [sin, cos] halves; zero-padded if `dim`
    is odd. Computed in float32 in the official order of operations.
    """
    half = dim // 2
    step = math.log(max_positions) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=labels.device) * -step)
    args = labels.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


def check_choice(option: str, value: str, choices: Sequence[str]) -> str:
    """Lower-cased `value` if it is one of `choices`; otherwise a ValueError naming the option."""
    key = str(value).lower()
    if key not in choices:
        raise ValueError(f"Unknown {option} {value!r}; valid: {list(choices)}.")
    return key


def resolution_ladder(image_size: int, num_levels: int,
                      attn_resolutions: Sequence[int]) -> list:
    """Resolutions [S, S/2, ..., S/2**(L-1)] of a U-Net with `num_levels` levels.

    Raises:
        ValueError: if S is not a positive multiple of 2**(L-1), or an attention resolution is not
            on the ladder.
    """
    if num_levels < 1:
        raise ValueError("ch_mult must have at least one entry (one U-Net level).")
    factor = 2 ** (num_levels - 1)
    if image_size < 1 or image_size % factor:
        raise ValueError(
            f"image_size={image_size} is not divisible by 2**(len(ch_mult)-1)={factor}; use an "
            f"image size that is a multiple of {factor}, or fewer ch_mult entries.")
    ladder = [image_size // 2 ** i for i in range(num_levels)]
    for res in attn_resolutions:
        if res not in ladder:
            raise ValueError(
                f"attn_resolutions contains {res}, which is not a resolution of this network "
                f"{ladder}; pick attention resolutions from that list.")
    return ladder


def output_channels(num_channels: int, learned_variance: bool, scale_by_sigma: bool) -> int:
    """Channels of a score network's output: C, or 2 C with learned variances (eps, then v of
    improved DDPM; Nichol & Dhariwal 2021).

    Raises:
        ValueError: learned variances with scale_by_sigma (v must not be divided by sigma).
    """
    if learned_variance and scale_by_sigma:
        raise ValueError("learned_variance=True outputs eps and a variance interpolation v; scale_by_sigma"
                         " would divide v by sigma; set scale_by_sigma=False")
    return 2 * num_channels if learned_variance else num_channels


def per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) tensor to broadcast against `like` of shape (B, ...)."""
    return v.reshape(v.shape[0], *([1] * (like.dim() - 1)))


def check_inputs(x: torch.Tensor, labels: torch.Tensor, sample_shape: Sequence[int]
                 ) -> torch.Tensor:
    """Validate x (B, *sample_shape) and labels (B,) or a scalar; return labels as (B,).

    Raises:
        ValueError: on a shape mismatch, naming the expected shape.
    """
    if tuple(x.shape[1:]) != tuple(sample_shape):
        raise ValueError(
            f"Expected x of shape (B, {', '.join(map(str, sample_shape))}), got "
            f"{tuple(x.shape)}; the network was built for that shape.")
    if labels.dim() == 0:
        labels = labels.expand(x.shape[0])
    if labels.shape != (x.shape[0],):
        raise ValueError(
            f"labels must have shape (B,) = ({x.shape[0]},), got {tuple(labels.shape)}.")
    return labels


class TimeEmbedding(nn.Module):
    """Noise-level embedding -> MLP -> (B, 4 nf), as in DDPM and NCSN++.

    'positional': sinusoidal embedding of the labels themselves (DDPM; labels t*999 or a step
    index). 'fourier': Gaussian Fourier features of log(labels) (NCSN++; labels are sigmas).
    Then linear1 -> act -> linear2.

    Args:
        kind: 'positional' or 'fourier'.
        nf: base width; the sinusoidal embedding has nf features, the Fourier one 2 nf.
        act: activation module.
        fourier_scale: std of the Fourier frequencies.
    """

    def __init__(self, kind: str, nf: int, act: nn.Module, fourier_scale: float = 16.0):
        super().__init__()
        self.kind = check_choice("embedding_type", kind, ("fourier", "positional"))
        self.nf = nf
        if self.kind == "fourier":
            self.fourier = GaussianFourierProjection(nf, fourier_scale)
            in_dim = 2 * nf
        else:
            self.fourier = None
            in_dim = nf
        self.linear1 = dense(in_dim, 4 * nf)
        self.linear2 = dense(4 * nf, 4 * nf)
        self.act = act

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, 4 nf)."""
        if self.fourier is not None:
            emb = self.fourier(torch.log(labels))
        else:
            emb = sinusoidal_embedding(labels, self.nf)
        return self.linear2(self.act(self.linear1(emb)))


def embed_conditions(labels: torch.Tensor, y: Optional[torch.Tensor],
                     time_embed: Optional[nn.Module], class_embed: Optional[nn.Embedding]
                     ) -> Optional[torch.Tensor]:
    """Sum of the time embedding and the class embedding; None when the network has neither.

    The class embedding has num_classes + 1 rows; the last is the null label, used when `y` is
    None (unconditional; classifier-free guidance).

    Raises:
        ValueError: if `y` is given to a network without class conditioning.
    """
    temb = time_embed(labels) if time_embed is not None else None
    if class_embed is None:
        if y is not None:
            raise ValueError("Class labels y were given to a network with num_classes=0.")
        return temb
    if y is None:
        y = torch.full(labels.shape, class_embed.num_embeddings - 1, dtype=torch.long,
                       device=labels.device)
    c = class_embed(y)
    return c if temb is None else temb + c


class GaussianFourierProjection(nn.Module):
    """Random Fourier features [sin(2 pi w s), cos(2 pi w s)] of a scalar s (Tancik et al. 2020).

    NCSN++ (Song et al. 2021, Sec. H.1) embeds s = log(sigma) with w ~ N(0, scale^2), frozen.

    Args:
        embedding_size: number of frequencies; the output has 2 * embedding_size features.
        scale: standard deviation of the frequencies (`fourier_scale`, 16 in NCSN++).
    """

    def __init__(self, embedding_size: int, scale: float = 16.0):
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, 2 * embedding_size)."""
        # Same order of float32 operations as the official layer: the arguments reach ~1e3,
        # where a reordering changes sin() by ~1e-4.
        proj = s[:, None] * self.frequencies[None, :] * 2 * math.pi
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class PointwiseLinear(nn.Module):
    """A linear map over channels at every pixel ("network in network", official `NIN`).

    `weight` is stored (in, out) as in the official layer, so checkpoints load unchanged.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        init_scale: DDPM init scale (official default 0.1).
    """

    def __init__(self, in_ch: int, out_ch: int, init_scale: float = 0.1):
        super().__init__()
        self.weight = nn.Parameter(default_init_(torch.empty(in_ch, out_ch), init_scale))
        self.bias = nn.Parameter(torch.zeros(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, H, W) -> (B, out, H, W), as a 1x1 convolution (keeps channels_last)."""
        return F.conv2d(x, self.weight.t()[:, :, None, None], self.bias)


class AttnBlock(nn.Module):
    """Single-head self-attention over pixels with a residual connection (DDPM / NCSN++).

    h = proj_out(softmax(q k^T / sqrt(C)) v) on GroupNorm(x); returns x + h, divided by sqrt(2)
    when `skip_rescale` (NCSN++). q, k, v come from one fused matrix product.

    The attention is written out (two `bmm` and a softmax) rather than with
    `F.scaled_dot_product_attention`: it then follows the official order of floating-point
    operations, which keeps imported official networks bit-exact on the CPU. VE networks divide
    their output by sigma (down to 0.01), which turns the ulp-level reordering of the fused kernel
    into ~3e-5 output differences. At the resolutions used here (<= 16x16, 256 tokens) the
    attention is a small part of the cost either way.

    Args:
        channels: C.
        num_groups: GroupNorm groups (32 in DDPM; min(C // 4, 32) in NCSN++).
        skip_rescale: divide the residual sum by sqrt(2).
        init_scale: init scale of the output projection (0 = near-zero, official).
    """

    def __init__(self, channels: int, *, num_groups: int, skip_rescale: bool = False,
                 init_scale: float = 0.0):
        super().__init__()
        self.norm = group_norm(channels, num_groups)
        self.q = PointwiseLinear(channels, channels)
        self.k = PointwiseLinear(channels, channels)
        self.v = PointwiseLinear(channels, channels)
        self.proj_out = PointwiseLinear(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        b, c, height, width = x.shape
        h = self.norm(x)
        tokens = h.permute(0, 2, 3, 1).reshape(b, height * width, c)  # a view if channels_last
        w_qkv = torch.cat([self.q.weight, self.k.weight, self.v.weight], dim=1)
        b_qkv = torch.cat([self.q.bias, self.k.bias, self.v.bias])
        q, k, v = (torch.matmul(tokens, w_qkv) + b_qkv).chunk(3, dim=-1)  # (B, N, C) each
        # Explicit softmax(q k^T / sqrt(C)) v in the official order of operations; see the class
        # docstring for why this is not F.scaled_dot_product_attention.
        weights = torch.softmax(torch.bmm(q, k.transpose(1, 2)) * c ** -0.5, dim=-1)
        out = torch.matmul(torch.bmm(weights, v), self.proj_out.weight) + self.proj_out.bias
        out = out.reshape(b, height, width, c).permute(0, 3, 1, 2)
        if self.skip_rescale:
            return (x + out).div_(math.sqrt(2.0))
        return x + out


class ResBlock(nn.Module):
    """Residual block of DDPM (Ho et al. 2020, App. B) and of NCSN++ (Song et al. 2021, App. H).

    norm1 -> act -> [resample] -> conv1 (+ temb_proj(act(temb))) -> norm2 -> act -> dropout ->
    conv2, plus the input (resampled too, through `shortcut` when needed); divided by sqrt(2) when
    `skip_rescale`.

    kind='ddpm' is the DDPM block (DDPM++ with skip_rescale): no resampling, a `PointwiseLinear`
    shortcut when the width changes. kind='biggan' is the BigGAN-style block of NCSN++ (Brock et
    al. 2019): it can resample by 2 (FIR, or nearest / 2x2 average without `fir_kernel`) and uses a
    1x1 convolution shortcut when the width changes or it resamples.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        temb_dim: width of the time embedding, or None for a block without one.
        act: activation module.
        num_groups: callable channels -> GroupNorm groups.
        dropout: dropout probability before conv2.
        skip_rescale: divide the residual sum by sqrt(2) (NCSN++).
        init_scale: init scale of conv2 (0 = near-zero).
        kind: 'ddpm' or 'biggan'.
        resample: None, 'up' or 'down' (kind='biggan' only).
        fir_kernel: FIR taps for resampling, or None.

    Raises:
        ValueError: for an unknown kind or resample, or resampling with kind='ddpm'.
    """

    def __init__(self, in_ch: int, out_ch: int, *, temb_dim: Optional[int], act: nn.Module,
                 num_groups: Callable[[int], int], dropout: float = 0.1,
                 skip_rescale: bool = False, init_scale: float = 0.0, kind: str = "ddpm",
                 resample: Optional[str] = None, fir_kernel: Optional[Sequence[float]] = None):
        super().__init__()
        if kind not in ("ddpm", "biggan"):
            raise ValueError(f"resblock kind must be 'ddpm' or 'biggan', got {kind!r}.")
        if resample not in (None, "up", "down"):
            raise ValueError(f"resample must be None, 'up' or 'down', got {resample!r}.")
        if kind == "ddpm" and resample is not None:
            raise ValueError("DDPM residual blocks do not resample; use kind='biggan'.")
        self.kind = kind
        self.resample = resample
        self.norm1 = group_norm(in_ch, num_groups(in_ch))
        self.conv1 = conv3x3(in_ch, out_ch)
        self.temb_proj = dense(temb_dim, out_ch) if temb_dim is not None else None
        self.norm2 = group_norm(out_ch, num_groups(out_ch))
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if kind == "ddpm":
            self.shortcut = PointwiseLinear(in_ch, out_ch) if in_ch != out_ch else None
        else:
            needs = in_ch != out_ch or resample is not None
            self.shortcut = conv1x1(in_ch, out_ch) if needs else None
        if resample is not None and fir_kernel is not None:
            self.register_buffer("fir_kernel", fir.fir_kernel_2d(fir_kernel), persistent=False)
        else:
            self.fir_kernel = None
        self.act = act
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, in_ch, H, W), (B, temb_dim) or None -> (B, out_ch, H', W')."""
        h = self.act(self.norm1(x))
        if self.resample == "up":
            h, x = _upsample(h, self.fir_kernel), _upsample(x, self.fir_kernel)
        elif self.resample == "down":
            h, x = _downsample(h, self.fir_kernel), _downsample(x, self.fir_kernel)
        h = self.conv1(h)
        if self.temb_proj is not None and temb is not None:
            h.add_(self.temb_proj(self.act(temb))[:, :, None, None])  # conv1 output: safe in place
        h = self.dropout(self.act(self.norm2(h)))
        h = self.conv2(h)
        if self.shortcut is not None:
            x = self.shortcut(x)
        if self.skip_rescale:
            return (x + h).div_(math.sqrt(2.0))
        return x + h


def _upsample(x: torch.Tensor, kernel: Optional[torch.Tensor]) -> torch.Tensor:
    if kernel is None:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return fir.upsample_2d(x, kernel)


def _downsample(x: torch.Tensor, kernel: Optional[torch.Tensor]) -> torch.Tensor:
    if kernel is None:
        return F.avg_pool2d(x, 2)
    return fir.downsample_2d(x, kernel)


class Resampling(nn.Module):
    """Base of Downsample and Upsample: an optional learned 3x3 convolution `conv` and the FIR
    taps `fir_kernel` (a non-persistent buffer, or None).

    Args:
        in_ch: input channels.
        out_ch: output channels (default in_ch; must equal in_ch without a convolution).
        with_conv: use a learned 3x3 convolution.
        fir_kernel: FIR taps, or None.
    """

    conv_options: dict = {}  # of the 3x3 convolution (stride, padding)

    def __init__(self, in_ch: int, out_ch: Optional[int] = None, *, with_conv: bool = True,
                 fir_kernel: Optional[Sequence[float]] = None):
        super().__init__()
        out_ch = in_ch if out_ch is None else out_ch
        if not with_conv and out_ch != in_ch:
            raise ValueError(
                f"{type(self).__name__} without a convolution cannot change the width "
                f"({in_ch} -> {out_ch}); pass with_conv=True or out_ch=None.")
        self.conv = conv3x3(in_ch, out_ch, **self.conv_options) if with_conv else None
        if fir_kernel is not None:
            self.register_buffer("fir_kernel", fir.fir_kernel_2d(fir_kernel), persistent=False)
        else:
            self.fir_kernel = None


class Downsample(Resampling):
    """Halve the resolution (official `Downsample`), optionally with a convolution; arguments as
    `Resampling`.

    Without FIR: a 3x3 stride-2 convolution on the input padded by one pixel at the bottom/right
    (TensorFlow 'SAME', as DDPM), or 2x2 average pooling. With FIR: blur then 3x3 stride-2
    convolution, or blur and subsample.
    """

    conv_options = {"stride": 2, "padding": 0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, H/2, W/2)."""
        if self.conv is None:
            return _downsample(x, self.fir_kernel)
        if self.fir_kernel is None:
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return fir.conv_downsample_2d(x, self.conv.weight, self.fir_kernel) + self.conv.bias[
            None, :, None, None]


class Upsample(Resampling):
    """Double the resolution (official `Upsample`), optionally with a convolution; arguments as
    `Resampling`.

    Without FIR: nearest-neighbour, then an optional 3x3 convolution. With FIR: FIR upsampling, or
    the fused transposed 3x3 convolution + FIR blur of StyleGAN2.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, 2H, 2W)."""
        if self.conv is None:
            return _upsample(x, self.fir_kernel)
        if self.fir_kernel is None:
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return fir.upsample_conv_2d(x, self.conv.weight, self.fir_kernel) + self.conv.bias[
            None, :, None, None]


class Combine(nn.Module):
    """Merge the input-pyramid image into the features (NCSN++ 'input_skip').

    A 1x1 convolution maps the pyramid to the feature width; then 'sum' adds it, 'cat' concatenates
    [pyramid, features] (doubling the width).

    Args:
        pyramid_ch: channels of the pyramid image.
        feature_ch: channels of the features.
        method: 'sum' or 'cat'.
    """

    def __init__(self, pyramid_ch: int, feature_ch: int, method: str = "sum"):
        super().__init__()
        if method not in ("sum", "cat"):
            raise ValueError(f"progressive_combine must be 'sum' or 'cat', got {method!r}.")
        self.conv = conv1x1(pyramid_ch, feature_ch)
        self.method = method

    def forward(self, pyramid: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(B, pyramid_ch, H, W), (B, feature_ch, H, W) -> (B, feature_ch or 2*feature_ch, H, W)."""
        p = self.conv(pyramid)
        if self.method == "cat":
            return torch.cat([p, h], dim=1)
        return p + h


def run_block(block: nn.Module, checkpointed: bool, *args):
    """block(*args), through activation checkpointing when `checkpointed` and gradients are on:
    the block's inner activations are not kept but recomputed in the backward pass (with the
    same dropout masks: the RNG state is replayed), the same values and gradients."""
    if checkpointed and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
    return block(*args)


class DownLevel(nn.Module):
    """One encoder resolution: residual blocks (each optionally followed by attention), then the
    downsampling step and the input-pyramid step, which the network sets (absent on the coarsest
    level).

    Args:
        in_ch, out_ch: channels into the first residual block and out of every block.
        num_blocks: number of residual blocks.
        resblock: resblock(in_ch, out_ch) -> a residual block taking (h, temb).
        attention: attention(channels) -> a self-attention layer after every block, or None.
    """

    def __init__(self, in_ch: int, out_ch: int, num_blocks: int, resblock: Callable,
                 attention: Optional[Callable] = None):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.attns = nn.ModuleList()
        for _ in range(num_blocks):
            self.blocks.append(resblock(in_ch, out_ch))
            in_ch = out_ch
            if attention is not None:
                self.attns.append(attention(out_ch))
        self.downsample: Optional[nn.Module] = None
        self.pyramid_downsample: Optional[nn.Module] = None
        self.pyramid_combine: Optional[nn.Module] = None

    checkpointed = False  # activation checkpointing of the blocks (`UNet`)

    def forward_blocks(self, h: torch.Tensor, temb: Optional[torch.Tensor],
                       skips: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        """The residual blocks (and attention) on h (B, in_ch, S, S) -> (B, out_ch, S, S); every
        block's output is appended to `skips` when given (the U-Net's skip connections)."""
        for i, block in enumerate(self.blocks):
            h = run_block(block, self.checkpointed, h, temb)
            if len(self.attns) > 0:
                h = run_block(self.attns[i], self.checkpointed, h)
            if skips is not None:
                skips.append(h)
        return h


class UpLevel(nn.Module):
    """One decoder resolution: residual blocks on [h, skip], optional attention, then the
    output-pyramid step and upsampling, which the network sets (absent on the finest level).

    Args:
        in_ch, out_ch: channels of h into the first residual block, and out of every block.
        skip_channels: channels of the encoder's skip connections; each block pops one off the
            end (the last skip first).
        num_blocks: number of residual blocks.
        resblock: resblock(in_ch, out_ch) -> a residual block taking (h, temb).
        attention: attention(channels) -> a self-attention layer after the blocks, or None.
    """

    def __init__(self, in_ch: int, out_ch: int, skip_channels: List[int], num_blocks: int,
                 resblock: Callable, attention: Optional[Callable] = None):
        super().__init__()
        self.blocks = nn.ModuleList()
        for _ in range(num_blocks):
            self.blocks.append(resblock(in_ch + skip_channels.pop(), out_ch))
            in_ch = out_ch
        self.attn: Optional[nn.Module] = None if attention is None else attention(out_ch)
        self.pyramid_upsample: Optional[nn.Module] = None
        self.pyramid_norm: Optional[nn.Module] = None
        self.pyramid_conv: Optional[nn.Module] = None
        self.upsample: Optional[nn.Module] = None

    checkpointed = False  # activation checkpointing of the blocks (`UNet`)

    def forward_blocks(self, h: torch.Tensor, temb: Optional[torch.Tensor],
                       skips: List[torch.Tensor]) -> torch.Tensor:
        """The residual blocks on [h, skips.pop()] and the attention: (B, in_ch, S, S) ->
        (B, out_ch, S, S)."""
        for block in self.blocks:
            h = run_block(block, self.checkpointed, torch.cat([h, skips.pop()], dim=1), temb)
        if self.attn is not None:
            h = run_block(self.attn, self.checkpointed, h)
        return h


class UNet(nn.Module):
    """What the DDPM U-Net and NCSN++ share (not a network by itself): the size and conditioning
    options, the resolution ladder, the time and class embeddings (registered in that order),
    and the optional division of the output by sigma. Subclasses call `_init_unet` first."""

    def _init_unet(self, *, image_size: int, num_channels: int, nf: int, ch_mult: Sequence[int],
                   num_res_blocks: int, attn_resolutions: Sequence[int], dropout: float,
                   nonlinearity: str, conditional: bool, num_classes: int, scale_by_sigma: bool,
                   embedding_type: str, fourier_scale: float = 16.0):
        """Check and keep the shared options; build `time_embed` and `class_embed`.

        Returns:
            (ladder, temb_dim): the resolutions (S, S/2, ...) and the width 4 nf of the
            conditioning embedding (None for a network with neither time nor class labels).

        Raises:
            ValueError: for a size the network cannot take, naming it.
        """
        if nf < 4 or num_res_blocks < 1 or num_classes < 0 or not 0 <= dropout < 1:
            raise ValueError(
                f"Need nf >= 4, num_res_blocks >= 1, num_classes >= 0 and 0 <= dropout < 1; got "
                f"nf={nf}, num_res_blocks={num_res_blocks}, num_classes={num_classes}, "
                f"dropout={dropout}.")
        self.ch_mult = tuple(int(m) for m in ch_mult)
        self.attn_resolutions = tuple(int(r) for r in attn_resolutions)
        ladder = resolution_ladder(image_size, len(self.ch_mult), self.attn_resolutions)
        self.image_size, self.num_channels = image_size, num_channels
        self.nf, self.num_res_blocks = nf, num_res_blocks
        self.conditional, self.num_classes = bool(conditional), int(num_classes)
        self.scale_by_sigma = bool(scale_by_sigma)
        self.act = get_activation(nonlinearity)
        self.time_embed = (TimeEmbedding(embedding_type, nf, self.act, fourier_scale)
                           if conditional else None)
        self.class_embed = None
        if num_classes > 0:  # row num_classes is the null label
            self.class_embed = nn.Embedding(num_classes + 1, 4 * nf)
            nn.init.zeros_(self.class_embed.weight)
        return ladder, (4 * nf if (conditional or num_classes > 0) else None)

    def _down_level(self, i: int, res: int, in_ch: int, resblock: Callable, attention: Callable,
                    skip_channels: List[int]) -> Tuple["DownLevel", int]:
        """Encoder level i (resolution res): num_res_blocks residual blocks from in_ch to
        nf ch_mult[i] channels, attention after each at the attention resolutions; their outputs
        join `skip_channels`. Returns the level and its output channels."""
        out_ch = self.nf * self.ch_mult[i]
        level = DownLevel(in_ch, out_ch, self.num_res_blocks, resblock,
                          attention if res in self.attn_resolutions else None)
        skip_channels += [out_ch] * self.num_res_blocks
        return level, out_ch

    def _up_level(self, i: int, res: int, in_ch: int, resblock: Callable, attention: Callable,
                  skip_channels: List[int]) -> Tuple["UpLevel", int]:
        """Decoder level i (resolution res): num_res_blocks + 1 residual blocks on [h, skip] (skips
        popped from `skip_channels`) to nf ch_mult[i] channels, then attention at the attention
        resolutions. Returns the level and its output channels."""
        out_ch = self.nf * self.ch_mult[i]
        level = UpLevel(in_ch, out_ch, skip_channels, self.num_res_blocks + 1, resblock,
                        attention if res in self.attn_resolutions else None)
        return level, out_ch

    def set_activation_checkpointing(self, resolutions: Sequence[int]) -> None:
        """Activation checkpointing (`run_block`) of the residual and attention blocks of the
        encoder and decoder levels at `resolutions` (and of the middle block when the coarsest
        resolution is listed); () turns it off. Outputs and gradients are unchanged; the
        activations kept for the backward pass shrink to the blocks' inputs.

        Raises:
            ValueError: a resolution not on the network's ladder (S, S/2, ...).
        """
        ladder = [int(key.split("x")[0]) for key in self.down]
        wanted = {int(r) for r in resolutions}
        if not wanted <= set(ladder):
            raise ValueError(f"resolutions {sorted(wanted - set(ladder), reverse=True)} are not on"
                             f" the network's ladder {ladder}; pick from it")
        for key, level in list(self.down.items()) + list(self.up.items()):
            level.checkpointed = int(key.split("x")[0]) in wanted
        self.mid.checkpointed = ladder[-1] in wanted

    def _conditioning(self, x: torch.Tensor, labels: torch.Tensor, y: Optional[torch.Tensor]):
        """Checked (B,) labels and the embedding (B, 4 nf) of the labels and classes (or None)."""
        labels = check_inputs(x, labels, (self.num_channels, self.image_size, self.image_size))
        return labels, embed_conditions(labels, y, self.time_embed, self.class_embed)

    def _scale_output(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """h / sigma with `labels` read as sigma when scale_by_sigma, else h."""
        return h / per_example(labels, h) if self.scale_by_sigma else h


class MidBlock(nn.Module):
    """Bottleneck: residual block, attention, residual block."""

    def __init__(self, block1: nn.Module, attn: nn.Module, block2: nn.Module):
        super().__init__()
        self.block1, self.attn, self.block2 = block1, attn, block2

    checkpointed = False  # activation checkpointing of the three parts (`UNet`)

    def forward(self, h: torch.Tensor, temb: Optional[torch.Tensor]) -> torch.Tensor:
        c = self.checkpointed
        return run_block(self.block2, c, run_block(self.attn, c, run_block(self.block1, c, h, temb)), temb)
