"""Post-hoc calibration (zoobot.shared.calibration): the maximum-likelihood concentration scale recovers a
known scale from simulated Dirichlet-multinomial votes, and applying it keeps vote fractions exactly."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from zoobot.shared import calibration
from zoobot.shared.schemas import Schema

# a: 3 answers; b: 2 answers asked after a_x
SCHEMA = Schema({"a": ["_x", "_y", "_z"], "b": ["_u", "_v"]}, {"a": None, "b": "a_x"})


def simulate(rng, n_galaxies, true_scale):
    """The model predicts ``alpha``; the votes follow DM(true_scale * alpha) per question, down the tree
    (``b`` gets the ``a_x`` voters), 40 or 5 volunteers: the ML scale must come out near ``true_scale``."""
    means = rng.dirichlet([2.0, 2.0, 2.0], size=n_galaxies)
    total = rng.uniform(5, 60, size=n_galaxies)
    alpha_a = means * total[:, None]
    means_b = rng.dirichlet([1.5, 1.5], size=n_galaxies)
    alpha_b = means_b * rng.uniform(5, 60, size=n_galaxies)[:, None]
    alpha = np.concatenate([alpha_a, alpha_b], axis=1)
    counts = np.zeros_like(alpha)
    n_votes = np.where(rng.random(n_galaxies) < 0.7, 40, 5)
    for g in range(n_galaxies):
        p_a = rng.dirichlet(true_scale[0] * alpha_a[g])
        counts[g, :3] = rng.multinomial(n_votes[g], p_a)
        p_b = rng.dirichlet(true_scale[1] * alpha_b[g])
        counts[g, 3:] = rng.multinomial(int(counts[g, 0]), p_b)  # b asked of the a_x voters
    return counts, alpha


@pytest.mark.parametrize("true_scale", [(0.25, 0.5), (1.0, 3.0)])
def test_recovers_known_scale_from_simulated_votes(true_scale):
    rng = np.random.default_rng(1)
    counts, alpha = simulate(rng, 3000, true_scale)
    scale = calibration.fit_concentration_scale(counts, alpha, SCHEMA)
    np.testing.assert_allclose(scale, true_scale, rtol=0.15)


def test_scale_is_the_likelihood_maximum():
    """Independent check: scipy's Dirichlet-multinomial log-pmf is lower a little either side of the fit."""
    rng = np.random.default_rng(2)
    counts, alpha = simulate(rng, 400, (0.5, 0.5))
    scale = calibration.fit_concentration_scale(counts, alpha, SCHEMA)[0]
    voted = counts[:, :3].sum(axis=1) > 0

    def log_likelihood(s):
        return sum(scipy_stats.dirichlet_multinomial.logpmf(k, s * a, int(k.sum()))
                   for k, a in zip(counts[voted, :3], alpha[voted, :3]))

    best = log_likelihood(scale)
    assert best > log_likelihood(scale * 1.05) and best > log_likelihood(scale / 1.05)


def test_apply_keeps_fractions_and_scales_each_question():
    alpha = np.array([[1.0, 2.0, 3.0, 4.0, 4.0]])
    out = calibration.apply_concentration_scale(alpha, [0.5, 2.0], SCHEMA)
    np.testing.assert_allclose(out, [[0.5, 1.0, 1.5, 8.0, 8.0]])
    samples = np.stack([alpha, 2 * alpha], axis=2).astype(np.float32)
    scaled = calibration.apply_concentration_scale(samples, [0.5, 2.0], SCHEMA)
    assert scaled.dtype == np.float32 and scaled.shape == samples.shape
    np.testing.assert_allclose(scaled[..., 1], 2 * out)
    with pytest.raises(ValueError, match="scale has 3 values but the schema has 2 questions|2 questions"):
        calibration.apply_concentration_scale(alpha, [1.0, 1.0, 1.0], SCHEMA)


def test_record_round_trip_and_mismatch():
    record = calibration.calibration_record([0.5, 2.0], ["a", "b"], n_galaxies=7)
    np.testing.assert_allclose(calibration.scale_from_record(record, ["a", "b"]), [0.5, 2.0])
    np.testing.assert_allclose(calibration.scale_from_record(record, ["b", "a"]), [2.0, 0.5])
    assert calibration.scale_from_record(None, ["a"]) is None
    with pytest.raises(ValueError, match="covers questions"):
        calibration.scale_from_record(record, ["a", "c"])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="must both be"):
        calibration.fit_concentration_scale(np.ones((2, 5)), np.ones((3, 5)), SCHEMA)
    with pytest.raises(ValueError, match="finite and > 0"):
        calibration.fit_concentration_scale(np.ones((2, 5)), np.zeros((2, 5)), SCHEMA)
    with pytest.raises(ValueError, match="calibrate must be True or False"):
        calibration.model_scale(object(), "yes")


def test_fit_record_from_batches_equals_one_fit_of_the_concatenation():
    """The per-epoch route of finetuned trees (batches of any array type) gives the record of one fit to all rows;
    no galaxies: no record."""
    rng = np.random.default_rng(3)
    alpha = rng.uniform(0.5, 20.0, (30, 4))
    counts = rng.integers(0, 10, (30, 4)).astype(float)
    groups = [(0, 1), (2, 3)]
    batches = [(alpha[i:i + 8].tolist(), counts[i:i + 8]) for i in range(0, 30, 8)]  # lists too
    got = calibration.fit_record_from_batches(batches, ["a", "b"], groups)
    assert got == calibration.fit_record(counts, alpha, ["a", "b"], groups)
    assert got["n_galaxies"] == 30
    assert calibration.fit_record_from_batches([], ["a", "b"], groups) is None
    assert calibration.fit_record_from_batches([(np.zeros((0, 4)), np.zeros((0, 4)))], ["a", "b"], groups) is None
