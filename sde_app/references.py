"""The classical reference model of `--mode eval` (`config.eval.references = ("gaussian_mixture",)`;
the other reference, "floor", is the test split itself: `sde_app.evaluation`):

* "gaussian_mixture": the classical model a user would fit instead, scikit-learn's
  `GaussianMixture` with full covariances on the same uniformly dequantised data as the score
  model, in the same model space: its number of components is the one of `gmm_components` with
  the best log-likelihood on a validation split (a fixed fifth of the training split), then it is
  refitted on the whole training split. Its test bits/dim are exact (a closed-form density), on
  the very test points of the model's likelihood; its samples go through the same quantisation
  and feature network as the model's.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Sequence, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from sde_lib.likelihood import bits_per_dim

from .data import DataSpec

GMM_REG_COVAR = 1e-3  # added to the covariances' diagonals: about the variance of the dequantisation noise on 17 levels
GMM_VALIDATION_FRACTION = 0.2
GMM_SEED = 0


def _bits_per_dim(logp: np.ndarray, data: DataSpec) -> np.ndarray:
    return bits_per_dim(torch.as_tensor(logp), data.dim, centered=data.centered, num_bins=data.levels).numpy()


def fit_gaussian_mixture(x_train: np.ndarray, data: DataSpec, components: Sequence[int], *,
                         seed: int = GMM_SEED, progress: bool = False) -> Dict[str, Any]:
    """Choose the number of components on a validation split, refit on all of `x_train` (N, D).

    Returns:
      {"model": the fitted sklearn GaussianMixture, "components": the chosen number,
       "validation_bits_per_dim": {k: bits/dim on the validation split}}.
    """
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x_train))
    n_val = int(round(GMM_VALIDATION_FRACTION * len(x_train)))
    fit, val = x_train[perm[n_val:]], x_train[perm[:n_val]]
    scores = {}
    for k in tqdm(components, desc="Gaussian mixture (components on a validation split)", leave=False,
                  disable=not progress):
        if k > len(fit):
            continue
        gmm = GaussianMixture(k, covariance_type="full", reg_covar=GMM_REG_COVAR, random_state=seed,
                              max_iter=500).fit(fit)
        scores[k] = float(_bits_per_dim(gmm.score_samples(val), data).mean())
    best = min(scores, key=scores.get)
    model = GaussianMixture(best, covariance_type="full", reg_covar=GMM_REG_COVAR, random_state=seed,
                            max_iter=500).fit(x_train)
    return {"model": model, "components": best, "validation_bits_per_dim": scores}


def gaussian_mixture_reference(data: DataSpec, x_train: torch.Tensor, x_test: torch.Tensor, num_samples: int,
                               components: Sequence[int], *, seed: int = GMM_SEED, progress: bool = False
                               ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, Any]]:
    """The Gaussian-mixture reference on model-space data (dequantised): fitted on x_train (N,
    *shape), its bits/dim of each row of x_test, and `num_samples` samples (model space, random
    order: sklearn returns them grouped by component).

    Returns:
      (bits/dim (M,) float64, samples (num_samples, *shape) float32, facts: components chosen,
      validation bits/dim per number of components, reg_covar, wall time).
    """
    start = time.perf_counter()
    flat = lambda x: x.reshape(len(x), -1).double().numpy()  # noqa: E731
    fitted = fit_gaussian_mixture(flat(x_train), data, components, seed=seed, progress=progress)
    gmm = fitted["model"]
    bpd = torch.from_numpy(_bits_per_dim(gmm.score_samples(flat(x_test)), data))
    gmm.random_state = seed
    samples, _ = gmm.sample(num_samples)
    samples = samples[np.random.default_rng(seed + 1).permutation(num_samples)]
    samples = torch.from_numpy(samples).float().reshape(num_samples, *data.shape)
    facts = {"components": fitted["components"], "covariance": "full", "reg_covar": GMM_REG_COVAR,
             "validation_bits_per_dim": fitted["validation_bits_per_dim"],
             "fit_wall_s": time.perf_counter() - start}
    return bpd, samples, facts
