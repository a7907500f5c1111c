"""Pictures of samples: image grids (PNG, via Pillow), 2-D scatter plots beside the data, coloured
by class for class-conditional samples, and rows of such panels (matplotlib's Agg backend, no
display needed)."""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

PathLike = Union[str, os.PathLike]


def image_grid(images: torch.Tensor, nrow: Optional[int] = None, padding: int = 2) -> np.ndarray:
    """Tile uint8 images (B, C, H, W) into one (H', W', C) array, `nrow` images per row
    (default: a square-ish grid), with `padding` black pixels between them."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
    B, C, H, W = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(B)))
    ncol = math.ceil(B / nrow)
    grid = np.zeros((ncol * (H + padding) + padding, nrow * (W + padding) + padding, C), np.uint8)
    arr = images.permute(0, 2, 3, 1).cpu().numpy()
    for i in range(B):
        r, c = divmod(i, nrow)
        y, x = padding + r * (H + padding), padding + c * (W + padding)
        grid[y:y + H, x:x + W] = arr[i]
    return grid


def save_image_grid(images: torch.Tensor, path: PathLike, nrow: Optional[int] = None) -> None:
    """Save uint8 images (B, C, H, W) as one PNG grid."""
    grid = image_grid(images, nrow)
    mode = "L" if grid.shape[2] == 1 else "RGB"
    Image.fromarray(grid[..., 0] if mode == "L" else grid, mode=mode).save(path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _limits(d: np.ndarray):
    """Axis limits from the data's 0.5 and 99.5 percentiles, padded by 15%."""
    lo = np.percentile(d, 0.5, axis=0)
    hi = np.percentile(d, 99.5, axis=0)
    pad = 0.15 * (hi - lo)
    return lo - pad, hi + pad


def _points(ax, pts: np.ndarray, labels: Optional[np.ndarray], lo, hi) -> None:
    """Scatter 2-D points on `ax`, coloured by class (tab10) when labels are given."""
    if labels is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4, linewidths=0)
    else:
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, linewidths=0, c=labels % 10, cmap="tab10",
                   vmin=0, vmax=9)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")


def _numpy(v: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    return None if v is None else v.detach().cpu().numpy()


def save_scatter(samples: torch.Tensor, data: torch.Tensor, path: PathLike, title: str = "",
                 labels: Optional[torch.Tensor] = None) -> None:
    """Two panels with the same axes: the data (left) and the samples (right), 2-D points;
    samples coloured by their class `labels` if given."""
    plt = _pyplot()
    s = samples.detach().cpu().float().numpy()
    d = data.detach().cpu().float().numpy()
    lo, hi = _limits(d)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), sharex=True, sharey=True)
    _points(axes[0], d, None, lo, hi)
    axes[0].set_title(f"data ({len(d)})")
    _points(axes[1], s, _numpy(labels), lo, hi)
    axes[1].set_title(f"samples ({len(s)})")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_class_scatter_grid(columns: Sequence[Tuple[str, torch.Tensor, torch.Tensor]], path: PathLike,
                            title: str = "") -> None:
    """One row of 2-D scatter panels on the axes of the first (the data): (name, points (n, 2),
    class labels (n,)) per panel, points coloured by class."""
    plt = _pyplot()
    lo, hi = _limits(columns[0][1].detach().cpu().float().numpy())
    fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 3.7), sharex=True,
                             sharey=True, squeeze=False)
    for ax, (name, pts, labels) in zip(axes[0], columns):
        _points(ax, pts.detach().cpu().float().numpy(), _numpy(labels), lo, hi)
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_inpainting_scatter(data: torch.Tensor, samples: torch.Tensor, known_dim: int, known_value: float,
                            path: PathLike, exact=None, title: str = "") -> None:
    """2-D inpainting with coordinate `known_dim` fixed: the samples on the line x_d = value over
    the data (left), and the histogram of the drawn coordinate beside the exact conditional
    density `exact` (a 1-D `GaussianMixture`, if given; right)."""
    plt = _pyplot()
    d = data.detach().cpu().float().numpy()
    s = samples.detach().cpu().float().numpy()
    u = 1 - known_dim
    lo, hi = _limits(d)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    ax = axes[0]
    ax.scatter(d[:, 0], d[:, 1], s=2, alpha=0.25, linewidths=0, color="0.5", label="data")
    ax.scatter(s[:, 0], s[:, 1], s=4, alpha=0.5, linewidths=0, color="C3", label="samples")
    line = [known_value, known_value]
    ax.plot(*((line, [lo[1], hi[1]]) if known_dim == 0 else ([lo[0], hi[0]], line)), "k--", lw=0.8)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.set_title(f"x{known_dim} = {known_value:g} known")
    ax.legend(loc="lower right", fontsize=8, markerscale=3)
    ax = axes[1]
    ax.hist(s[:, u], bins=60, range=(lo[u], hi[u]), density=True, alpha=0.6, color="C3", label="samples")
    if exact is not None:
        grid = torch.linspace(float(lo[u]), float(hi[u]), 400, dtype=torch.float64)
        ax.plot(grid.numpy(), exact.log_prob(grid[:, None]).exp().numpy(), "k", lw=1.2,
                label="exact conditional")
    ax.set_xlabel(f"x{u}")
    ax.set_title(f"p(x{u} | x{known_dim} = {known_value:g})")
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
