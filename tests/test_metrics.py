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


def kid_by_definition(real, fake, subsets, subset_size, seed):
    """KID as defined: every subset's three kernel matrices computed from its own draws."""
    m, d = min(subset_size, len(real), len(fake)), real.shape[1]
    rng, values = np.random.default_rng(seed), []
    for _ in range(subsets):
        x, y = real[rng.choice(len(real), m, replace=False)], fake[rng.choice(len(fake), m, replace=False)]
        k_xx, k_yy, k_xy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        values.append((k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1)) - 2 * k_xy.mean())
    return np.mean(values), np.std(values)


@pytest.mark.parametrize("n_fake", [200, 350], ids=["every-generated-row", "subsets-of-them"])
def test_kid_equals_its_definition_with_the_generated_terms_computed_once(n_fake):
    """With subset_size = the number of generated rows (the protocol's case), their terms are computed once;
    the value is the definition's, subset by subset, to rounding."""
    real, fake = gaussian(900, 16, seed=5), gaussian(n_fake, 16, mean=0.2, seed=6)
    got = M.kid(real, fake, subsets=20, subset_size=200, seed=7)
    np.testing.assert_allclose(got, kid_by_definition(real, fake, 20, 200, 7), rtol=1e-10)


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


def test_precision_recall_remembers_a_reference_by_its_content_only():
    real, other = gaussian(300, 4, seed=8), gaussian(300, 4, seed=9)
    fake = gaussian(200, 4, mean=0.3, seed=10)
    first = M.precision_recall(real, fake)
    assert M.precision_recall(real.copy(), fake) == first, "the same reference, another array: the same radii"
    r = M.torch.from_numpy(other)
    precision = M._inside(M.torch.from_numpy(fake), r, M._kth_nn_radius(r, 3)).double().mean()
    assert M.precision_recall(other, fake)[0] == float(precision), "a new reference gets its own radii"
