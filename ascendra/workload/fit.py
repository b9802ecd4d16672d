"""Fit a bivariate Gaussian mixture to (log prompt length, log output length) by EM.

Request lengths in real traces are neither independent nor log-normal: the Azure conversation trace
has clusters (a templated system prompt near 1,000-1,200 tokens, outputs bunched near 85 and 400),
and arXiv summaries have a strong negative prompt/output correlation because the dataset was
filtered to a total of at most 4,096 tokens. A few full-covariance components in log space capture
both the marginals and the correlation with a handful of numbers.

Token counts are integers, and in the code trace most outputs sit on 6..13; fitting a continuous
density to point masses lets a component collapse onto one value. So counts are dequantised first
(uniform noise in [-0.5, 0.5)) and sampling rounds back to integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Floor on each component's log-space variance: keeps EM away from degenerate (zero-width) components.
_MIN_VAR = 1e-3


@dataclass(frozen=True, slots=True)
class MixtureFit:
    weights: np.ndarray  # (k,)
    means: np.ndarray  # (k, 2)
    covs: np.ndarray  # (k, 2, 2)
    log_likelihood: float  # total, in log space
    bic: float


def dequantized_log(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """log of integer counts spread uniformly over their rounding interval (kept >= 0.5)."""
    x = counts.astype(np.float64) + rng.uniform(-0.5, 0.5, size=counts.shape)
    return np.log(np.maximum(x, 0.5))


def _log_pdf(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    d = x - mean
    det = cov[0, 0] * cov[1, 1] - cov[0, 1] ** 2
    inv = np.array([[cov[1, 1], -cov[0, 1]], [-cov[0, 1], cov[0, 0]]]) / det
    maha = np.einsum("ni,ij,nj->n", d, inv, d)
    return -0.5 * maha - np.log(2 * np.pi) - 0.5 * np.log(det)


def _init_means(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    # k-means++ seeding: spread starting means over the data's clusters.
    means = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d2 = np.min(((x[:, None, :] - np.array(means)[None]) ** 2).sum(-1), axis=1)
        means.append(x[rng.choice(len(x), p=d2 / d2.sum())])
    return np.array(means)


def fit_mixture(x: np.ndarray, k: int, *, seed: int = 0, iters: int = 300, tol: float = 1e-6) -> MixtureFit:
    """EM for a k-component full-covariance Gaussian mixture on points x of shape (n, 2)."""
    rng = np.random.default_rng(seed)
    n = len(x)
    means = _init_means(x, k, rng)
    covs = np.repeat(np.cov(x.T)[None], k, axis=0)
    weights = np.full(k, 1.0 / k)
    prev = -np.inf
    for _ in range(iters):
        logp = np.stack([np.log(weights[j]) + _log_pdf(x, means[j], covs[j]) for j in range(k)], axis=1)
        top = logp.max(axis=1, keepdims=True)
        norm = top[:, 0] + np.log(np.exp(logp - top).sum(axis=1))
        ll = float(norm.sum())
        resp = np.exp(logp - norm[:, None])
        nk = resp.sum(axis=0) + 1e-12
        weights = nk / n
        means = (resp.T @ x) / nk[:, None]
        for j in range(k):
            d = x - means[j]
            c = (resp[:, j, None] * d).T @ d / nk[j]
            c[0, 0] = max(c[0, 0], _MIN_VAR)
            c[1, 1] = max(c[1, 1], _MIN_VAR)
            covs[j] = c
        if ll - prev < tol * abs(ll):
            break
        prev = ll
    num_params = k * 6 - 1  # 2 means + 3 covariance terms per component, weights sum to 1
    return MixtureFit(weights, means, covs, ll, bic=num_params * np.log(n) - 2 * ll)


def fit_best_mixture(x: np.ndarray, *, max_k: int = 8, seed: int = 0, restarts: int = 2) -> MixtureFit:
    """The mixture with the lowest BIC over k = 1..max_k (best of a few EM restarts each)."""
    best: MixtureFit | None = None
    for k in range(1, max_k + 1):
        for r in range(restarts if k > 1 else 1):
            fit = fit_mixture(x, k, seed=seed + 1000 * k + r)
            if best is None or fit.bic < best.bic:
                best = fit
    assert best is not None
    return best
