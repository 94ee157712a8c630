"""The Frechet distance against closed forms and scipy's sqrtm on known Gaussians; a set against itself is 0."""

import numpy as np
import pytest

from videogen.evaluation.frechet import GaussianStats, frechet_distance


def test_a_set_against_itself_is_zero_even_with_more_dims_than_samples():
    rng = np.random.default_rng(0)
    for n, d in ((200, 16), (40, 400)):  # (40, 400): a rank-deficient covariance, as FVD on few videos has
        x = rng.normal(size=(n, d)) * rng.uniform(0.1, 5, size=d) + rng.normal(size=d)
        s = GaussianStats.of(x)
        assert abs(frechet_distance(s, GaussianStats.of(x.copy()))) < 1e-6


def test_known_gaussians_closed_form():
    # diagonal covariances: d = |mu1-mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(GaussianStats(mu1, np.diag(a), 10), GaussianStats(mu2, np.diag(b), 10))
    assert got == pytest.approx(want, abs=1e-10)
    # a rotation of both covariances does not change the distance
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    rotated = frechet_distance(GaussianStats(q @ mu1, q @ np.diag(a) @ q.T, 10), GaussianStats(q @ mu2, q @ np.diag(b) @ q.T, 10))
    assert rotated == pytest.approx(want, abs=1e-9)


def test_matches_the_scipy_reference_on_random_covariances():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    for d in (4, 32):
        a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
        s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        covmean = linalg.sqrtm(s1 @ s2).real
        want = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
        got = frechet_distance(GaussianStats(mu1, s1, 100), GaussianStats(mu2, s2, 100))
        assert got == pytest.approx(want, rel=1e-8, abs=1e-8)


def test_sample_statistics_converge_to_the_true_distance(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, size=(20000, 2))
    y = rng.normal(0, 2, size=(20000, 2)) + [3.0, 0.0]
    a = GaussianStats.of(x)
    a.save(tmp_path / "a.npz")
    loaded = GaussianStats.load(tmp_path / "a.npz")
    assert loaded.count == 20000 and np.array_equal(loaded.sigma, a.sigma)
    assert frechet_distance(loaded, GaussianStats.of(y)) == pytest.approx(9 + 2 * (2 - 1) ** 2, rel=0.03)


def test_refuses_too_few_vectors_and_mismatched_sizes():
    with pytest.raises(ValueError, match="at least 2"):
        GaussianStats.of(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(GaussianStats.of(np.eye(3)), GaussianStats.of(np.eye(4)))
