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


# ------------------------------------------------------------------------------------------------
# votes
# ------------------------------------------------------------------------------------------------

COUNTS = np.array(
    [
        [3, 1, 0, 2, 1, 4, 0],
        [0, 2, 2, 0, 0, 1, 3],  # nobody reached b
    ],
    dtype=float,
)


def _polya_sequence_log_prob(k, alpha):
    """log P(one ordered sequence of votes with counts k) by the Polya urn: vote t picks answer a with
    probability (alpha_a + votes for a so far) / (A + t)."""
    seen = np.zeros_like(alpha)
    log_p = 0.0
    for a in np.repeat(np.arange(len(k)), k.astype(int)):
        log_p += np.log((alpha[a] + seen[a]) / (alpha.sum() + seen.sum()))
        seen[a] += 1
    return log_p


def test_vote_nll_dirichlet_multinomial_matches_the_polya_urn_with_sample_mixture():
    rng = np.random.default_rng(3)
    alpha = _random_concentrations(rng, 2, n_samples=3)
    nll = metrics.vote_nll_dirichlet_multinomial(alpha, COUNTS, SCHEMA)
    expected, votes = {}, {}
    for q, (start, end) in zip("abc", SCHEMA.question_index_groups):
        total = 0.0
        for g in range(2):
            k = COUNTS[g, start : end + 1]
            per_sample = [np.exp(_polya_sequence_log_prob(k, alpha[g, start : end + 1, s])) for s in range(3)]
            total -= np.log(np.mean(per_sample))
        expected[q], votes[q] = total, COUNTS[:, start : end + 1].sum()
    for q in "abc":
        np.testing.assert_allclose(nll[q], expected[q] / votes[q])
    np.testing.assert_allclose(nll["pooled"], sum(expected.values()) / sum(votes.values()))


def test_vote_nll_dirichlet_multinomial_agrees_with_scipy_up_to_the_coefficient():
    alpha = np.array([[2.0, 3.0, 0.5, 1.0, 1.0, 4.0, 1.5]])
    counts = COUNTS[:1]
    k = counts[0, :3]
    log_pmf = scipy_stats.dirichlet_multinomial.logpmf(k, alpha[0, :3], k.sum())
    log_coefficient = scipy_stats.multinomial.logpmf(k, k.sum(), [1 / 3] * 3) - k.sum() * np.log(1 / 3)
    np.testing.assert_allclose(
        metrics.vote_nll_dirichlet_multinomial(alpha, counts, SCHEMA)["a"], -(log_pmf - log_coefficient) / k.sum()
    )


def test_vote_nll_multinomial_by_hand_and_skips_failed_rows():
    nll = metrics.vote_nll_multinomial(FRACTIONS, COUNTS, SCHEMA)
    a = -(3 * np.log(0.5) + 1 * np.log(0.4) + 2 * np.log(0.2) + 2 * np.log(0.4)) / 8
    b = -(2 * np.log(0.6) + 1 * np.log(0.4)) / 3
    c = -(4 * np.log(0.5) + 1 * np.log(0.7) + 3 * np.log(0.3)) / 8
    np.testing.assert_allclose(nll[["a", "b", "c"]].to_numpy(), [a, b, c])
    np.testing.assert_allclose(nll["pooled"], (8 * a + 3 * b + 8 * c) / 19)
    fractions = FRACTIONS.copy()
    fractions[1] = np.nan
    np.testing.assert_allclose(metrics.vote_nll_multinomial(fractions, COUNTS, SCHEMA)["a"],
                               -(3 * np.log(0.5) + np.log(0.4)) / 4)


