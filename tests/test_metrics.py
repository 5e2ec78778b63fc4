"""Closed forms and sanity of the distances and scores in genzoo.evaluation.metrics."""

import numpy as np
import pytest

from genzoo.evaluation import metrics as M


def gaussian(n, d, mean=0.0, scale=1.0, seed=0):
    return np.random.default_rng(seed).normal(mean, scale, size=(n, d))


def test_frechet_distance_of_identical_statistics_is_zero():
    mu, sigma = M.feature_stats(gaussian(500, 8))
    assert abs(M.frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_frechet_distance_of_a_mean_shift_is_its_squared_norm():
    mu, sigma = M.feature_stats(gaussian(500, 8))
    d = np.arange(8) / 4.0
    assert M.frechet_distance(mu, sigma, mu + d, sigma) == pytest.approx(d @ d, rel=1e-8)


def test_frechet_distance_with_diagonal_covariances():
    """Diagonal S1, S2: FD = |mu1 - mu2|^2 + sum_i (sqrt(s1_i) - sqrt(s2_i))^2."""
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    mu1, mu2 = np.zeros(3), np.array([1.0, 0.0, 2.0])
    expected = 5.0 + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert M.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_survives_singular_covariances():
    f = gaussian(10, 32)  # fewer samples than dimensions: singular covariance
    mu, sigma = M.feature_stats(f)
    assert np.isfinite(M.frechet_distance(mu, sigma, mu + 1.0, sigma))


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_two():
    a, b = gaussian(600, 16, seed=1), gaussian(600, 16, seed=2)
    same, same_std = M.kid(a, b, subsets=50, subset_size=200)
    assert abs(same) < 3 * same_std
    differ, _ = M.kid(a, gaussian(600, 16, mean=0.5, seed=3), subsets=50, subset_size=200)
    assert differ > 10 * max(abs(same), same_std)
    assert M.kid(a, b, subsets=5, subset_size=100, seed=4) == M.kid(a, b, subsets=5, subset_size=100, seed=4)


def test_precision_and_recall_of_identical_and_disjoint_sets():
    a = gaussian(300, 4)
    assert M.precision_recall(a, a.copy()) == (1.0, 1.0)
    far = gaussian(300, 4, mean=100.0)
    assert M.precision_recall(a, far) == (0.0, 0.0)


def test_precision_recall_see_mode_collapse_as_low_recall():
    real = gaussian(400, 2, scale=1.0, seed=5)
    collapsed = gaussian(400, 2, scale=0.05, seed=6)  # all fakes near the centre
    precision, recall = M.precision_recall(real, collapsed)
    assert precision > 0.9 and recall < 0.3


def test_class_score_ranges_from_one_to_the_number_of_classes():
    one_class = np.tile(np.eye(10)[3], (100, 1))
    confident_balanced = np.eye(10)[np.arange(100) % 10]
    unsure = np.full((100, 10), 0.1)
    assert M.class_score(one_class) == pytest.approx(1.0)
    assert M.class_score(unsure) == pytest.approx(1.0)
    assert M.class_score(confident_balanced) == pytest.approx(10.0, rel=1e-6)
