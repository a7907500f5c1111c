"""FIR up/down-sampling by a factor of 2, in plain PyTorch convolutions.

The resampling of NCSN++ (Song et al. 2021, Sec. H.1) comes from StyleGAN2 (Karras et al. 2020),
where it is written with `upfirdn2d`: insert zeros, pad, convolve with a 2-D FIR filter, keep every
other sample. Here every case is one strided (transposed) convolution, so no zeros are inserted and
no discarded outputs are computed:

* downsampling is a depthwise convolution with stride 2;
* upsampling computes the four output phases with one depthwise convolution at the input
  resolution and interleaves them with `pixel_shuffle` (the polyphase form);
* the fused "3x3 conv + FIR" layers keep the dense 3x3 convolution at stride 2 and put the blur in a
  separate depthwise convolution, as the official code does.

Every function reproduces the official `upfirdn2d` result (score_sde_pytorch
`models/up_or_down_sampling.py`) to float32 rounding; `tests/test_models.py` checks this against a
zero-insertion reference. Kernels are 2-D tensors (K, K) made by `fir_kernel_2d`, normalised the
official way. Inputs are (B, C, H, W) with even H and W for downsampling.
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "fir_kernel_2d",
    "upsample_2d",
    "downsample_2d",
    "upsample_conv_2d",
    "conv_downsample_2d",
]


def fir_kernel_2d(taps: Sequence[float]) -> torch.Tensor:
    """The separable 2-D FIR kernel outer(taps, taps) / sum, float32, shape (K, K).

    Args:
        taps: 1-D filter taps, e.g. (1, 3, 3, 1) as in NCSN++ (length K >= 2).

    Raises:
        ValueError: if fewer than two taps are given or they sum to zero.
    """
    taps = [float(t) for t in taps]
    if len(taps) < 2:
        raise ValueError(f"fir_kernel needs at least 2 taps, got {taps}; NCSN++ uses [1, 3, 3, 1].")
    total = sum(taps) ** 2
    if total == 0:
        raise ValueError(f"fir_kernel taps {taps} sum to zero; cannot normalise them.")
    # Plain Python arithmetic (float64), so that this also works under a meta-device context.
    return torch.tensor([[a * b / total for b in taps] for a in taps], dtype=torch.float32)


def _depthwise(kernel: torch.Tensor, channels: int, like: torch.Tensor) -> torch.Tensor:
    """(K, K) kernel -> depthwise conv weight (C, 1, K, K) in the dtype/device of `like`."""
    k = kernel.to(device=like.device, dtype=like.dtype)
    return k.expand(channels, 1, *k.shape).contiguous()


def _blur(x: torch.Tensor, kernel: torch.Tensor, pad0: int, pad1: int, gain: float = 1.0,
          stride: int = 1) -> torch.Tensor:
    """upfirdn2d(x, kernel * gain, pad=(pad0, pad1), down=stride) without zero insertion.

    upfirdn2d convolves (true convolution, i.e. correlation with the flipped kernel) after padding
    `pad0` before and `pad1` after each spatial axis.
    """
    channels = x.shape[1]
    weight = _depthwise(torch.flip(kernel, (0, 1)) * gain, channels, x)
    if pad0 != pad1:
        x = F.pad(x, (pad0, pad1, pad0, pad1))
        pad0 = 0
    return F.conv2d(x, weight, stride=stride, padding=pad0, groups=channels)


def downsample_2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Blur with the FIR `kernel` and keep every other pixel (official `downsample_2d`).

    Args:
        x: (B, C, H, W) with even H, W.
        kernel: (K, K) normalised FIR kernel from `fir_kernel_2d`.

    Returns:
        (B, C, H/2, W/2).
    """
    # upfirdn2d(x, k, down=2, pad=((p+1)//2, p//2)) with p = K - 2. For even H the symmetric
    # padding (p+1)//2 gives the same outputs (the extra trailing zero is never reached).
    p = kernel.shape[0] - 2
    pad = (p + 1) // 2
    return _blur(x, kernel, pad, pad, stride=2)