def test_vote_coverage_single_sample_matches_scipy_betabinom_intervals():
    rng = np.random.default_rng(4)
    alpha = _random_concentrations(rng, 60)
    counts = np.hstack([rng.multinomial(20, [0.5, 0.3, 0.2], 60), rng.multinomial(7, [0.4, 0.6], 60),
                        rng.multinomial(3, [0.9, 0.1], 60)]).astype(float)
    counts[:10, 3:5] = 0  # questions nobody reached are left out
    inside, used = np.zeros(counts.shape), np.zeros(counts.shape, dtype=bool)
    for g in range(60):
        for start, end in SCHEMA.question_index_groups:
            n = counts[g, start : end + 1].sum()
            for a in range(start, end + 1):
                if n == 0:
                    continue
                rest = alpha[g, start : end + 1].sum() - alpha[g, a]
                low, high = scipy_stats.betabinom.interval(0.8, n, alpha[g, a], rest)
                inside[g, a], used[g, a] = low <= counts[g, a] <= high, True
    coverage = metrics.vote_coverage(alpha, counts, SCHEMA, interval_width=0.8, randomized=False)
    for q, (start, end) in enumerate(SCHEMA.question_index_groups):
        block = slice(start, end + 1)
        np.testing.assert_allclose(coverage.iloc[q], inside[:, block][used[:, block]].mean())
    np.testing.assert_allclose(coverage["pooled"], inside[used].mean())


def test_vote_cdf_matches_scipy_betabinom_for_extreme_concentrations():
    schema = Schema({"a": ["_x", "_y", "_z"]}, {"a": None})
    rng = np.random.default_rng(12)
    alpha = np.exp(rng.uniform(np.log(0.01), np.log(500), size=(300, 3)))
    counts = np.array([rng.multinomial(rng.integers(0, 80), [0.6, 0.3, 0.1]) for _ in range(300)])
    below, at = metrics.vote_cdf(alpha, counts, schema)
    n = counts.sum(axis=1, keepdims=True)
    rest = alpha.sum(axis=1, keepdims=True) - alpha
    voted = np.broadcast_to(n > 0, counts.shape)
    np.testing.assert_allclose(at[voted], scipy_stats.betabinom.cdf(counts, n, alpha, rest)[voted], atol=1e-10)
    np.testing.assert_allclose(below[voted], scipy_stats.betabinom.cdf(counts - 1, n, alpha, rest)[voted], atol=1e-10)
    assert np.isnan(at[~voted]).all()


def test_vote_coverage_of_samples_enumerates_the_mixture():
    schema = Schema({"a": ["_x", "_y", "_z"]}, {"a": None})
    alpha = np.array([[[1.0, 8.0], [2.0, 1.0], [5.0, 1.0]]])
    counts = np.array([[5.0, 1.0, 0.0]])
    below, at = metrics.vote_cdf(alpha, counts, schema)
    # enumerate every outcome of 6 votes by the Polya urn, mixing the two samples
    import itertools

    pmf = np.zeros((3, 7))
    for votes in itertools.product(range(3), repeat=6):
        k = np.bincount(votes, minlength=3).astype(float)
        p = np.mean([np.exp(_polya_sequence_log_prob(k, alpha[0, :, s])) for s in range(2)])
        for a in range(3):
            pmf[a, int(k[a])] += p
    np.testing.assert_allclose(pmf.sum(axis=1), 1.0)
    cdf = np.cumsum(pmf, axis=1)
    for a in range(3):
        k = int(counts[0, a])
        np.testing.assert_allclose(at[0, a], cdf[a, k])
        np.testing.assert_allclose(below[0, a], cdf[a, k - 1] if k else 0.0, atol=1e-12)


@pytest.mark.parametrize("n_votes", [5, 40])
def test_vote_coverage_is_nominal_for_votes_drawn_from_the_prediction(n_votes):
    """Randomised coverage is the nominal level for a calibrated model, whatever the number of votes;
    plain counting of whole-number intervals covers more (most with few votes)."""
    rng = np.random.default_rng(5)
    schema = Schema({"a": ["_x", "_y", "_z"]}, {"a": None})
    alpha = rng.uniform(0.5, 20, size=(4000, 3))
    counts = np.array([rng.multinomial(n_votes, rng.dirichlet(a)) for a in alpha])
    for level in (0.5, 0.9):
        assert abs(metrics.vote_coverage(alpha, counts, schema, level)["pooled"] - level) < 0.012
    assert metrics.vote_coverage(alpha, counts, schema, 0.9, randomized=False)["pooled"] > 0.91
    if n_votes == 40:  # an overconfident model (concentrations x 20) covers far less
        assert metrics.vote_coverage(alpha * 20, counts, schema)["pooled"] < 0.8


