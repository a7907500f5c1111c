"""Gaussian mixtures for sampler tests, and two-sample statistics with sample-size tolerances."""
import math

import numpy as np
import torch
from scipy.stats import norm

from sde_lib import GaussianMixture


def two_d_mixture() -> GaussianMixture:
    """5 components in 2-D: unequal weights, rotated anisotropic covariances (stds 0.1-0.6)."""
    weights = [0.10, 0.15, 0.20, 0.25, 0.30]
    means = [[-2.0, 0.5], [1.5, 1.5], [0.0, -1.5], [2.0, -1.0], [-1.0, 2.0]]
    stds = [(0.6, 0.15), (0.3, 0.1), (0.5, 0.25), (0.2, 0.2), (0.4, 0.12)]
    angles = [0.3, -0.8, 1.2, 0.0, 2.0]
    covs = []
    for (a, b), th in zip(stds, angles):
        R = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        covs.append(R @ np.diag([a * a, b * b]) @ R.T)
    return GaussianMixture(weights, means, np.stack(covs))


def image_mixture() -> GaussianMixture:
    """3 components on 3x8x8 "images": smooth means, per-pixel variances from 2e-3 to 1.

    The covariances are diagonal in the pixel basis. That loses no generality for the samplers:
    every SDE here is isotropic, so a sampler's output on N(mu, U L U^T) is its output on
    N(U^T mu, L) rotated by U; the benchmark uses full image-like covariances.
    """
    yy, xx = np.meshgrid(np.linspace(-1, 1, 8), np.linspace(-1, 1, 8), indexing="ij")
    means, covs = [], []
    for k, (cx, cy, level) in enumerate([(-0.5, -0.5, 0.8), (0.5, 0.2, -0.6), (0.0, 0.6, 0.2)]):
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.3)
        channels = [level + blob, level - 0.5 * blob, 0.5 * level + 0.6 * blob]
        means.append(np.stack(channels).reshape(-1) * 1.5)
        # Variances spanning three decades, smooth over the image, different per component.
        logvar = -6.2 + 6.2 * np.exp(-((xx + cy) ** 2 + (yy - cx) ** 2) / (0.4 + 0.3 * k))
        v = np.exp(np.stack([logvar, logvar - 0.5, logvar - 1.0]).reshape(-1))
        covs.append(np.diag(v))
    return GaussianMixture([0.5, 0.3, 0.2], np.stack(means), np.stack(covs), event_shape=(3, 8, 8))


def bonferroni_z(n_tests: int, family_alpha: float = 1e-3) -> float:
    """Two-sided z threshold keeping the chance of any false alarm among n_tests below alpha."""
    return float(norm.isf(family_alpha / (2 * n_tests)))


def _component_stats(gm: GaussianMixture, x: torch.Tensor):
    """Assign each sample to its most probable component (at t = 0) and collect per-component
    samples projected on that component's eigenvectors."""
    xf = x.reshape(x.shape[0], -1).double()
    k = gm.class_log_posterior(xf).argmax(1)
    return xf, k


def compare_to_truth(gm: GaussianMixture, samples: torch.Tensor, truth: torch.Tensor, family_alpha=1e-3):
    """Two-sample z statistics of component weights, means and per-eigendirection variances.

    Both sets are split by the same rule (most probable component), so for exact samples every
    statistic has mean zero; standard errors are estimated from the data (fourth moments for
    the variances), so nothing assumes Gaussian components. Returns (max |z|, threshold, details).
    """
    xs, ks = _component_stats(gm, samples)
    xt, kt = _component_stats(gm, truth)
    n_s, n_t = len(xs), len(xt)
    zs = {}
    K, d = gm.n_components, gm.dim
    for k in range(K):
        ps, pt = (ks == k).double().mean(), (kt == k).double().mean()
        p = (ps * n_s + pt * n_t) / (n_s + n_t)
        zs[f"weight[{k}]"] = ((ps - pt) / torch.sqrt(p * (1 - p) * (1 / n_s + 1 / n_t))).abs().item()
        a, b = xs[ks == k], xt[kt == k]
        if len(a) < 20 or len(b) < 20:
            continue
        U = torch.eye(d, dtype=torch.float64) if gm.diagonal else gm.eigvecs[k]
        pa, pb = (a - gm.means[k]) @ U, (b - gm.means[k]) @ U
        se_mean = torch.sqrt(pa.var(0) / len(pa) + pb.var(0) / len(pb))
        zs[f"mean[{k}]"] = ((pa.mean(0) - pb.mean(0)) / se_mean).abs().max().item()
        va, vb = pa.var(0), pb.var(0)
        m4a = ((pa - pa.mean(0)) ** 4).mean(0)
        m4b = ((pb - pb.mean(0)) ** 4).mean(0)
        se_var = torch.sqrt((m4a - va**2) / len(pa) + (m4b - vb**2) / len(pb))
        zs[f"var[{k}]"] = ((va - vb) / se_var).abs().max().item()
    n_tests = K + 2 * K * d
    return max(zs.values()), bonferroni_z(n_tests, family_alpha), zs


def sliced_w2(a: torch.Tensor, b: torch.Tensor, directions: torch.Tensor) -> float:
    """Sliced Wasserstein-2 distance between equal-size samples (n, d) along unit directions (m, d)."""
    pa = torch.sort(a.reshape(len(a), -1).double() @ directions.T, dim=0).values
    pb = torch.sort(b.reshape(len(b), -1).double() @ directions.T, dim=0).values
    return math.sqrt(((pa - pb) ** 2).mean().item())


def sw2_noise_floor(gm: GaussianMixture, n: int, directions, replicates: int = 10, seed: int = 123):
    """Mean and std of SW2 between independent true samples of size n (the statistic's floor)."""
    g = torch.Generator().manual_seed(seed)
    vals = [sliced_w2(gm.sample(n, g, dtype=torch.float64), gm.sample(n, g, dtype=torch.float64), directions)
            for _ in range(replicates)]
    return float(np.mean(vals)), float(np.std(vals, ddof=1))


def random_directions(d: int, m: int = 128, seed: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(m, d, generator=g, dtype=torch.float64)
    return v / v.norm(dim=1, keepdim=True)
