"""Analytic oracle: a Gaussian mixture with exact marginals, scores and log-densities under every SDE.

Every SDE in `sde_lib.sdes` is linear with kernel p_0t(x_t | x_0) = N(alpha(t) x_0, std(t)^2 I), so a
mixture p_0 = sum_k w_k N(mu_k, Sigma_k) stays a mixture at every time:

    p_t(x) = sum_k w_k N(x; alpha(t) mu_k, alpha(t)^2 Sigma_k + std(t)^2 I).

With Sigma_k = U_k diag(lam_k) U_k^T (computed once), the time-t covariance has the same
eigenvectors and eigenvalues alpha^2 lam_k + std^2, so log-densities and scores cost two
matrix products per component, in float64, for a different t per example.

Use it to debug your own code: plug `GaussianMixture.score_fn(sde)` into any sampler as a perfect
score model and compare the samples with `sample()`; compare a likelihood with `log_prob`.

Example:
    >>> gm = GaussianMixture.random(dim=2, n_components=5, seed=0)
    >>> sde = VPSDE()
    >>> x, nfe = sampling.sample(sde, gm.score_fn(sde), (1000, 2), method="ode")
    >>> nll_gap = (-gm.log_prob(x)).mean() - gm.entropy()[0]     # ~0 for exact samples
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

Tensor = torch.Tensor


class GaussianMixture:
    """p_0(x) = sum_k w_k N(x; mu_k, Sigma_k) in d = prod(event_shape) dimensions.

    Args:
      weights: (K,) positive, normalised here.
      means: (K, d).
      covs: (K, d, d) symmetric positive definite.
      event_shape: the shape of one sample, e.g. (3, 8, 8); default (d,).
    """

    def __init__(self, weights, means, covs, event_shape: Optional[Sequence[int]] = None):
        w = torch.as_tensor(np.asarray(weights), dtype=torch.float64)
        mu = torch.as_tensor(np.asarray(means), dtype=torch.float64)
        cov = torch.as_tensor(np.asarray(covs), dtype=torch.float64)
        K, d = mu.shape if mu.ndim == 2 else (None, None)
        if mu.ndim != 2 or w.shape != (K,) or cov.shape != (K, d, d):
            raise ValueError(
                f"shapes weights {tuple(w.shape)}, means {tuple(mu.shape)}, covs {tuple(cov.shape)}:"
                " expected (K,), (K, d), (K, d, d)"
            )
        if (w <= 0).any():
            raise ValueError("weights must be positive")
        self.event_shape = tuple(event_shape) if event_shape is not None else (d,)
        if math.prod(self.event_shape) != d:
            raise ValueError(f"event_shape={self.event_shape} does not hold d={d} numbers")
        self.weights = w / w.sum()
        self.means = mu
        self.covs = 0.5 * (cov + cov.transpose(1, 2))
        self.eigvals, self.eigvecs = torch.linalg.eigh(self.covs)  # (K, d), (K, d, d)
        if (self.eigvals <= 0).any():
            raise ValueError("every covariance must be positive definite")
        self._chol = torch.linalg.cholesky(self.covs)
        # Diagonal covariances (a common basis that is the identity) skip the projections.
        off_diag = self.covs - torch.diag_embed(torch.diagonal(self.covs, dim1=1, dim2=2))
        self.diagonal = bool((off_diag == 0).all())

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_npz(cls, path: str, prefix: str) -> "GaussianMixture":
        """Load arrays `{prefix}_weights`, `{prefix}_means`, `{prefix}_covs` (and `{prefix}_shape`)."""
        data = np.load(path)
        shape = data[f"{prefix}_shape"] if f"{prefix}_shape" in data else None
        return cls(data[f"{prefix}_weights"], data[f"{prefix}_means"], data[f"{prefix}_covs"], shape)

    @classmethod
    def random(cls, dim: int, n_components: int, seed: int = 0, scale: float = 2.0) -> "GaussianMixture":
        """A random mixture: unequal weights, means of spread `scale`, anisotropic covariances."""
        rng = np.random.default_rng(seed)
        w = rng.uniform(0.5, 1.5, n_components)
        mu = rng.normal(0.0, scale, (n_components, dim))
        covs = []
        for _ in range(n_components):
            q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
            covs.append(q @ np.diag(rng.uniform(0.05, 0.6, dim) ** 2) @ q.T)
        return cls(w, mu, np.stack(covs))

    # ------------------------------------------------------------------ basic facts
    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def mean(self) -> Tensor:
        """Mean of p_0, (d,) float64."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Covariance of p_0, (d, d) float64 (law of total covariance)."""
        m = self.mean()
        dev = self.means - m
        return torch.einsum("k,kij->ij", self.weights, self.covs) + torch.einsum(
            "k,ki,kj->ij", self.weights, dev, dev
        )

    def sample(
        self, n: int, generator: Optional[torch.Generator] = None, return_labels: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        """Draw n samples of p_0, shape (n, *event_shape) (and their component labels (n,))."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = torch.empty(n, self.dim, dtype=torch.float64)
        for j in range(self.n_components):  # one matrix product per component, not per sample
            rows = k == j
            x[rows] = self.means[j] + z[rows] @ self._chol[j].T
        x = x.to(dtype).reshape(n, *self.event_shape)
        return (x, k) if return_labels else x

    # ------------------------------------------------------------------ densities at time t
    def _time_coeffs(self, x: Tensor, sde, t) -> Tuple[Tensor, Tensor]:
        B = x.shape[0]
        if sde is None or t is None:
            return torch.ones(B, dtype=torch.float64), torch.zeros(B, dtype=torch.float64)
        t = torch.as_tensor(t, dtype=torch.float64)
        if t.ndim == 0:
            t = t.expand(B)
        alpha, std = sde.marginal_coeffs(t.to(x.device))
        return alpha.to(torch.float64), std.to(torch.float64)

    def _components(self, x: Tensor, sde, t):
        """Per component: log w_k N_k(x) (B, K) and the component scores (B, K, d)."""
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        dev_ = xf.device
        if xf.shape[1] != self.dim:
            raise ValueError(f"x has {xf.shape[1]} numbers per example; the mixture has d={self.dim}")
        alpha, std = (c.to(dev_) for c in self._time_coeffs(x, sde, t))
        mu = self.means.to(dev_)
        # var[b, k, j] = alpha_b^2 lam_kj + std_b^2 ; z[b, k, :] = U_k^T (x_b - alpha_b mu_k)
        dev = xf[:, None, :] - alpha[:, None, None] * mu[None]
        if self.diagonal:
            lam = torch.diagonal(self.covs, dim1=1, dim2=2).to(dev_)
            z = dev
        else:
            lam, U = self.eigvals.to(dev_), self.eigvecs.to(dev_)
            z = torch.einsum("bkd,kde->bke", dev, U)
        if bool((alpha == alpha[0]).all() and (std == std[0]).all()):  # one time for the batch
            alpha, std = alpha[:1], std[:1]  # (samplers): the variances are computed once
        var = alpha[:, None, None] ** 2 * lam[None] + std[:, None, None] ** 2
        z_over_var = z / var
        log_n = -0.5 * ((z * z_over_var).sum(-1) + torch.log(2 * math.pi * var).sum(-1))
        comp_scores = -z_over_var if self.diagonal else -torch.einsum("bke,kde->bkd", z_over_var, U)
        return torch.log(self.weights).to(dev_)[None] + log_n, comp_scores

    def log_prob(self, x: Tensor, sde=None, t=None, y: Optional[Tensor] = None) -> Tensor:
        """log p_t(x) per example, (B,) float64; p_0 when sde/t are None; log p_t(x | y) given y."""
        log_wn, _ = self._components(x, sde, t)
        if y is not None:
            log_n = log_wn - torch.log(self.weights).to(log_wn.device)[None]
            return log_n.gather(1, y.long().to(log_wn.device)[:, None])[:, 0]
        return torch.logsumexp(log_wn, dim=1)

    def score(self, x: Tensor, sde=None, t=None, y: Optional[Tensor] = None) -> Tensor:
        """grad_x log p_t(x) (or log p_t(x | y)), shape and dtype of x."""
        log_wn, comp_scores = self._components(x, sde, t)
        if y is None:
            resp = torch.softmax(log_wn, dim=1)
            s = torch.einsum("bk,bkd->bd", resp, comp_scores)
        else:
            s = comp_scores[torch.arange(x.shape[0], device=x.device), y.long().to(x.device)]
        return s.reshape(x.shape).to(device=x.device, dtype=x.dtype)

    def class_log_posterior(self, x: Tensor, sde=None, t=None) -> Tensor:
        """log p_t(y = k | x) with components as classes, (B, K) float64."""
        log_wn, _ = self._components(x, sde, t)
        return torch.log_softmax(log_wn, dim=1)

    def score_fn(self, sde, y: Optional[Tensor] = None) -> Callable[[Tensor, Tensor], Tensor]:
        """An exact score_fn(x, t) for `sde`, usable by every sampler (class-conditional if y)."""

        def score_fn(x: Tensor, t: Tensor) -> Tensor:
            return self.score(x, sde, t, y=y)

        return score_fn

    def labelled_score_fn(self, sde, null_label: int = -1) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        """An exact score_fn_y(x, t, y) with per-example labels, as a class-conditional network has.

        Components are the classes: label k gives grad log p_t(x | k); `null_label` gives the
        unconditional grad log p_t(x) (the "null token" of classifier-free guidance).
        """

        def score_fn_y(x: Tensor, t: Tensor, y: Tensor) -> Tensor:
            y = torch.as_tensor(y, device=x.device).long().expand(x.shape[0])
            null = y == null_label
            if (~null & ((y < 0) | (y >= self.n_components))).any():
                raise ValueError(f"labels must be in [0, {self.n_components}) or null_label={null_label}")
            log_wn, comp_scores = self._components(x, sde, t)
            resp = torch.softmax(log_wn, dim=1)
            onehot = torch.nn.functional.one_hot(y.clamp(0, self.n_components - 1), self.n_components)
            weights = torch.where(null[:, None], resp, onehot.to(resp.dtype))
            s = torch.einsum("bk,bkd->bd", weights, comp_scores)
            return s.reshape(x.shape).to(device=x.device, dtype=x.dtype)

        return score_fn_y

    @staticmethod
    def split_indices(known, d: int) -> Tuple[Tensor, Tensor]:
        """(known, unknown) coordinate indices (ascending, LongTensor) from a mask of d entries
        (bool or float, or any tensor of the event shape; 1 = known) or a 1-D integer tensor of
        known indices."""
        known = torch.as_tensor(known)
        if known.dtype == torch.bool or known.is_floating_point() or known.ndim > 1:
            flat = known.reshape(-1)
            if flat.numel() != d:
                raise ValueError(f"the known mask has {flat.numel()} entries; the mixture has d={d}")
            if not bool(((flat == 0) | (flat == 1)).all()):
                raise ValueError("the known mask must hold only 0/1 (False/True)")
            is_known = flat.bool()
        else:
            idx = known.reshape(-1).long()
            if idx.numel() and (idx.min() < 0 or idx.max() >= d):
                raise ValueError(f"known indices must lie in [0, {d})")
            is_known = torch.zeros(d, dtype=torch.bool)
            is_known[idx] = True
        all_idx = torch.arange(d)
        return all_idx[is_known], all_idx[~is_known]

    def conditional(self, known, x_known) -> "GaussianMixture":
        """The exact conditional p_0(x_u | x_k = x_known) over the unknown coordinates x_u.

        Each component conditions as a Gaussian and the weights become posterior weights:
            w_k' ~ w_k N(x_known; mu_k,k, Sigma_k,kk),
            mu_k' = mu_k,u + Sigma_k,uk Sigma_k,kk^-1 (x_known - mu_k,k),
            Sigma_k' = Sigma_k,uu - Sigma_k,uk Sigma_k,kk^-1 Sigma_k,ku.
        To condition p_t, call it on `marginal(sde, t)`.

        Args:
          known: boolean mask of the d coordinates (any shape with d entries, True = known), or
            a 1-D tensor of known indices (see `split_indices`).
          x_known: the known values in ascending index order, (n_known,); or one full example
            (d entries, any shape) whose known coordinates are read.

        Returns:
          A GaussianMixture over the unknown coordinates (ascending index order), event shape
          (d_u,), float64.
        """
        k_idx, u_idx = self.split_indices(known, self.dim)
        if len(u_idx) == 0 or len(k_idx) == 0:
            raise ValueError("conditioning needs at least one known and one unknown coordinate")
        y = torch.as_tensor(x_known, dtype=torch.float64).reshape(-1)
        if y.numel() == self.dim:
            y = y[k_idx]
        elif y.numel() != len(k_idx):
            raise ValueError(f"x_known has {y.numel()} values; expected {len(k_idx)} (known) or {self.dim} (full)")
        mu_k, mu_u = self.means[:, k_idx], self.means[:, u_idx]
        S_kk = self.covs[:, k_idx][:, :, k_idx]
        S_uk = self.covs[:, u_idx][:, :, k_idx]
        S_uu = self.covs[:, u_idx][:, :, u_idx]
        L = torch.linalg.cholesky(S_kk)
        dev = (y[None] - mu_k)[..., None]  # (K, n_k, 1)
        white = torch.linalg.solve_triangular(L, dev, upper=False)  # L^-1 (y - mu_k)
        log_n = (-0.5 * white.square().sum((1, 2)) - torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(1)
                 - 0.5 * len(k_idx) * math.log(2 * math.pi))
        log_w = torch.log(self.weights) + log_n
        gain = torch.cholesky_solve(S_uk.transpose(1, 2), L).transpose(1, 2)  # S_uk S_kk^-1
        means = mu_u + (gain @ dev)[..., 0]
        covs = S_uu - gain @ S_uk.transpose(1, 2)
        weights = torch.softmax(log_w, dim=0)
        keep = weights > 0  # components with underflowing posterior weight drop out
        return GaussianMixture(weights[keep], means[keep], covs[keep])

    def linear_map(self, A, event_shape: Optional[Sequence[int]] = None) -> "GaussianMixture":
        """The law of A x for x ~ p_0: means A mu_k, covariances A Sigma_k A^T.

        Args:
          A: (d', d) of full row rank (e.g. an orthogonal change of basis).
          event_shape: of the mapped samples; default (d',) or this event shape when d' = d.
        """
        A = torch.as_tensor(np.asarray(A), dtype=torch.float64)
        if A.ndim != 2 or A.shape[1] != self.dim:
            raise ValueError(f"A has shape {tuple(A.shape)}; expected (d', {self.dim})")
        if event_shape is None and A.shape[0] == self.dim:
            event_shape = self.event_shape
        covs = A @ self.covs @ A.T
        return GaussianMixture(self.weights, self.means @ A.T, covs, event_shape)

    def marginal(self, sde, t: float) -> "GaussianMixture":
        """p_t as a GaussianMixture at one time t (float)."""
        alpha, std = sde.marginal_coeffs(torch.tensor([float(t)], dtype=torch.float64))
        a, s = alpha.item(), std.item()
        covs = a**2 * self.covs + s**2 * torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.weights, a * self.means, covs, self.event_shape)

    def component_entropies(self) -> Tensor:
        """Exact entropies H(N(mu_k, Sigma_k)) = (d log(2 pi e) + log det Sigma_k) / 2 of the
        components (the classes), (K,) float64 nats."""
        return 0.5 * (self.dim * math.log(2 * math.pi * math.e) + torch.log(self.eigvals).sum(-1))

    def entropy(self, n: int = 200_000, seed: int = 0) -> Tuple[float, float]:
        """Monte-Carlo entropy H(p_0) = -E log p_0 in nats, with its standard error."""
        g = torch.Generator().manual_seed(seed)
        vals = []
        for start in range(0, n, 20_000):
            x = self.sample(min(20_000, n - start), generator=g, dtype=torch.float64)
            vals.append(-self.log_prob(x))
        v = torch.cat(vals)
        return v.mean().item(), (v.std() / math.sqrt(len(v))).item()

