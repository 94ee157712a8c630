"""The Frechet distance between two Gaussians fitted to feature sets (FID, FVD and the VAE proxy).

    d^2 = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1^{1/2} S_2 S_1^{1/2})^{1/2})

(Dowson & Landau 1982; Heusel et al. 2017 for FID, Unterthiner et al. 2018 for FVD). The trace term
is computed as the nuclear norm (sum of singular values) of S_2^{1/2} S_1^{1/2}, whose square is
S_1^{1/2} S_2 S_1^{1/2}: the square roots of the symmetric PSD covariances come from
``numpy.linalg.eigh`` in float64, so no complex parts appear, no scipy is needed and the error does
not grow with the square root of rounding noise (a set against itself gives 0 to ~1e-12). It equals
``tr(scipy.linalg.sqrtm(S_1 @ S_2))`` of the usual implementation (same eigenvalues).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class GaussianStats:
    """Mean (D,) and covariance (D, D) of ``count`` feature vectors."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int

    @classmethod
    def of(cls, features: np.ndarray) -> "GaussianStats":
        """Statistics of (N, D) features (the unbiased covariance; N >= 2)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"a Frechet distance needs at least 2 feature vectors (N, D), got shape {x.shape}")
        return cls(x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]), x.shape[0])

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, mu=self.mu, sigma=self.sigma, count=np.int64(self.count))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "GaussianStats":
        with np.load(path, allow_pickle=False) as f:
            return cls(f["mu"], f["sigma"], int(f["count"]))


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """The squared Frechet distance between the two Gaussians (what FID/FVD report)."""
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"feature sizes differ: {a.mu.shape[0]} vs {b.mu.shape[0]} (same extractor for both sets?)")
    root_a = _sqrt_psd(a.sigma)
    root_b = root_a if b.sigma is a.sigma or np.array_equal(a.sigma, b.sigma) else _sqrt_psd(b.sigma)
    trace_sqrt = float(np.linalg.svd(root_b @ root_a, compute_uv=False).sum())
    diff = a.mu - b.mu
    d = float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * trace_sqrt)
    return max(d, 0.0)
