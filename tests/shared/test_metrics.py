"""Metrics of tree predictions against the truth and against volunteer votes, checked by hand,
by enumeration and against scipy."""
import numpy as np
import pandas as pd
import pytest
from scipy import optimize
from scipy import stats as scipy_stats

from zoobot.shared import metrics
from zoobot.shared.schemas import Schema

# a -> (a_x) -> b ; c asked of everyone.  Columns: a_x a_y a_z b_u b_v c_p c_q
SCHEMA = Schema(
    {"a": ["_x", "_y", "_z"], "b": ["_u", "_v"], "c": ["_p", "_q"]},
    {"a": None, "b": "a_x", "c": None},
)
TRUTH = np.array(
    [
        [0.6, 0.3, 0.1, 0.7, 0.3, 0.5, 0.5],
        [0.2, 0.2, 0.6, 0.1, 0.9, 0.9, 0.1],
    ]
)
FRACTIONS = np.array(
    [
        [0.5, 0.4, 0.1, 0.6, 0.4, 0.5, 0.5],
        [0.4, 0.2, 0.4, 0.5, 0.5, 0.7, 0.3],
    ]
)


# ------------------------------------------------------------------------------------------------
# truth
# ------------------------------------------------------------------------------------------------

def test_true_probabilities_reads_columns_and_names_missing_ones():
    catalog = pd.DataFrame(TRUTH, columns=[f"{c}_true-prob" for c in SCHEMA.label_cols])
    np.testing.assert_array_equal(metrics.true_probabilities(catalog, SCHEMA), TRUTH)
    with pytest.raises(ValueError, match=r"missing columns \['a_x_true-prob'.*for real data use the vote metrics"):
        metrics.true_probabilities(catalog.drop(columns=["a_x_true-prob"]), SCHEMA)
    catalog.loc[1, "b_v_true-prob"] = 1.5
    with pytest.raises(ValueError, match=r"Column 'b_v_true-prob', row 1: .* not in \[0, 1\]"):
        metrics.true_probabilities(catalog, SCHEMA)


def test_truth_mae_by_hand():
    mae = metrics.truth_mae(FRACTIONS, TRUTH, SCHEMA)
    # a: reach 1; errors 0.1 0.1 0 | 0.2 0 0.2  -> 0.6 / 6
    # b: reach 0.6 and 0.2; errors 0.1 0.1 | 0.4 0.4 -> (0.6*0.2 + 0.2*0.8) / (0.6*2 + 0.2*2)
    # c: reach 1; errors 0 0 | 0.2 0.2 -> 0.4 / 4
    expected_b = (0.6 * 0.2 + 0.2 * 0.8) / (1.2 + 0.4)
    pooled = (0.6 + 0.6 * 0.2 + 0.2 * 0.8 + 0.4) / (6 + 1.6 + 4)
    assert list(mae.index) == ["a", "b", "c", "pooled"]
    np.testing.assert_allclose(mae.to_numpy(), [0.1, expected_b, 0.1, pooled])


def test_truth_mae_leaves_out_failed_rows_and_checks_shapes():
    fractions = FRACTIONS.copy()
    fractions[1] = np.nan
    mae = metrics.truth_mae(fractions, TRUTH, SCHEMA)
    np.testing.assert_allclose(mae["a"], 0.2 / 3)
    np.testing.assert_allclose(mae["b"], 0.1)
    with pytest.raises(ValueError, match=r"fractions must have shape \(galaxy, 7\)"):
        metrics.truth_mae(FRACTIONS[:, :6], TRUTH, SCHEMA)
    with pytest.raises(ValueError, match="true_probs has 1 rows but the predictions have 2"):
        metrics.truth_mae(FRACTIONS, TRUTH[:1], SCHEMA)


def _random_concentrations(rng, n_galaxies, n_samples=None):
    shape = (n_galaxies, SCHEMA.n_answers) if n_samples is None else (n_galaxies, SCHEMA.n_answers, n_samples)
    return rng.uniform(0.3, 12.0, size=shape)