def test_randomized_vote_coverage_by_hand():
    schema = Schema({"a": ["_x", "_y"]}, {"a": None})
    # alpha (1, 1), 2 votes: counts 0, 1, 2 each with probability 1/3 (CDF jumps at 1/3 and 2/3)
    coverage = metrics.vote_coverage([[1.0, 1.0], [1.0, 1.0]], [[1, 1], [2, 0]], schema, interval_width=0.5)
    # 50% interval spans CDF [0.25, 0.75]: count 1 is fully inside, counts 0 and 2 a quarter each
    # ([2/3, 3/4] of [2/3, 1] and [1/4, 1/3] of [0, 1/3])
    np.testing.assert_allclose(coverage["pooled"], (1 + 1 + 0.25 + 0.25) / 4)


def test_train_mean_fractions_by_hand():
    mean = metrics.train_mean_fractions(COUNTS, SCHEMA)
    np.testing.assert_allclose(mean, [3 / 8, 3 / 8, 2 / 8, 2 / 3, 1 / 3, 5 / 8, 3 / 8])
    np.testing.assert_array_equal(np.isnan(metrics.train_mean_fractions(COUNTS[1:], SCHEMA)), [0, 0, 0, 1, 1, 0, 0])


def test_fit_constant_dirichlet_is_the_maximum_likelihood_of_the_reference_loss():
    from zoobot.shared.losses_reference import dirichlet_multinomial_nll

    rng = np.random.default_rng(6)
    schema = Schema({"a": ["_x", "_y", "_z"]}, {"a": None})
    counts = np.array([rng.multinomial(int(rng.choice([5, 40])), rng.dirichlet([1.5, 4.0, 0.7])) for _ in range(300)])
    fitted = metrics.fit_constant_dirichlet(counts, schema)

    def total_nll(log_alpha):
        return dirichlet_multinomial_nll(counts, np.tile(np.exp(log_alpha), (len(counts), 1)), [(0, 2)]).sum()

    reference = optimize.minimize(total_nll, np.zeros(3), method="Nelder-Mead", options=dict(xatol=1e-6, fatol=1e-8))
    np.testing.assert_allclose(fitted, np.exp(reference.x), rtol=2e-3)
    assert total_nll(np.log(fitted)) <= reference.fun + 1e-6


def test_fit_constant_dirichlet_recovers_known_concentrations_per_question():
    rng = np.random.default_rng(7)
    true_alpha = np.array([3.0, 1.0, 0.5, 2.0, 2.0, 0.8, 6.0])
    rows = []
    for _ in range(4000):
        a = rng.multinomial(40, rng.dirichlet(true_alpha[:3]))
        b = rng.multinomial(a[0], rng.dirichlet(true_alpha[3:5]))
        rows.append(np.concatenate([a, b, rng.multinomial(40, rng.dirichlet(true_alpha[5:]))]))
    np.testing.assert_allclose(metrics.fit_constant_dirichlet(np.array(rows), SCHEMA), true_alpha, rtol=0.1)


def test_vote_counts_names_the_bad_cell():
    catalog = pd.DataFrame(COUNTS, columns=SCHEMA.label_cols)
    np.testing.assert_array_equal(metrics.vote_counts(catalog, SCHEMA), COUNTS)
    catalog.loc[1, "c_q"] = -1
    with pytest.raises(ValueError, match=r"Column 'c_q', row 1: vote count -1.0 must be a number >= 0"):
        metrics.vote_counts(catalog, SCHEMA)
    with pytest.raises(ValueError, match=r"lacks vote-count columns of schema .*\['a_x'\]"):
        metrics.vote_counts(catalog.drop(columns="a_x"), SCHEMA)


# ------------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------------

def _catalog(counts, truth=None):
    catalog = pd.DataFrame(counts, columns=SCHEMA.label_cols)
    if truth is not None:
        for j, col in enumerate(SCHEMA.label_cols):
            catalog[f"{col}_true-prob"] = truth[:, j]
    return catalog


