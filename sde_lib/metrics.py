"""Sample-quality metrics on features of a fixed network: FID, Inception Score, KID.

The metrics of the paper's tables (Song et al. 2021, Table 3), computed in float64 torch from
features (B, D) and logits (B, K) however they were made (the FID Inception network for
CIFAR-10, a small classifier for the 8x8 digits; `sde_app.features`):

* FID (Heusel et al. 2017, eq. 6): the Frechet distance between Gaussians fitted to two feature
  sets, |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}).
* Inception Score (Salimans et al. 2016, sec. 4): exp E_x KL(p(y | x) || p(y)), mean and
  standard deviation over `splits` equal parts of the samples.
* KID (Binkowski et al. 2018, eq. 3 with the kernel of sec. 3.2): the unbiased estimator of the
  squared MMD with the polynomial kernel k(x, y) = (x.y / D + 1)^3, mean and standard deviation
  over random subsets.

The square root in FID: tr (S_1 S_2)^{1/2} = sum_i sqrt(lambda_i) with lambda_i the eigenvalues
of the symmetric positive semi-definite matrix S_1^{1/2} S_2 S_1^{1/2} (similar to S_1 S_2), so
two symmetric eigendecompositions replace a general matrix square root and no complex parts arise.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np
import torch

Tensor = torch.Tensor
PRECOMPUTE_LIMIT = 4_000_000  # kernel matrix entries (32 MB in float64) below which KID precomputes them
__all__ = ["feature_statistics", "frechet_distance", "inception_score", "mmd2_unbiased",
           "kernel_inception_distance", "polynomial_kernel", "bootstrap_std"]


def _float64(a, name: str, ndim: int) -> Tensor:
    t = torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a).detach().to("cpu", torch.float64)
    if t.ndim != ndim:
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected {ndim} dimensions")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} holds non-finite values")
    return t


def feature_statistics(features) -> Tuple[np.ndarray, np.ndarray]:
    """(mu (D,), sigma (D, D)) of features (N, D): the mean and the unbiased covariance (ddof 1),
    float64, as FID's reference statistics are stored.

    Raises:
      ValueError: fewer than 2 rows, or not a finite (N, D) array.
    """
    f = _float64(features, "features", 2)
    if f.shape[0] < 2:
        raise ValueError(f"features has {f.shape[0]} row(s); a covariance needs at least 2")
    mu = f.mean(0)
    centered = f - mu
    sigma = centered.T @ centered / (f.shape[0] - 1)
    return mu.numpy(), sigma.numpy()


def _psd_sqrt(sigma: Tensor) -> Tensor:
    """S^{1/2} of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    evals, evecs = torch.linalg.eigh((sigma + sigma.T) / 2)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6):
    |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr (sigma1 sigma2)^{1/2}.

    Args:
      mu1, mu2: means (D,); sigma1, sigma2: covariances (D, D) (numpy arrays or tensors).

    Returns:
      the distance (float, >= 0 up to round-off), computed in float64.

    Raises:
      ValueError: shapes that do not match, or non-finite values.
    """
    m1, m2 = _float64(mu1, "mu1", 1), _float64(mu2, "mu2", 1)
    s1, s2 = _float64(sigma1, "sigma1", 2), _float64(sigma2, "sigma2", 2)
    d = m1.shape[0]
    if m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"shapes mu1 {tuple(m1.shape)}, sigma1 {tuple(s1.shape)}, mu2 {tuple(m2.shape)},"
                         f" sigma2 {tuple(s2.shape)} do not match; expected (D,) and (D, D) twice")
    root1 = _psd_sqrt(s1)
    inner = root1 @ s2 @ root1                       # similar to sigma1 sigma2, symmetric PSD
    tr_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
    diff = m1 - m2
    return float(diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * tr_sqrt)


def inception_score(logits, *, splits: int = 10) -> Tuple[float, float]:
    """Inception Score exp E_x KL(p(y | x) || p(y)) (Salimans et al. 2016), with p(y | x) =
    softmax(logits) and p(y) the mean of p(y | x) over each of `splits` contiguous equal parts.

    Args:
      logits: (N, K) class logits of N samples.
      splits: parts the samples are cut into (10 in Salimans et al.); N >= splits.

    Returns:
      (mean, standard deviation) of the parts' scores; 1 for uniform p(y | x), K for confident
      predictions spread evenly over K classes.
    """
    z = _float64(logits, "logits", 2)
    if isinstance(splits, bool) or not isinstance(splits, int) or not 1 <= splits <= z.shape[0]:
        raise ValueError(f"splits={splits!r}: expected an integer in [1, N={z.shape[0]}]")
    log_p = torch.log_softmax(z, dim=1)
    scores = []
    for part in torch.tensor_split(log_p, splits):
        log_marginal = torch.logsumexp(part, dim=0) - np.log(part.shape[0])
        kl = (part.exp() * (part - log_marginal)).sum(1)
        scores.append(kl.mean().exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(unbiased=False)) if splits > 1 else 0.0


def polynomial_kernel(x: Tensor, y: Tensor, *, degree: int = 3, coef0: float = 1.0) -> Tensor:
    """k(x, y) = (x.y / D + coef0)^degree for rows of x (N, D) and y (M, D): (N, M), KID's kernel
    (Binkowski et al. 2018, sec. 3.2)."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x, y, kernel: Callable[[Tensor, Tensor], Tensor] = polynomial_kernel) -> float:
    """The unbiased estimator of MMD^2 (Gretton et al. 2012, eq. 3):
    sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1))
    - 2 sum_{i, j} k(x_i, y_j) / (m n); its mean over samples of two equal distributions is 0."""
    a, b = _float64(x, "x", 2), _float64(y, "y", 2)
    m, n = a.shape[0], b.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"x has {m} and y {n} rows; the unbiased MMD needs at least 2 each")
    kxx, kyy, kxy = kernel(a, a), kernel(b, b), kernel(a, b)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(xx + yy - 2 * kxy.mean())


