"""Vote fractions, P(asked), expected votes and intervals against hand-computed values and scipy."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from zoobot.shared import stats
from zoobot.shared.schemas import Schema

# a -> (a_x) -> b -> (b_u) -> c ; d is a single-answer question asked of everyone
SCHEMA = Schema(
    {"a": ["_x", "_y", "_z"], "b": ["_u", "_v"], "c": ["_p", "_q"], "d": ["_only"]},
    {"a": None, "b": "a_x", "c": "b_u", "d": None},
)
# one galaxy, two samples; columns a_x a_y a_z b_u b_v c_p c_q d_only
CONCENTRATIONS = np.array(
    [
        [[2.0, 1.0], [1.0, 1.0], [1.0, 2.0], [3.0, 1.0], [1.0, 1.0], [1.0, 1.0], [4.0, 1.0], [7.0, 3.0]],
    ]
)
FRACTIONS = np.array([[0.375, 0.25, 0.375, 0.625, 0.375, 0.35, 0.65, 1.0]])  # by hand, mean over samples


def test_vote_fractions_hand_computed():
    np.testing.assert_allclose(stats.vote_fractions(CONCENTRATIONS, SCHEMA), FRACTIONS)
    np.testing.assert_allclose(stats.vote_fractions(CONCENTRATIONS[:, :, 0], SCHEMA)[0, :3], [0.5, 0.25, 0.25])
    assert stats.expected_value_of_dirichlet_mixture is stats.vote_fractions


def test_vote_fractions_accepts_groups_and_checks_width():
    np.testing.assert_allclose(stats.vote_fractions(CONCENTRATIONS, SCHEMA.question_index_groups), FRACTIONS)
    with pytest.raises(ValueError, match="expected width 8, got width 7"):
        stats.vote_fractions(CONCENTRATIONS[:, :7], SCHEMA)


def test_proportion_asked_hand_computed():
    asked = stats.proportion_asked(FRACTIONS, SCHEMA)
    np.testing.assert_allclose(asked, [[1.0, 0.375, 0.625 * 0.375, 1.0]])


def test_expected_votes():
    votes = stats.get_expected_votes_ml(FRACTIONS, "c", 40, SCHEMA)
    np.testing.assert_allclose(votes, [40 * 0.625 * 0.375])  # 9.375
    assert stats.get_expected_votes_ml(FRACTIONS, SCHEMA.get_question("b"), 40, SCHEMA, round_votes=True)[0] == 15
    assert stats.get_expected_votes_ml(FRACTIONS, "c", 40, SCHEMA, round_votes=True)[0] == 9


def test_nan_rows_stay_nan():
    alpha = np.concatenate([CONCENTRATIONS, np.full_like(CONCENTRATIONS, np.nan)])
    fractions = stats.vote_fractions(alpha, SCHEMA)
    assert np.isnan(fractions[1]).all() and np.isfinite(fractions[0]).all()
    assert np.isnan(stats.proportion_asked(fractions, SCHEMA)[1]).all()
    lower, upper = stats.get_confidence_intervals(alpha, SCHEMA)
    assert np.isnan(lower[1]).all() and np.isnan(upper[1]).all()


def test_confidence_intervals_match_scipy_beta_then_median():
    rng = np.random.default_rng(0)
    alpha = rng.uniform(1, 101, size=(4, 8, 3))
    lower, upper = stats.get_confidence_intervals(alpha, SCHEMA, interval_width=0.9)
    for g in range(4):
        for start, end in SCHEMA.question_index_groups:
            total = alpha[g, start : end + 1].sum(axis=0)
            for a in range(start, end + 1):
                if start == end:
                    assert lower[g, a] == 1.0 and upper[g, a] == 1.0
                    continue
                dist = scipy_stats.beta(alpha[g, a], total - alpha[g, a])
                assert lower[g, a] == pytest.approx(np.median(dist.ppf(0.05)), rel=1e-8)
                assert upper[g, a] == pytest.approx(np.median(dist.ppf(0.95)), rel=1e-8)


def test_wider_interval_contains_narrower_and_brackets_fraction():
    alpha = np.random.default_rng(1).uniform(1, 50, size=(5, 8))
    low90, up90 = stats.get_confidence_intervals(alpha, SCHEMA, 0.9)
    low50, up50 = stats.get_confidence_intervals(alpha, SCHEMA, 0.5)
    assert (low90 <= low50).all() and (up50 <= up90).all()
    fractions = stats.vote_fractions(alpha, SCHEMA)
    assert ((low90 <= fractions + 1e-12) & (fractions <= up90 + 1e-12)).all()
    with pytest.raises(ValueError, match=r"interval_width must be in \(0, 1\)"):
        stats.get_confidence_intervals(alpha, SCHEMA, 90)
