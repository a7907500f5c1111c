"""sde_lib.metrics against closed forms and independent computations: FID of two Gaussians, FID
by scipy's general matrix square root, KID's unbiasedness and its direct double sum, the
Inception Score's two extremes."""
import itertools

import numpy as np
import pytest
import scipy.linalg
import torch

from sde_lib.metrics import (bootstrap_std, feature_statistics, frechet_distance, inception_score,
                             kernel_inception_distance, mmd2_unbiased, polynomial_kernel)


def random_covariance(rng, d, scale=1.0):
    a = rng.normal(size=(d, d + 3))
    return scale * a @ a.T / d


def fid_by_scipy(mu1, s1, mu2, s2):
    """The textbook formula with scipy's general (Schur) square root of sigma1 sigma2."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_one_dimension_closed_form():
    # W2^2 between N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2.
    got = frechet_distance(np.array([0.3]), np.array([[4.0]]), np.array([-1.2]), np.array([[0.25]]))
    assert got == pytest.approx(1.5 ** 2 + (2.0 - 0.5) ** 2, rel=1e-12)


def test_frechet_distance_commuting_covariances_closed_form():
    # Covariances with common eigenvectors Q: tr (S1 S2)^{1/2} = sum sqrt(a_i b_i), so the
    # distance is |dmu|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    rng = np.random.default_rng(0)
    d = 20
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a, b = rng.uniform(0.01, 3.0, d), rng.uniform(0.01, 3.0, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_a_gaussian_to_itself_is_zero():
    rng = np.random.default_rng(1)
    mu, s = rng.normal(size=32), random_covariance(rng, 32)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-9 * np.trace(s)


@pytest.mark.parametrize("d", [8, 64, 256])
def test_frechet_distance_matches_scipy_sqrtm_on_random_features(d):
    rng = np.random.default_rng(d)
    f1 = rng.normal(size=(1000, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    f2 = rng.standard_t(5, size=(800, d)) + 0.1
    (mu1, s1), (mu2, s2) = feature_statistics(f1), feature_statistics(f2)
    np.testing.assert_allclose(s1, np.cov(f1, rowvar=False), rtol=1e-10, atol=1e-12)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(fid_by_scipy(mu1, s1, mu2, s2), rel=1e-7)


def test_frechet_distance_rank_deficient_covariances():
    # Fewer rows than dimensions (singular covariances, the usual state of a 2048-d FID on a few
    # hundred samples): still finite, non-negative and equal to scipy's value.
    rng = np.random.default_rng(3)
    f1, f2 = rng.normal(size=(30, 64)), rng.normal(size=(40, 64)) + 0.2
    (mu1, s1), (mu2, s2) = feature_statistics(f1), feature_statistics(f2)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got > 0 and got == pytest.approx(fid_by_scipy(mu1, s1, mu2, s2), rel=1e-6)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def direct_mmd2_unbiased(x, y):
    """The estimator written as its double sums, one pair at a time."""
    k = lambda a, b: (float(np.dot(a, b)) / len(a) + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_the_direct_formula():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(25, 6)), rng.normal(size=(25, 6)) * 1.3 + 0.2
    expected = direct_mmd2_unbiased(x, y)
    assert mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-10)
    # One subset as large as the sets: the subset is the whole set (in some order).
    mean, std = kernel_inception_distance(x, y, subsets=1, subset_size=25,
                                          generator=torch.Generator().manual_seed(0))
    assert mean == pytest.approx(expected, rel=1e-10) and std == 0.0


def test_kid_is_unbiased():
    # R draws of two samples of one distribution: the unbiased MMD^2 has mean 0, so the mean of
    # the R values lies within 3 standard errors (std / sqrt(R)) of 0 (fixed seed). The biased
    # V-statistic (diagonal terms kept) fails the same test, so the test can tell.
    rng = np.random.default_rng(5)
    R, m, d = 400, 20, 16
    unbiased, biased = [], []
    for _ in range(R):
        x, y = rng.standard_t(4, size=(m, d)), rng.standard_t(4, size=(m, d))
        unbiased.append(mmd2_unbiased(x, y))
        kxx, kyy = polynomial_kernel(torch.tensor(x), torch.tensor(x)), polynomial_kernel(torch.tensor(y), torch.tensor(y))
        kxy = polynomial_kernel(torch.tensor(x), torch.tensor(y))
        biased.append(float(kxx.mean() + kyy.mean() - 2 * kxy.mean()))
    u, b = np.array(unbiased), np.array(biased)
    se_u, se_b = u.std(ddof=1) / np.sqrt(R), b.std(ddof=1) / np.sqrt(R)
    assert abs(u.mean()) < 3 * se_u
    assert b.mean() > 3 * se_b


def test_kid_from_precomputed_kernels_equals_kid_per_subset(monkeypatch):
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(60, 5)), rng.normal(size=(50, 5)) * 1.2
    fast = kernel_inception_distance(x, y, subsets=7, subset_size=30, generator=torch.Generator().manual_seed(2))
    import sde_lib.metrics as metrics_module
    monkeypatch.setattr(metrics_module, "PRECOMPUTE_LIMIT", 0)
    slow = kernel_inception_distance(x, y, subsets=7, subset_size=30, generator=torch.Generator().manual_seed(2))
    assert fast == pytest.approx(slow, rel=1e-10)


def test_kid_subsets_reproducible_and_spread():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(300, 10)), rng.normal(size=(200, 10)) + 0.5
    a = kernel_inception_distance(x, y, subsets=20, subset_size=50, generator=torch.Generator().manual_seed(1))
    b = kernel_inception_distance(x, y, subsets=20, subset_size=50, generator=torch.Generator().manual_seed(1))
    assert a == b and a[0] > 0 and a[1] > 0


def test_inception_score_uniform_logits_is_one():
    mean, std = inception_score(np.zeros((200, 10)), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("classes", [2, 10, 1008])
def test_inception_score_confident_balanced_logits_is_the_number_of_classes(classes):
    # Every sample certain of its class (logit gap 100: p(y|x) = 1 - O(K e^-100)), classes
    # cycled so that each split holds each class equally often: IS = exp H(y) = K.
    labels = np.arange(classes * 10) % classes
    logits = 100.0 * np.eye(classes)[labels]
    mean, std = inception_score(logits, splits=10 if classes < 1000 else 1)
    assert mean == pytest.approx(classes, rel=1e-9) and std == pytest.approx(0.0, abs=1e-6)


def test_inception_score_rejects_bad_splits():
    with pytest.raises(ValueError, match="splits=20"):
        inception_score(np.zeros((10, 3)), splits=20)


def test_bootstrap_std_of_a_mean_is_its_standard_error():
    # The bootstrap standard error of a sample mean is about std / sqrt(n); with 400 resamples
    # its own relative error is about 1 / sqrt(2 * 400) = 3.5%, so 15% is over 4 of its SEs.
    x = torch.tensor(np.random.default_rng(7).normal(size=500))
    got = bootstrap_std(lambda r: float(r.mean()), x, resamples=400, generator=torch.Generator().manual_seed(0))
    assert got == pytest.approx(float(x.std()) / np.sqrt(500), rel=0.15)