def test_evaluate_predictions_assembles_the_metrics_per_predictor():
    rng = np.random.default_rng(8)
    alpha = _random_concentrations(rng, 2, n_samples=2)
    train = _catalog(np.array([rng.multinomial(10, [0.5, 0.3, 0.2]).tolist() + [3, 2, 6, 4] for _ in range(30)]))
    table = metrics.evaluate_predictions(_catalog(COUNTS, TRUTH), alpha, SCHEMA, train_catalog=train)
    assert list(table.columns) == ["question", "predictor", "n_galaxies", "n_votes", *metrics.METRIC_COLUMNS]
    assert table.question.tolist() == [q for q in ["a", "b", "c", "pooled"] for _ in range(4)]
    assert table.predictor.tolist() == list(metrics.PREDICTORS) * 4
    rows = table.set_index(["question", "predictor"])
    assert rows.loc[("b", "model"), "n_galaxies"] == 1 and rows.loc[("pooled", "model"), "n_votes"] == 19
    from zoobot.shared.stats import vote_fractions

    np.testing.assert_allclose(rows.loc[("a", "model"), "truth_mae"],
                               metrics.truth_mae(vote_fractions(alpha, SCHEMA), TRUTH, SCHEMA)["a"])
    np.testing.assert_allclose(rows.loc[("pooled", "model"), "nll_dirichlet_multinomial"],
                               metrics.vote_nll_dirichlet_multinomial(alpha, COUNTS, SCHEMA)["pooled"])
    mean = metrics.train_mean_fractions(metrics.vote_counts(train, SCHEMA), SCHEMA)
    np.testing.assert_allclose(rows.loc[("c", "train_mean"), "nll_multinomial"],
                               metrics.vote_nll_multinomial(np.tile(mean, (2, 1)), COUNTS, SCHEMA)["c"])
    np.testing.assert_allclose(rows.loc[("pooled", "truth"), "nll_multinomial"],
                               metrics.vote_nll_multinomial(TRUTH, COUNTS, SCHEMA)["pooled"])
    assert np.isnan(rows.loc[("a", "train_mean"), "vote_coverage"])
    assert np.isnan(rows.loc[("a", "truth"), "truth_mae"])


def test_evaluate_predictions_without_truth_or_training_votes():
    alpha = np.ones((2, SCHEMA.n_answers))
    alpha[0] = np.nan  # a failed image
    table = metrics.evaluate_predictions(_catalog(COUNTS), alpha, SCHEMA)
    assert set(table.predictor) == {"model"}
    assert table.truth_mae.isna().all()
    # b got no votes from the one galaxy left
    assert table.set_index("question").nll_multinomial.isna().to_dict() == {"a": False, "b": True, "c": False,
                                                                          "pooled": False}
    assert table.set_index("question").loc["pooled", "n_galaxies"] == 1


# ------------------------------------------------------------------------------------------------
# the brightness-and-size shortcut baseline
# ------------------------------------------------------------------------------------------------

def _write_png(path, grey):
    from PIL import Image

    Image.fromarray(np.repeat(np.asarray(grey, np.uint8)[:, :, None], 3, axis=2)).save(path)
    return str(path)


def test_pixel_statistics_by_hand(tmp_path):
    image = np.full((8, 8), 10, np.uint8)  # sky level 10 (the border median)
    image[3, 3], image[3, 5] = 110, 50  # light 100 and 40, centroid x = 3 + 2 * 40/140
    stats = metrics.pixel_statistics([_write_png(tmp_path / "a.png", image)])
    cx = 3 + 2 * 40 / 140
    second_moment = (100 * (3 - cx) ** 2 + 40 * (5 - cx) ** 2) / 140
    np.testing.assert_allclose(stats.iloc[0].to_numpy(), [140, second_moment, 100, 1])
    assert list(stats.columns) == list(metrics.PIXEL_STATISTICS)


def test_ring_baseline_auc_finds_a_brightness_shortcut(tmp_path):
    """Labels carried by brightness give an AUC near 1; labels independent of the pixels give ~0.5."""
    rng = np.random.default_rng(9)
    rows = []
    for i in range(60):
        label = i % 2
        image = rng.normal(20, 2, size=(24, 24))
        image[10:14, 10:14] += (120 if label else 60) + rng.normal(0, 10)
        rows.append((_write_png(tmp_path / f"{i}.png", np.clip(image, 0, 255)), label, rng.integers(0, 2)))
    catalog = pd.DataFrame(rows, columns=["file_loc", "ring", "coin"])
    assert metrics.ring_baseline_auc(catalog) > 0.95
    assert abs(metrics.ring_baseline_auc(catalog, label_col="coin", features=metrics.PIXEL_STATISTICS) - 0.5) < 0.2