def kernel_inception_distance(features1, features2, *, subsets: int = 100, subset_size: int = 1000,
                              generator: Optional[torch.Generator] = None) -> Tuple[float, float]:
    """KID (Binkowski et al. 2018): the unbiased polynomial-kernel MMD^2 (`mmd2_unbiased`) of
    `subsets` pairs of random subsets of `subset_size` rows (each drawn without replacement,
    capped at the smaller set's size), mean and standard deviation over the subsets.

    Args:
      features1 (N1, D), features2 (N2, D): the two feature sets.
      subsets: number of subset pairs (100 as torch-fidelity and Binkowski et al.'s code).
      subset_size: rows per subset (1000 as they do).
      generator: the source of the subsets (a fixed result for a fixed seed).

    Returns:
      (mean, standard deviation over the subsets).
    """
    a, b = _float64(features1, "features1", 2), _float64(features2, "features2", 2)
    for name, v in (("subsets", subsets), ("subset_size", subset_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "subsets" else 2):
            raise ValueError(f"{name}={v!r}: expected an integer >= {1 if name == 'subsets' else 2}")
    m = min(subset_size, a.shape[0], b.shape[0])
    # Small sets: the three kernel matrices once, each subset's sums read from them (the same
    # numbers as `mmd2_unbiased` on the subset, D times fewer operations).
    whole = a.shape[0] * b.shape[0] <= PRECOMPUTE_LIMIT and a.shape[0] ** 2 <= PRECOMPUTE_LIMIT \
        and b.shape[0] ** 2 <= PRECOMPUTE_LIMIT
    if whole:
        kxx, kyy, kxy = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
    values = []
    for _ in range(subsets):
        ia = torch.randperm(a.shape[0], generator=generator)[:m]
        ib = torch.randperm(b.shape[0], generator=generator)[:m]
        if not whole:
            values.append(mmd2_unbiased(a[ia], b[ib]))
            continue
        sxx, syy = kxx[ia][:, ia], kyy[ib][:, ib]
        xx = (sxx.sum() - sxx.diagonal().sum()) / (m * (m - 1))
        yy = (syy.sum() - syy.diagonal().sum()) / (m * (m - 1))
        values.append(float(xx + yy - 2 * kxy[ia][:, ib].mean()))
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), float(v.std(unbiased=False)) if subsets > 1 else 0.0


def bootstrap_std(statistic: Callable[[Tensor], float], rows, *, resamples: int,
                  generator: Optional[torch.Generator] = None) -> float:
    """Bootstrap standard error of statistic(rows): the standard deviation of the statistic over
    `resamples` draws of len(rows) rows with replacement (Efron & Tibshirani 1993, ch. 6)."""
    x = torch.as_tensor(rows)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 2:
        raise ValueError(f"resamples={resamples!r}: expected an integer >= 2")
    values = [statistic(x[torch.randint(len(x), (len(x),), generator=generator)]) for _ in range(resamples)]
    return float(torch.tensor(values, dtype=torch.float64).std())