def test_truth_coverage_single_sample_matches_scipy_beta_intervals():
    rng = np.random.default_rng(0)
    alpha = _random_concentrations(rng, 40)
    truth = rng.dirichlet([1.0, 1.0, 1.0], size=40)
    truth = np.hstack([truth, rng.dirichlet([1, 1], size=40), rng.dirichlet([1, 1], size=40)])
    reach = np.column_stack([np.ones(40), truth[:, 0], np.ones(40)])[:, [0, 0, 0, 1, 1, 2, 2]]
    inside = np.zeros_like(truth)
    for g in range(40):
        for start, end in SCHEMA.question_index_groups:
            total = alpha[g, start : end + 1].sum()
            for a in range(start, end + 1):
                low, high = scipy_stats.beta.interval(0.8, alpha[g, a], total - alpha[g, a])
                inside[g, a] = low <= truth[g, a] <= high
    coverage = metrics.truth_coverage(alpha, truth, SCHEMA, interval_width=0.8)
    for q, (start, end) in enumerate(SCHEMA.question_index_groups):
        block = slice(start, end + 1)
        expected = (inside[:, block] * reach[:, block]).sum() / reach[:, block].sum()
        np.testing.assert_allclose(coverage.iloc[q], expected)
    np.testing.assert_allclose(coverage["pooled"], (inside * reach).sum() / reach.sum())


def test_truth_coverage_of_samples_uses_the_mixture_quantiles():
    rng = np.random.default_rng(1)
    alpha = _random_concentrations(rng, 15, n_samples=3)
    truth = np.hstack([rng.dirichlet([1, 1, 1], 15), rng.dirichlet([1, 1], 15), rng.dirichlet([1, 1], 15)])
    inside = np.zeros(truth.shape)
    for g in range(15):
        for start, end in SCHEMA.question_index_groups:
            for a in range(start, end + 1):
                rest = alpha[g, start : end + 1].sum(axis=0) - alpha[g, a]

                def mixture_cdf(x, target):
                    return scipy_stats.beta.cdf(x, alpha[g, a], rest).mean() - target

                low = optimize.brentq(mixture_cdf, 0, 1, args=(0.05,))
                high = optimize.brentq(mixture_cdf, 0, 1, args=(0.95,))
                inside[g, a] = low <= truth[g, a] <= high
    weights = metrics.question_reach(truth, SCHEMA)[:, [0, 0, 0, 1, 1, 2, 2]]
    coverage = metrics.truth_coverage(alpha, truth, SCHEMA)
    np.testing.assert_allclose(coverage["pooled"], (inside * weights).sum() / weights.sum())


def test_truth_coverage_is_nominal_for_draws_from_the_prediction():
    """Truth drawn from the predicted Dirichlet itself: coverage is the nominal level (up to noise)."""
    rng = np.random.default_rng(2)
    schema = Schema({"a": ["_x", "_y", "_z"]}, {"a": None})
    alpha = rng.uniform(0.5, 20, size=(20000, 3))
    truth = np.array([rng.dirichlet(a) for a in alpha])
    coverage = metrics.truth_coverage(alpha, truth, schema, interval_width=0.9)
    assert abs(coverage["pooled"] - 0.9) < 0.01
    assert abs(metrics.truth_coverage(alpha, truth, schema, interval_width=0.5)["pooled"] - 0.5) < 0.015


def test_truth_coverage_checks_inputs():
    alpha = np.ones((2, SCHEMA.n_answers))
    with pytest.raises(ValueError, match=r"interval_width must be in \(0, 1\)"):
        metrics.truth_coverage(alpha, TRUTH, SCHEMA, interval_width=90)
    with pytest.raises(ValueError, match="concentrations must be > 0; row 1"):
        metrics.truth_coverage(np.vstack([alpha[0], -alpha[1]]), TRUTH, SCHEMA)
    with pytest.raises(ValueError, match=r"concentrations must have shape \(galaxy, 7\)"):
        metrics.truth_coverage(alpha[:, :3], TRUTH, SCHEMA)