def test_ring_baseline_auc_is_the_auc_of_out_of_fold_scores():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(10)
    table = pd.DataFrame({"ring": np.repeat([0, 1], 30), "size": np.r_[rng.normal(0, 1, 30), rng.normal(1, 1, 30)]})
    scores = np.empty(60)
    for train, test in StratifiedKFold(3, shuffle=True, random_state=4).split(table[["size"]], table.ring):
        x = table[["size"]].to_numpy()
        mean, std = x[train].mean(), x[train].std()
        model = LogisticRegression().fit((x[train] - mean) / std, table.ring[train])
        scores[test] = model.predict_proba((x[test] - mean) / std)[:, 1]
    expected = roc_auc_score(table.ring, scores)
    assert metrics.ring_baseline_auc(table, features=["size"], n_splits=3, seed=4) == pytest.approx(expected)


@pytest.mark.parametrize("labels, message", [
    ([0, 1, 2, 1], "must hold 0/1 labels"),
    ([0, 0, 0, 1], "only 1 galaxies of its rarer class; 2-fold"),
])
def test_ring_baseline_auc_rejects_bad_labels(labels, message):
    table = pd.DataFrame({"ring": labels, "size": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(ValueError, match=message):
        metrics.ring_baseline_auc(table, features=["size"], n_splits=2)
    with pytest.raises(ValueError, match="no label column 'bar'"):
        metrics.ring_baseline_auc(table, label_col="bar", features=["size"])
    with pytest.raises(ValueError, match=r"must all be catalog columns, or pixel statistics"):
        metrics.ring_baseline_auc(table.assign(ring=[0, 1, 0, 1]), features=["colour"], n_splits=2)


# ------------------------------------------------------------------------------------------------
# reliability plot numbers
# ------------------------------------------------------------------------------------------------

def test_reliability_table_pools_votes_per_bin_by_hand():
    fractions = FRACTIONS.copy()
    table = metrics.reliability_table(fractions, COUNTS, SCHEMA, n_bins=2)
    # every (galaxy, answer) with N votes on its question adds N outcomes predicted at its fraction
    n = np.array([[4, 4, 4, 3, 3, 4, 4], [4, 4, 4, 0, 0, 4, 4]])
    low = fractions <= 0.5
    for b, mask in enumerate((low, ~low)):
        assert table["count"][b] == n[mask].sum()
        np.testing.assert_allclose(table["observed_rate"][b], COUNTS[mask].sum() / n[mask].sum())
        np.testing.assert_allclose(table["mean_predicted"][b], (fractions * n)[mask].sum() / n[mask].sum())


def test_coverage_curve_agrees_with_the_coverage_functions():
    rng = np.random.default_rng(11)
    alpha = _random_concentrations(rng, 30, n_samples=2)
    counts = np.hstack([rng.multinomial(8, [0.5, 0.3, 0.2], 30), rng.multinomial(4, [0.4, 0.6], 30),
                        rng.multinomial(6, [0.9, 0.1], 30)])
    truth = np.hstack([rng.dirichlet([1, 1, 1], 30), rng.dirichlet([1, 1], 30), rng.dirichlet([1, 1], 30)])
    curve = metrics.coverage_curve(alpha, counts, SCHEMA, true_probs=truth, levels=[0.5, 0.9])
    assert curve["nominal"].tolist() == [0.5, 0.9]
    for row, level in enumerate((0.5, 0.9)):
        assert curve["vote_coverage"][row] == metrics.vote_coverage(alpha, counts, SCHEMA, level)["pooled"]
        assert curve["truth_coverage"][row] == metrics.truth_coverage(alpha, truth, SCHEMA, level)["pooled"]
    assert "truth_coverage" not in metrics.coverage_curve(alpha, counts, SCHEMA).columns
