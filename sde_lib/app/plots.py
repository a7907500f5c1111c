"""Pictures of samples: image grids (PNG, via Pillow) and 2-D scatter plots beside the data
(matplotlib's Agg backend, no display needed)."""
from __future__ import annotations

import math
import os
from typing import Optional, Union

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


def save_scatter(samples: torch.Tensor, data: torch.Tensor, path: PathLike, title: str = "") -> None:
    """Two panels with the same axes: the data (left) and the samples (right), 2-D points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = samples.detach().cpu().float().numpy()
    d = data.detach().cpu().float().numpy()
    lo = np.percentile(d, 0.5, axis=0)
    hi = np.percentile(d, 99.5, axis=0)
    pad = 0.15 * (hi - lo)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), sharex=True, sharey=True)
    for ax, pts, name in ((axes[0], d, f"data ({len(d)})"), (axes[1], s, f"samples ({len(s)})")):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4, linewidths=0)
        ax.set_title(name)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_aspect("equal")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