def _polyphase_kernels(kernel: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
    """The four 2x2-phase kernels of FIR upsampling, (4, 1, T, T), and the left/right padding.

    Official upsampling is upfirdn2d(x, 4k, up=2, pad=(p0, p1)) with p0 = (p+1)//2 + 1,
    p = K - 2: out[2a+r] = sum_j 4 k_flip[j] x[a + (r+j-p0)/2] over the j with r+j-p0 even. Each
    output phase r (per axis) is therefore a correlation of x with a sub-kernel; all four phases
    are laid out as channels for `pixel_shuffle`. Zero-padding the sub-kernels to a common size
    keeps the order of the nonzero terms, so results match the official ones bit for bit on the
    CPU.
    """
    size = kernel.shape[0]
    p0 = (size - 2 + 1) // 2 + 1
    flipped = torch.flip(kernel, (0, 1)) * 4.0
    taps = [[(j, (r + j - p0) // 2) for j in range(size) if (r + j - p0) % 2 == 0]
            for r in range(2)]
    lo = min(d for phase in taps for _, d in phase)
    hi = max(d for phase in taps for _, d in phase)
    phases = torch.zeros(2, 2, hi - lo + 1, hi - lo + 1, dtype=kernel.dtype,
                         device=kernel.device)
    for r in range(2):
        for s in range(2):
            for j, dj in taps[r]:
                for l, dl in taps[s]:
                    phases[r, s, dj - lo, dl - lo] = flipped[j, l]
    return phases.reshape(4, 1, hi - lo + 1, hi - lo + 1), -lo, hi


def upsample_2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Upsample by 2 with the FIR `kernel` (official `upsample_2d`), in polyphase form.

    One depthwise convolution computes the four output phases at input resolution, and
    `pixel_shuffle` interleaves them: no zeros are inserted.

    Args:
        x: (B, C, H, W).
        kernel: (K, K) normalised FIR kernel from `fir_kernel_2d`.

    Returns:
        (B, C, 2H, 2W).
    """
    channels = x.shape[1]
    phases, pad_lo, pad_hi = _polyphase_kernels(kernel)
    weight = phases.to(device=x.device, dtype=x.dtype).repeat(channels, 1, 1, 1)
    if pad_lo != pad_hi:
        x = F.pad(x, (pad_lo, pad_hi, pad_lo, pad_hi))
        pad_lo = 0
    return F.pixel_shuffle(F.conv2d(x, weight, padding=pad_lo, groups=channels), 2)


def conv_downsample_2d(x: torch.Tensor, weight: torch.Tensor,
                       kernel: torch.Tensor) -> torch.Tensor:
    """FIR blur, then a convolution with `weight` at stride 2 (official `conv_downsample_2d`).

    Args:
        x: (B, C_in, H, W) with even H, W.
        weight: (C_out, C_in, k, k) convolution weight, k odd (3 in NCSN++).
        kernel: (K, K) normalised FIR kernel.

    Returns:
        (B, C_out, H/2, W/2); add the bias yourself.
    """
    # Official: upfirdn2d(x, k, pad=((p+1)//2, p//2)), p = (K - 2) + (k - 1), then a VALID conv
    # with stride 2. For even H symmetric padding (p+1)//2 gives the same strided outputs.
    p = (kernel.shape[0] - 2) + (weight.shape[-1] - 1)
    pad = (p + 1) // 2
    x = _blur(x, kernel, pad, pad)
    return F.conv2d(x, weight, stride=2)


def upsample_conv_2d(x: torch.Tensor, weight: torch.Tensor,
                     kernel: torch.Tensor) -> torch.Tensor:
    """Convolution with `weight` on the 2x zero-upsampled input, then a FIR blur.

    The StyleGAN2 fused layer (official `upsample_conv_2d`): a stride-2 transposed convolution with
    the flipped, transposed weight equals "insert zeros, then correlate with `weight`". The official
    PyTorch port slices with a negative step here, which PyTorch rejects, so no released
    configuration reaches this function; we implement what that code intends (as the JAX original).

    Args:
        x: (B, C_in, H, W).
        weight: (C_out, C_in, k, k) convolution weight, k odd (3 in NCSN++).
        kernel: (K, K) normalised FIR kernel.

    Returns:
        (B, C_out, 2H, 2W); add the bias yourself.
    """
    conv = weight.shape[-1]
    w = torch.flip(weight, (2, 3)).transpose(0, 1)
    y = F.conv_transpose2d(x, w, stride=2)  # (B, C_out, 2H - 1 + k - 1, ...)
    p = (kernel.shape[0] - 2) - (conv - 1)
    return _blur(y, kernel, (p + 1) // 2 + 1, p // 2 + 1, gain=4.0)
