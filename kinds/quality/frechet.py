"""The Fréchet distance between two sets of features, each summarised as a Gaussian
(mean and covariance): the FID when the features are an image network's.

    d² = |m1 - m2|² + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^½)

Tr((S1 S2)^½) is computed as the sum of the square roots of the eigenvalues of the
symmetric S1^½ S2 S1^½ (it has the eigenvalues of S1 S2), so two symmetric eigen
decompositions in numpy replace scipy's general matrix square root, in float64. Light:
numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Gaussian:
    """The mean and covariance of a set of feature vectors, in float64."""

    mean: np.ndarray
    covariance: np.ndarray
    count: int

    @classmethod
    def of(cls, features: np.ndarray) -> Gaussian:
        """The statistics of `features` (n, d), n >= 2 (the covariance is unbiased)."""
        values = np.asarray(features, dtype=np.float64)
        if values.ndim != 2 or len(values) < 2:
            raise ValueError(f"need at least 2 feature vectors (n, d), got shape {values.shape}")
        covariance = np.atleast_2d(np.cov(values, rowvar=False))
        return cls(values.mean(axis=0), covariance, len(values))


def frechet_distance(first: Gaussian, second: Gaussian) -> float:
    """The squared Fréchet distance d² between the two Gaussians (0 for equal ones)."""
    if first.mean.shape != second.mean.shape:
        raise ValueError(f"features of {first.mean.shape} and {second.mean.shape} dimensions")
    difference = first.mean - second.mean
    root = psd_sqrt(first.covariance)
    middle = symmetric(root @ second.covariance @ root)
    eigenvalues = np.linalg.eigvalsh(middle)
    trace_of_root = float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))
    traces = float(np.trace(first.covariance) + np.trace(second.covariance))
    distance = float(difference @ difference) + traces - 2.0 * trace_of_root
    return max(distance, 0.0)  # rounding can take equal sets a hair below zero


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a positive semi-definite matrix (rounding's small
    negative eigenvalues taken as 0)."""
    eigenvalues, vectors = np.linalg.eigh(symmetric(matrix))
    return (vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ vectors.T


def symmetric(matrix: np.ndarray) -> np.ndarray:
    return (matrix + matrix.T) / 2.0
