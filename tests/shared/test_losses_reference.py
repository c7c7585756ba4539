"""The float64 oracle of the Dirichlet-multinomial loss against independent references."""
import itertools
import math

import numpy as np
import pytest
from scipy import stats

from zoobot.shared.losses_reference import check_question_index_groups, dirichlet_multinomial_nll


def compositions(total, parts):
    """Every vector of `parts` non-negative integers summing to `total` (brute force)."""
    for combo in itertools.product(range(total + 1), repeat=parts):
        if sum(combo) == total:
            yield combo


def polya_urn_probability(k, alpha):
    """P(k | alpha) from rising factorials (Polya urn), no gamma functions."""
    n, a_total = sum(k), sum(alpha)
    coefficient = math.factorial(n) / math.prod(math.factorial(x) for x in k)
    numerator = math.prod(math.prod(a + j for j in range(x)) for a, x in zip(alpha, k))
    denominator = math.prod(a_total + j for j in range(n))
    return coefficient * numerator / denominator


@pytest.mark.parametrize("alpha", [(1.0, 1.0), (2.5, 0.7), (1.3, 40.0, 7.2), (100.0, 1.0, 1.0)])
@pytest.mark.parametrize("n_votes", [1, 2, 5])
def test_probabilities_over_all_count_vectors_sum_to_one_and_match_product_formula(alpha, n_votes):
    vectors = np.array(list(compositions(n_votes, len(alpha))), dtype=float)
    concentrations = np.tile(alpha, (len(vectors), 1))
    nll = dirichlet_multinomial_nll(vectors, concentrations, [(0, len(alpha) - 1)])[:, 0]
    probabilities = np.exp(-nll)
    assert probabilities.sum() == pytest.approx(1.0, rel=1e-12)
    expected = [polya_urn_probability(tuple(int(x) for x in k), alpha) for k in vectors]
    np.testing.assert_allclose(probabilities, expected, rtol=1e-10)


def test_matches_scipy_dirichlet_multinomial_per_question():
    rng = np.random.default_rng(1)
    groups = [(0, 2), (3, 4), (5, 8)]
    counts = rng.integers(0, 20, size=(16, 9)).astype(float)
    alpha = rng.uniform(1, 101, size=(16, 9))
    nll = dirichlet_multinomial_nll(counts, alpha, groups)
    assert nll.shape == (16, 3) and nll.dtype == np.float64
    for g in range(16):
        for q, (s, e) in enumerate(groups):
            k = counts[g, s : e + 1]
            if k.sum() == 0:
                continue
            expected = -stats.dirichlet_multinomial(alpha[g, s : e + 1], int(k.sum())).logpmf(k)
            assert nll[g, q] == pytest.approx(expected, rel=1e-10)


def test_zero_vote_questions_are_exactly_zero():
    counts = np.array([[0, 0, 3, 1, 0], [0, 0, 0, 0, 0]], dtype=float)
    alpha = np.array([[1.0, 50.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    nll = dirichlet_multinomial_nll(counts, alpha, [(0, 1), (2, 4)])
    assert nll[0, 0] == 0.0 and nll[1, 0] == 0.0 and nll[1, 1] == 0.0
    assert nll[0, 1] > 0


def test_single_galaxy_and_non_integer_counts():
    nll = dirichlet_multinomial_nll([2.5, 0.5], [3.0, 2.0], [(0, 1)])
    assert nll.shape == (1, 1) and np.isfinite(nll).all()


def test_shape_and_group_errors():
    with pytest.raises(ValueError, match=r"got \(2, 3\) and \(2, 4\)"):
        dirichlet_multinomial_nll(np.zeros((2, 3)), np.ones((2, 4)), [(0, 2)])
    with pytest.raises(ValueError, match="need at least 5 answer columns, got width 4"):
        dirichlet_multinomial_nll(np.zeros((2, 4)), np.ones((2, 4)), [(0, 1), (2, 4)])
    with pytest.raises(ValueError, match="overlaps or precedes"):
        check_question_index_groups([(0, 2), (2, 3)])
    with pytest.raises(ValueError, match=r"need 0 <= start <= end"):
        check_question_index_groups([(3, 1)])
