"""How good are tree predictions? Metrics against volunteer votes and, where known, the truth.

Every metric is framework-free and comes per question plus a ``'pooled'`` row, as a
:class:`pandas.Series` indexed by question text; rows of NaN predictions (failed images) are left out.
The table of metrics, what each measures and which way is better is in docs/guides/evaluating.md.

- against **volunteer votes** (all real data): :func:`vote_nll_dirichlet_multinomial`,
  :func:`vote_nll_multinomial`, :func:`vote_coverage`, and the image-blind baselines
  :func:`train_mean_fractions` and :func:`fit_constant_dirichlet`;
- against the **truth** (synthetic catalogs' ``{label_col}_true-prob`` columns,
  :func:`true_probabilities`): :func:`truth_mae`, :func:`truth_coverage`. Each (galaxy, answer)
  counts with the **reach** of its question, the true probability that it is asked at all, so an error
  on the bar question of an almost surely smooth galaxy matters little;
- a **shortcut check** for binary labels: :func:`ring_baseline_auc`, a logistic regression on
  brightness and size (:func:`pixel_statistics`) that a classifier must beat.

Examples
--------
>>> from zoobot.shared.schemas import Schema
>>> schema = Schema({'a': ['_x', '_y'], 'b': ['_u', '_v']}, {'a': None, 'b': 'a_x'})
>>> truth = np.array([[0.5, 0.5, 0.2, 0.8]])
>>> truth_mae(np.array([[0.6, 0.4, 0.2, 0.8]]), truth, schema).round(4).to_dict()
{'a': 0.1, 'b': 0.0, 'pooled': 0.0667}
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize
from scipy.special import betainc, betaln, digamma, gammaln, logsumexp, xlogy

from zoobot.shared import stats
from zoobot.shared.losses_reference import dirichlet_multinomial_nll

__all__ = [
    "POOLED",
    "TRUE_PROB_SUFFIX",
    "true_probabilities",
    "question_reach",
    "truth_mae",
    "truth_cdf",
    "truth_coverage",
    "vote_counts",
    "vote_nll_dirichlet_multinomial",
    "vote_nll_multinomial",
    "vote_cdf",
    "vote_coverage",
    "train_mean_fractions",
    "fit_constant_dirichlet",
    "CONCENTRATION_BOUNDS",
    "PREDICTORS",
    "METRIC_COLUMNS",
    "evaluate_predictions",
    "load_evaluation_inputs",
    "reliability_table",
    "coverage_curve",
    "COVERAGE_LEVELS",
    "PIXEL_STATISTICS",
    "pixel_statistics",
    "ring_baseline_auc",
]

#: Index label of the row that pools every question.
POOLED = "pooled"
#: Suffix of the true-probability columns of synthetic catalogs (``{label_col}_true-prob``).
TRUE_PROB_SUFFIX = "_true-prob"


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------

def _question_of_answer(schema) -> np.ndarray:
    """Question position of each answer column."""
    return np.concatenate([np.full(end - start + 1, q) for q, (start, end) in enumerate(schema.question_index_groups)])


def _as_2d(values, schema, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != schema.n_answers:
        raise ValueError(
            f"{name} must have shape (galaxy, {schema.n_answers}) for schema {schema.name!r} "
            f"(one column per label column); got shape {array.shape}."
        )
    return array


def _as_samples(concentrations, schema) -> np.ndarray:
    """(galaxy, answer[, sample]) -> (galaxy, answer, sample) float64, checked against the schema."""
    alpha = np.asarray(concentrations, dtype=np.float64)
    if alpha.ndim == 2:
        alpha = alpha[:, :, None]
    if alpha.ndim != 3 or alpha.shape[1] != schema.n_answers:
        raise ValueError(
            f"concentrations must have shape (galaxy, {schema.n_answers}) or (galaxy, {schema.n_answers}, sample) "
            f"for schema {schema.name!r}; got shape {np.shape(concentrations)}."
        )
    finite = np.isfinite(alpha).all(axis=(1, 2))
    if (alpha[finite] <= 0).any():
        row = int(np.flatnonzero(finite & (alpha <= 0).any(axis=(1, 2)))[0])
        raise ValueError(f"concentrations must be > 0; row {row} has {alpha[row].min():.3g}.")
    return alpha


def _check_rows(n: int, other: np.ndarray, name: str) -> None:
    if other.shape[0] != n:
        raise ValueError(f"{name} has {other.shape[0]} rows but the predictions have {n}; they must be aligned.")


def true_probabilities(catalog: pd.DataFrame, schema) -> np.ndarray:
    """The true answer probabilities of a catalog that has them (synthetic catalogs do).

    Parameters
    ----------
    catalog : pandas.DataFrame
        With ``{label_col}_true-prob`` for every label column of ``schema``.
    schema : Schema

    Returns
    -------
    numpy.ndarray
        (galaxy, answer) float64, P(answer | question asked).

    Raises
    ------
    ValueError
        Naming the missing columns (real catalogs have no truth: use the vote metrics).

    Examples
    --------
    >>> from zoobot.shared.schemas import Schema
    >>> schema = Schema({'a': ['_x', '_y']}, {'a': None})
    >>> true_probabilities(pd.DataFrame({'a_x_true-prob': [0.3], 'a_y_true-prob': [0.7]}), schema)
    array([[0.3, 0.7]])
    """
    columns = [f"{col}{TRUE_PROB_SUFFIX}" for col in schema.label_cols]
    missing = [c for c in columns if c not in catalog.columns]
    if missing:
        raise ValueError(
            f"The catalog has no true probabilities for schema {schema.name!r}: missing columns {missing[:3]}"
            f"{' ...' if len(missing) > 3 else ''}. Only synthetic catalogs (zoobot.shared.synthetic) carry "
            f"'{{label_col}}{TRUE_PROB_SUFFIX}'; for real data use the vote metrics."
        )
    values = catalog[columns].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"Column {columns[col]!r}, row {row}: true probability {float(values[row, col])} is not in [0, 1].")
    return values


def question_reach(true_probs, schema) -> np.ndarray:
    """Probability that each question is asked: the product of the true answer probabilities leading to it.

    Parameters
    ----------
    true_probs : array-like, (galaxy, answer)
    schema : Schema

    Returns
    -------
    numpy.ndarray
        (galaxy, question) float64; 1 for questions asked of everyone.

    Examples
    --------
    >>> from zoobot.shared.schemas import Schema
    >>> schema = Schema({'a': ['_x', '_y'], 'b': ['_u', '_v']}, {'a': None, 'b': 'a_x'})
    >>> question_reach(np.array([[0.25, 0.75, 0.5, 0.5]]), schema)
    array([[1.  , 0.25]])
    """
    return stats.proportion_asked(_as_2d(true_probs, schema, "true_probs"), schema)


# ---------------------------------------------------------------------------------------------
# pooling per question
# ---------------------------------------------------------------------------------------------

def _weighted_by_question(values: np.ndarray, weights: np.ndarray, schema) -> pd.Series:
    """Weighted mean of (galaxy, answer) ``values`` per question and pooled; zero weight drops an entry."""
    question = _question_of_answer(schema)
    weights = np.where(np.isfinite(values), weights, 0.0)
    values = np.where(weights > 0, values, 0.0)
    numerator = np.bincount(question, weights=(values * weights).sum(axis=0), minlength=schema.n_questions)
    denominator = np.bincount(question, weights=weights.sum(axis=0), minlength=schema.n_questions)
    names = [q.text for q in schema.questions] + [POOLED]
    numerator = np.append(numerator, numerator.sum())
    denominator = np.append(denominator, denominator.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        result = np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)
    return pd.Series(result, index=pd.Index(names, name="question"))


def _reach_weights(true_probs: np.ndarray, schema) -> np.ndarray:
    """(galaxy, answer) weights: the reach of each answer's question."""
    return question_reach(true_probs, schema)[:, _question_of_answer(schema)]


def _valid_rows(array: np.ndarray) -> np.ndarray:
    return np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)


# ---------------------------------------------------------------------------------------------
# against the truth
# ---------------------------------------------------------------------------------------------

def truth_mae(fractions, true_probs, schema) -> pd.Series:
    """Reach-weighted mean absolute error of vote fractions against the true answer probabilities.

    Per question q: ``sum_{g, a in q} r_gq |f_ga - p_ga| / sum_{g, a in q} r_gq``, with reach
    ``r_gq`` (:func:`question_reach` of the truth); ``'pooled'`` sums over every question's answers.

    Parameters
    ----------
    fractions : array-like, (galaxy, answer)
        Predicted vote fractions (:func:`zoobot.shared.stats.vote_fractions` of the concentrations), or
        any constant baseline broadcast to that shape. NaN rows are left out.
    true_probs : array-like, (galaxy, answer)
        :func:`true_probabilities` of the catalog, aligned with ``fractions``.
    schema : Schema

    Returns
    -------
    pandas.Series
        Indexed by question text, then ``'pooled'``; NaN for a question no galaxy reaches.

    Examples
    --------
    >>> from zoobot.shared.schemas import Schema
    >>> schema = Schema({'a': ['_x', '_y']}, {'a': None})
    >>> round(float(truth_mae(np.array([[0.5, 0.5]]), np.array([[0.7, 0.3]]), schema)['pooled']), 6)
    0.2
    """
    fractions = _as_2d(fractions, schema, "fractions")
    true_probs = _as_2d(true_probs, schema, "true_probs")
    _check_rows(fractions.shape[0], true_probs, "true_probs")
    weights = _reach_weights(true_probs, schema)
    weights[~_valid_rows(fractions)] = 0.0
    return _weighted_by_question(np.abs(fractions - true_probs), weights, schema)


def _rest_of_question(alpha: np.ndarray, schema) -> tuple[np.ndarray, np.ndarray]:
    """``A_q - alpha_a`` (the second Beta parameter of each answer's marginal) and where it is 0 (single answer)."""
    rest = np.empty_like(alpha)
    for start, end in schema.question_index_groups:
        rest[:, start : end + 1] = alpha[:, start : end + 1].sum(axis=1, keepdims=True) - alpha[:, start : end + 1]
    return rest, rest <= 0


def truth_cdf(concentrations, true_probs, schema) -> np.ndarray:
    """Where each true probability falls in its predicted distribution: the CDF of the answer's marginal.

    The marginal of answer a is Beta(alpha_a, A_q - alpha_a); with several samples the predictive is
    their equal mixture, so the CDF is the mean over samples. A true probability inside the central
    interval of width w has a CDF value in ``[(1 - w) / 2, (1 + w) / 2]`` (the probability integral
    transform; uniform for a calibrated model).

    Parameters
    ----------
    concentrations : array-like, (galaxy, answer[, sample])
    true_probs : array-like, (galaxy, answer)
    schema : Schema

    Returns
    -------
    numpy.ndarray
        (galaxy, answer) float64; NaN rows of ``concentrations`` stay NaN. Single-answer questions
        (fraction 1 by construction) get 0.5.

    Examples
    --------
    >>> from zoobot.shared.schemas import Schema
    >>> truth_cdf(np.array([[1.0, 1.0]]), np.array([[0.3, 0.7]]), Schema({'a': ['_x', '_y']}, {'a': None}))
    array([[0.3, 0.7]])
    """
    alpha = _as_samples(concentrations, schema)
    true_probs = _as_2d(true_probs, schema, "true_probs")
    _check_rows(alpha.shape[0], true_probs, "true_probs")
    rest, single = _rest_of_question(alpha, schema)
    with np.errstate(invalid="ignore"):
        cdf = betainc(alpha, np.where(single, 1.0, rest), true_probs[:, :, None])
    cdf = np.where(single, 0.5, cdf).mean(axis=2)
    cdf[~_valid_rows(alpha)] = np.nan
    return cdf


def _inside(cdf_low: np.ndarray, cdf_high: np.ndarray, interval_width: float, randomized: bool = False) -> np.ndarray:
    """How much of each value is inside the central interval; NaN stays.

    A value whose CDF jumps from ``cdf_low`` to ``cdf_high`` (a count; equal for a continuous value)
    is inside when ``cdf_high >= (1 - w) / 2`` and ``cdf_low < (1 + w) / 2``. ``randomized``: instead,
    the share of the jump inside ``[(1 - w) / 2, (1 + w) / 2]`` (the expected coverage of the
    randomised probability integral transform, exactly ``w`` for a calibrated model).
    """
    lower, upper = (1 - interval_width) / 2, (1 + interval_width) / 2
    inside = ((cdf_high >= lower) & (cdf_low < upper)).astype(np.float64)
    if randomized:
        jump = cdf_high - cdf_low
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.clip(np.minimum(cdf_high, upper) - np.maximum(cdf_low, lower), 0.0, None) / jump
        inside = np.where(jump > 1e-12, share, inside)
    inside[np.isnan(cdf_low) | np.isnan(cdf_high)] = np.nan
    return inside


def _check_width(interval_width: float) -> float:
    if not 0 < float(interval_width) < 1:
        raise ValueError(f"interval_width must be in (0, 1), got {interval_width!r}.")
    return float(interval_width)


def truth_coverage(concentrations, true_probs, schema, interval_width: float = 0.9) -> pd.Series:
    """Reach-weighted fraction of true probabilities inside the predicted central credible interval.

    The interval of answer a is the central ``interval_width`` interval of its marginal
    Beta(alpha_a, A_q - alpha_a) (the mixture over samples when there are several), so a calibrated
    model covers ``interval_width`` of the truth. Weights as in :func:`truth_mae`.

    Parameters
    ----------
    concentrations : array-like, (galaxy, answer[, sample])
        Predicted Dirichlet concentrations.
    true_probs : array-like, (galaxy, answer)
    schema : Schema
    interval_width : float
        Nominal coverage, in (0, 1).

    Returns
    -------
    pandas.Series
        Per question and ``'pooled'``.

    Examples
    --------
    >>> from zoobot.shared.schemas import Schema
    >>> schema = Schema({'a': ['_x', '_y']}, {'a': None})
    >>> truth_coverage(np.array([[1.0, 1.0], [1.0, 1.0]]), np.array([[0.5, 0.5], [0.01, 0.99]]), schema).tolist()
    [0.5, 0.5]
    """
    interval_width = _check_width(interval_width)
    cdf = truth_cdf(concentrations, true_probs, schema)
    weights = _reach_weights(_as_2d(true_probs, schema, "true_probs"), schema)
    return _weighted_by_question(_inside(cdf, cdf, interval_width), weights, schema)


# ---------------------------------------------------------------------------------------------
# against volunteer votes
# ---------------------------------------------------------------------------------------------

def vote_counts(catalog: pd.DataFrame, schema) -> np.ndarray:
    """The vote counts of a catalog, one column per label column of ``schema``.

    Parameters
    ----------
    catalog : pandas.DataFrame
    schema : Schema

    Returns
    -------
    numpy.ndarray
        (galaxy, answer) float64.

    Raises
    ------
    ValueError
        Naming missing columns, or the first row with a negative or missing count.

    Examples
    --------
    >>> from zoobot.shared.schemas import Schema
    >>> vote_counts(pd.DataFrame({'a_x': [3], 'a_y': [1]}), Schema({'a': ['_x', '_y']}, {'a': None}))
    array([[3., 1.]])
    """
    columns = list(schema.label_cols)
    missing = [c for c in columns if c not in catalog.columns]
    if missing:
        raise ValueError(
            f"The catalog lacks vote-count columns of schema {schema.name!r}: {missing[:3]}"
            f"{' ...' if len(missing) > 3 else ''}. Pass the schema the votes were collected with."
        )
    counts = catalog[columns].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(counts) | (counts < 0)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"Column {columns[col]!r}, row {row}: vote count {float(counts[row, col])} must be a number >= 0 "
            "(write 0 for answers nobody gave)."
        )
    return counts


def _question_totals(counts: np.ndarray, schema) -> np.ndarray:
    """(galaxy, question) total votes."""
    return np.stack([counts[:, s : e + 1].sum(axis=1) for s, e in schema.question_index_groups], axis=1)


def _log_multinomial_coefficient(counts: np.ndarray, schema) -> np.ndarray:
    """(galaxy, question) log N! / prod k_a!."""
    totals = _question_totals(counts, schema)
    per_answer = gammaln(counts + 1)
    return gammaln(totals + 1) - np.stack(
        [per_answer[:, s : e + 1].sum(axis=1) for s, e in schema.question_index_groups], axis=1
    )


def _per_vote(nll: np.ndarray, counts: np.ndarray, schema, valid: np.ndarray) -> pd.Series:
    """Sum of (galaxy, question) NLL over valid galaxies / their votes, per question and pooled."""
    totals = _question_totals(counts, schema)
    nll = np.where(valid[:, None], nll, 0.0).sum(axis=0)
    votes = np.where(valid[:, None], totals, 0.0).sum(axis=0)
    nll, votes = np.append(nll, nll.sum()), np.append(votes, votes.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(votes > 0, nll / np.where(votes > 0, votes, 1.0), np.nan)
    return pd.Series(values, index=pd.Index([q.text for q in schema.questions] + [POOLED], name="question"))


def _counts_for(counts, n_rows: int, schema) -> np.ndarray:
    counts = _as_2d(counts, schema, "counts")
    _check_rows(n_rows, counts, "counts")
    if (~np.isfinite(counts) | (counts < 0)).any():
        raise ValueError("counts must be finite and >= 0.")
    return counts


def vote_nll_dirichlet_multinomial(concentrations, counts, schema) -> pd.Series:
    """Negative log-likelihood per vote of the observed votes under the predicted Dirichlet-multinomial.

    Per galaxy and question, the probability of the volunteers' answers in the order given is
    ``DirMult(k | alpha) / (N! / prod k_a!)``; with several samples it is the mean over samples (the
    predictive mixture). The sum of ``-log`` over galaxies, divided by the number of votes, is given
    per question and pooled over all questions. Leaving out the multinomial coefficient (the same for
    every predictor) makes the figure directly comparable with :func:`vote_nll_multinomial`.

    Parameters
    ----------
    concentrations : array-like, (galaxy, answer[, sample])
    counts : array-like, (galaxy, answer)
        Observed votes (:func:`vote_counts`).
    schema : Schema

    Returns
    -------
    pandas.Series
        Nats per vote, per question and ``'pooled'``; NaN for a question without votes.

    Examples
    --------
    >>> from zoobot.shared.schemas import Schema
    >>> schema = Schema({'a': ['_x', '_y']}, {'a': None})
    >>> # alpha = (1, 1): every sequence of 2 votes with one of each has probability 1/6
    >>> round(float(vote_nll_dirichlet_multinomial([[1.0, 1.0]], [[1, 1]], schema)['a']), 4)
    0.8959
    """
    alpha = _as_samples(concentrations, schema)
    counts = _counts_for(counts, alpha.shape[0], schema)
    valid = _valid_rows(alpha)
    safe = np.where(valid[:, None, None], alpha, 1.0)
    coefficient = _log_multinomial_coefficient(counts, schema)
    log_likelihood = np.stack(
        [-dirichlet_multinomial_nll(counts, safe[:, :, s], schema.question_index_groups) for s in range(alpha.shape[2])],
        axis=2,
    )
    nll = -(logsumexp(log_likelihood, axis=2) - np.log(alpha.shape[2])) + coefficient
    return _per_vote(nll, counts, schema, valid)


def vote_nll_multinomial(fractions, counts, schema) -> pd.Series:
    """Negative log-likelihood per vote of the observed votes under a multinomial of the vote fractions.

    ``-sum k_a log f_a`` per galaxy and question (the probability of the answers in the order given),
    summed over galaxies and divided by the number of votes; the cross-entropy of the votes.

    Parameters
    ----------
    fractions : array-like, (galaxy, answer)
        Predicted vote fractions (:func:`zoobot.shared.stats.vote_fractions`), a baseline, or the truth.
    counts : array-like, (galaxy, answer)
    schema : Schema

    Returns
    -------
    pandas.Series
        Nats per vote, per question and ``'pooled'``; ``inf`` where a fraction of 0 received votes.

    Examples
    --------
    >>> from zoobot.shared.schemas import Schema
    >>> schema = Schema({'a': ['_x', '_y']}, {'a': None})
    >>> round(float(vote_nll_multinomial([[0.5, 0.5]], [[3, 1]], schema)['pooled']), 4)  # log 2
    0.6931
    """
    fractions = _as_2d(fractions, schema, "fractions")
    counts = _counts_for(counts, fractions.shape[0], schema)
    valid = _valid_rows(fractions)
    with np.errstate(divide="ignore"):
        per_answer = -xlogy(counts, np.where(valid[:, None], fractions, 1.0))
    nll = np.stack([per_answer[:, s : e + 1].sum(axis=1) for s, e in schema.question_index_groups], axis=1)
    return _per_vote(nll, counts, schema, valid)


def _betabinom_cdf_pair(k: np.ndarray, n: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(K < k) and P(K <= k) for K ~ BetaBin(n, a, b), elementwise, by summing the pmf up to k.

    ``scipy.stats.betabinom.cdf`` gives the same numbers but is about 30x slower on large arrays.
    """
    shape = np.shape(k)
    k, n, a, b = (np.ascontiguousarray(x, dtype=np.float64).ravel() for x in (k, n, a, b))
    k = np.minimum(k, n)
    below, at = np.zeros_like(k), np.zeros_like(k)
    log_norm = gammaln(n + 1) - betaln(a, b)
    for j in range(int(k.max(initial=0)) + 1):
        rows = np.flatnonzero(k >= j)
        nj, aj, bj = n[rows], a[rows], b[rows]
        p = np.exp(log_norm[rows] - gammaln(j + 1.0) - gammaln(nj - j + 1) + betaln(j + aj, nj - j + bj))
        at[rows] += p
        below[rows] += np.where(k[rows] > j, p, 0.0)
    return below.reshape(shape), at.reshape(shape)


def vote_cdf(concentrations, counts, schema) -> tuple[np.ndarray, np.ndarray]:
    """Where each observed count falls in its posterior predictive distribution.

    Given N votes on the question, the count of answer a follows the beta-binomial
    BetaBin(N, alpha_a, A_q - alpha_a) (the marginal of the Dirichlet-multinomial; with several samples,
    their equal mixture). Returns its CDF just below and at the observed count: the count lies in the
    central interval of width w exactly when ``cdf_at >= (1 - w) / 2`` and ``cdf_below < (1 + w) / 2``.

    Parameters
    ----------
    concentrations : array-like, (galaxy, answer[, sample])
    counts : array-like, (galaxy, answer)
    schema : Schema

    Returns
    -------
    (cdf_below, cdf_at) : tuple of numpy.ndarray
        (galaxy, answer) float64: P(K < k) and P(K <= k). NaN where the question has no votes or the
        prediction row is NaN. Single-answer questions get (0, 1).

    Examples
    --------
    >>> from zoobot.shared.schemas import Schema
    >>> below, at = vote_cdf([[1.0, 1.0]], [[1, 1]], Schema({'a': ['_x', '_y']}, {'a': None}))
    >>> below.round(4).tolist(), at.round(4).tolist()  # uniform over 0, 1, 2 votes
    ([[0.3333, 0.3333]], [[0.6667, 0.6667]])
    """
    alpha = _as_samples(concentrations, schema)
    counts = _counts_for(counts, alpha.shape[0], schema)
    question = _question_of_answer(schema)
    n = _question_totals(counts, schema)[:, question]
    rest, single = _rest_of_question(alpha, schema)
    valid = _valid_rows(alpha)[:, None, None]
    cdf_below, cdf_at = _betabinom_cdf_pair(
        np.broadcast_to(np.round(counts)[:, :, None], alpha.shape), np.broadcast_to(np.round(n)[:, :, None], alpha.shape),
        np.where(valid, alpha, 1.0), np.where(valid & ~single, rest, 1.0),
    )
    cdf_at = np.where(single, 1.0, cdf_at).mean(axis=2)
    cdf_below = np.where(single, 0.0, cdf_below).mean(axis=2)
    missing = (n <= 0) | ~_valid_rows(alpha)[:, None]
    cdf_at[missing], cdf_below[missing] = np.nan, np.nan
    return cdf_below, cdf_at


def vote_coverage(concentrations, counts, schema, interval_width: float = 0.9, *, randomized: bool = True) -> pd.Series:
    """Fraction of observed vote counts inside the central interval of their posterior predictive.

    The interval is the central ``interval_width`` interval of the beta-binomial of :func:`vote_cdf`
    (lower end: the smallest count whose CDF reaches ``(1 - w) / 2``; upper end: the smallest count
    whose CDF reaches ``(1 + w) / 2``). Counts are whole numbers, so such an interval holds more than
    ``interval_width`` of the probability (with 5 votes, often far more), and plain counting
    (``randomized=False``) rewards even an overconfident model. By default a count therefore counts
    for the share of its probability that lies inside the central range of the CDF (the expected
    coverage of the randomised probability integral transform): a calibrated model then covers exactly
    ``interval_width`` on average, whatever the number of votes. Every (galaxy, answer) whose question
    got votes counts once.

    Parameters
    ----------
    concentrations : array-like, (galaxy, answer[, sample])
    counts : array-like, (galaxy, answer)
    schema : Schema
    interval_width : float
        In (0, 1).
    randomized : bool
        Count the share of each count's probability inside the interval (default), or 1 for a
        count inside the discrete interval, else 0.

    Returns
    -------
    pandas.Series
        Per question and ``'pooled'``.

    Examples
    --------
    >>> from zoobot.shared.schemas import Schema
    >>> schema = Schema({'a': ['_x', '_y']}, {'a': None})
    >>> vote_coverage([[50.0, 50.0], [50.0, 50.0]], [[20, 20], [40, 0]], schema, randomized=False).tolist()
    [0.5, 0.5]
    >>> # one vote, uniform prediction: each count has probability 1/2; a 50% interval covers half of it
    >>> vote_coverage([[1.0, 1.0]], [[1, 0]], schema, interval_width=0.5).tolist()
    [0.5, 0.5]
    """
    interval_width = _check_width(interval_width)
    cdf_below, cdf_at = vote_cdf(concentrations, counts, schema)
    inside = _inside(cdf_below, cdf_at, interval_width, randomized)
    return _weighted_by_question(inside, np.isfinite(inside).astype(np.float64), schema)


# ---------------------------------------------------------------------------------------------
# image-blind baselines fitted to training votes
# ---------------------------------------------------------------------------------------------

def train_mean_fractions(counts, schema) -> np.ndarray:
    """The training set's pooled vote fractions: the maximum-likelihood constant multinomial.

    ``f_a = sum_g k_ga / sum_g N_gq``. Broadcast it to (galaxy, answer) to score it like a model.

    Parameters
    ----------
    counts : array-like, (galaxy, answer)
        Training votes (:func:`vote_counts`).
    schema : Schema

    Returns
    -------
    numpy.ndarray
        (answer,) float64; NaN for a question with no training votes.

    Examples
    --------
    >>> from zoobot.shared.schemas import Schema
    >>> train_mean_fractions([[3, 1], [0, 4]], Schema({'a': ['_x', '_y']}, {'a': None}))
    array([0.375, 0.625])
    """
    counts = _as_2d(counts, schema, "counts")
    summed = counts.sum(axis=0)
    out = np.full(schema.n_answers, np.nan)
    for start, end in schema.question_index_groups:
        total = summed[start : end + 1].sum()
        if total > 0:
            out[start : end + 1] = summed[start : end + 1] / total
    return out


#: Bounds of the fitted constant concentrations (a question whose votes look multinomial drives them up).
CONCENTRATION_BOUNDS = (1e-3, 1e5)


def _fit_question_dirichlet(k: np.ndarray) -> np.ndarray:
    """Maximum-likelihood Dirichlet-multinomial concentrations of one question's counts (rows with votes)."""
    n = k.sum(axis=1)
    means = k.sum(axis=0) / n.sum()

    def negative_log_likelihood(log_alpha):
        alpha = np.exp(log_alpha)
        total = alpha.sum()
        value = (gammaln(total) - gammaln(n + total)).sum() + (gammaln(k + alpha) - gammaln(alpha)).sum()
        grad = (digamma(total) - digamma(n + total)).sum() + (digamma(k + alpha) - digamma(alpha)).sum(axis=0)
        return -value, -grad * alpha

    start = np.log(np.clip(means * 2.0, CONCENTRATION_BOUNDS[0], None))
    bounds = [tuple(np.log(CONCENTRATION_BOUNDS))] * k.shape[1]
    result = optimize.minimize(negative_log_likelihood, start, jac=True, method="L-BFGS-B", bounds=bounds)
    return np.exp(result.x)


def fit_constant_dirichlet(counts, schema) -> np.ndarray:
    """One image-blind Dirichlet per question, fitted to training votes by maximum likelihood.

    Maximises the Dirichlet-multinomial likelihood of each question's counts over the galaxies that
    voted on it (L-BFGS in log alpha, concentrations bounded to :data:`CONCENTRATION_BOUNDS`). Its
    spread captures how much galaxies differ on average, so it is the baseline a model's
    uncertainties must beat. Broadcast it to (galaxy, answer) to score it like a model.

    Parameters
    ----------
    counts : array-like, (galaxy, answer)
        Training votes (:func:`vote_counts`).
    schema : Schema

    Returns
    -------
    numpy.ndarray
        (answer,) float64 concentrations; NaN for a question with no training votes, 1 for a
        single-answer question.

    Examples
    --------
    >>> from zoobot.shared.schemas import Schema
    >>> rng = np.random.default_rng(0)
    >>> votes = np.array([rng.multinomial(40, rng.dirichlet([2.0, 6.0])) for _ in range(3000)])
    >>> fit_constant_dirichlet(votes, Schema({'a': ['_x', '_y']}, {'a': None})).round(0)
    array([2., 6.])
    """
    counts = _as_2d(counts, schema, "counts")
    out = np.full(schema.n_answers, np.nan)
    for start, end in schema.question_index_groups:
        k = counts[:, start : end + 1]
        k = k[k.sum(axis=1) > 0]
        if end == start:
            out[start] = 1.0
        elif len(k):
            out[start : end + 1] = _fit_question_dirichlet(k)
    return out


# ---------------------------------------------------------------------------------------------
# everything in one table
# ---------------------------------------------------------------------------------------------

#: Rows of :func:`evaluate_predictions`, in order: the model, the two image-blind baselines fitted to
#: the training votes, and the true probabilities themselves (the multinomial floor of the vote NLL).
PREDICTORS = ("model", "constant_dirichlet", "train_mean", "truth")
#: Metric columns of :func:`evaluate_predictions`.
METRIC_COLUMNS = (
    "nll_dirichlet_multinomial",
    "nll_multinomial",
    "vote_coverage",
    "truth_mae",
    "truth_coverage",
)


def _has_truth(catalog: pd.DataFrame, schema) -> bool:
    return all(f"{col}{TRUE_PROB_SUFFIX}" in catalog.columns for col in schema.label_cols)


def _score(concentrations, fractions, counts, truth, schema, interval_width) -> dict:
    """Metric name -> Series for one predictor; ``concentrations`` None for a multinomial predictor."""
    scores = {"nll_multinomial": vote_nll_multinomial(fractions, counts, schema)}
    if concentrations is not None:
        scores["nll_dirichlet_multinomial"] = vote_nll_dirichlet_multinomial(concentrations, counts, schema)
        scores["vote_coverage"] = vote_coverage(concentrations, counts, schema, interval_width)
    if truth is not None:
        scores["truth_mae"] = truth_mae(fractions, truth, schema)
        if concentrations is not None:
            scores["truth_coverage"] = truth_coverage(concentrations, truth, schema, interval_width)
    return scores


def _counts_table(counts: np.ndarray, valid: np.ndarray, schema) -> pd.DataFrame:
    totals = _question_totals(counts[valid], schema)
    galaxies = np.append((totals > 0).sum(axis=0), int(valid.sum()))
    votes = np.append(totals.sum(axis=0), totals.sum())
    index = pd.Index([q.text for q in schema.questions] + [POOLED], name="question")
    return pd.DataFrame({"n_galaxies": galaxies.astype(np.int64), "n_votes": votes}, index=index)


def evaluate_predictions(catalog: pd.DataFrame, concentrations, schema, *, train_catalog: pd.DataFrame | None = None,
                         interval_width: float = 0.9) -> pd.DataFrame:
    """Every metric of this module, per question and pooled, for the model and its baselines.

    Parameters
    ----------
    catalog : pandas.DataFrame
        The evaluated galaxies, aligned row by row with ``concentrations``: the vote counts of
        ``schema`` and, if the catalog has them (synthetic data), ``{label_col}_true-prob``.
    concentrations : array-like, (galaxy, answer[, sample])
        Predicted Dirichlet concentrations (``zoobot.shared.load_predictions.load`` reads them from a
        predictions file). NaN rows (failed images) are left out.
    schema : Schema
    train_catalog : pandas.DataFrame, optional
        Training votes, to fit the ``'train_mean'`` and ``'constant_dirichlet'`` baselines. Without
        it those rows are absent.
    interval_width : float
        Nominal coverage of the intervals.

    Returns
    -------
    pandas.DataFrame
        Tidy: one row per (question, predictor), questions in schema order then ``'pooled'``,
        predictors in :data:`PREDICTORS` order (those available). Columns ``question``,
        ``predictor``, ``n_galaxies`` (with votes on the question), ``n_votes``, then
        :data:`METRIC_COLUMNS`; NaN where a metric does not apply (a multinomial has no intervals;
        no truth in the catalog; the truth's own MAE).

    Examples
    --------
    >>> from zoobot.shared.schemas import Schema
    >>> schema = Schema({'a': ['_x', '_y']}, {'a': None})
    >>> catalog = pd.DataFrame({'a_x': [3, 0], 'a_y': [1, 4], 'a_x_true-prob': [0.7, 0.1], 'a_y_true-prob': [0.3, 0.9]})
    >>> table = evaluate_predictions(catalog, [[6.0, 2.0], [1.0, 9.0]], schema, train_catalog=catalog)
    >>> table[table.question == 'pooled'][['predictor', 'truth_mae']].round(3).values.tolist()
    [['model', 0.025], ['constant_dirichlet', 0.3], ['train_mean', 0.3], ['truth', nan]]
    """
    interval_width = _check_width(interval_width)
    alpha = _as_samples(concentrations, schema)
    counts = _counts_for(vote_counts(catalog, schema), alpha.shape[0], schema)
    truth = true_probabilities(catalog, schema) if _has_truth(catalog, schema) else None
    valid = _valid_rows(alpha)
    n = alpha.shape[0]

    scored = {"model": _score(alpha, stats.vote_fractions(alpha, schema), counts, truth, schema, interval_width)}
    if train_catalog is not None:
        train_counts = vote_counts(train_catalog, schema)
        constant = np.broadcast_to(fit_constant_dirichlet(train_counts, schema), (n, schema.n_answers)).copy()
        constant[~valid] = np.nan
        scored["constant_dirichlet"] = _score(constant, stats.vote_fractions(constant, schema), counts, truth, schema,
                                              interval_width)
        mean = np.broadcast_to(train_mean_fractions(train_counts, schema), (n, schema.n_answers)).copy()
        mean[~valid] = np.nan
        scored["train_mean"] = _score(None, mean, counts, truth, schema, interval_width)
    if truth is not None:
        oracle = np.where(valid[:, None], truth, np.nan)
        scored["truth"] = {"nll_multinomial": vote_nll_multinomial(oracle, counts, schema)}

    sizes = _counts_table(counts, valid, schema)
    frames = []
    for predictor, scores in scored.items():
        frame = sizes.copy()
        for column in METRIC_COLUMNS:
            frame[column] = scores[column] if column in scores else np.nan
        frames.append(frame.assign(predictor=predictor).reset_index())
    table = pd.concat(frames, ignore_index=True)
    order = {q: i for i, q in enumerate(sizes.index)}
    table = table.sort_values(["question", "predictor"], key=lambda c: c.map(order) if c.name == "question"
                              else c.map({p: i for i, p in enumerate(PREDICTORS)}), kind="stable")
    return table[["question", "predictor", "n_galaxies", "n_votes", *METRIC_COLUMNS]].reset_index(drop=True)


def _prediction_schema(schema, metadata: dict, label_cols: list, path):
    from zoobot.shared import schemas

    if isinstance(schema, str):
        schema = schemas.get_schema(schema)
    if schema is None and isinstance(metadata.get("schema"), dict):
        schema = schemas.Schema.from_dict(metadata["schema"])
    if schema is None:
        matches = [name for name in schemas.list_schemas() if list(schemas.get_schema(name).label_cols) == label_cols]
        if not matches:
            raise ValueError(
                f"{str(path)!r} records no decision tree (a CSV file carries no metadata) and its columns match no "
                "prebuilt schema. Pass the schema the model was trained with (schema=..., or --schema NAME)."
            )
        schema = schemas.get_schema(matches[0])
    if list(schema.label_cols) != list(label_cols):
        raise ValueError(
            f"{str(path)!r} holds {len(label_cols)} outputs that are not the label columns of schema {schema.name!r} "
            f"(expected width {schema.n_answers}, got width {len(label_cols)}; first columns {label_cols[:3]} vs "
            f"{list(schema.label_cols)[:3]})."
        )
    return schema


def load_evaluation_inputs(catalog, predictions, schema=None) -> tuple[pd.DataFrame, np.ndarray, object]:
    """Read a catalog and a tree-predictions file and line them up by ``id_str``.

    Parameters
    ----------
    catalog : pandas.DataFrame, str or path-like
        Galaxies with ``id_str`` and the vote counts (and, for synthetic data, the true probabilities).
    predictions : str or path-like
        A predictions file of a tree model (``zoobot predict``; read with
        :func:`zoobot.shared.load_predictions.load`).
    schema : Schema or str, optional
        Default: the tree recorded in the predictions file (parquet/hdf5), else the prebuilt schema
        whose label columns match.

    Returns
    -------
    (catalog, concentrations, schema)
        The catalog rows of the predicted galaxies in prediction-file order, concentrations
        (galaxy, answer, sample), and the schema.

    Raises
    ------
    ValueError
        Predictions of a non-tree model; predicted ids missing from the catalog, or duplicated ids;
        a schema that does not match the prediction columns.

    Examples
    --------
    >>> catalog, concentrations, schema = load_evaluation_inputs('test.parquet', 'preds.parquet')  # doctest: +SKIP
    """
    from zoobot.shared.catalogs import load_catalog
    from zoobot.shared.load_predictions import load

    if not isinstance(catalog, pd.DataFrame):
        catalog = load_catalog(catalog)
    ids, concentrations, label_cols, metadata = load(predictions)
    if metadata.get("kind", "tree") != "tree":
        raise ValueError(
            f"{str(predictions)!r} holds predictions of a {metadata.get('kind')!r} model; these metrics need the "
            "Dirichlet concentrations of a decision-tree model (zoobot predict with a tree checkpoint)."
        )
    schema = _prediction_schema(schema, metadata, list(label_cols), predictions)
    if "id_str" not in catalog.columns:
        raise ValueError("The catalog has no 'id_str' column to match the predictions by.")
    duplicated = catalog["id_str"][catalog["id_str"].duplicated()]
    if len(duplicated):
        raise ValueError(f"The catalog repeats id_str {duplicated.iloc[:3].tolist()}; ids must be unique.")
    position = pd.Series(np.arange(len(catalog)), index=catalog["id_str"].astype(str))
    wanted = ids["id_str"].astype(str)
    missing = wanted[~wanted.isin(position.index)]
    if len(missing):
        raise ValueError(
            f"{len(missing)} predicted galaxies are not in the catalog, e.g. {missing.iloc[:3].tolist()}: evaluate "
            "predictions against the catalog they were made for."
        )
    return catalog.iloc[position[wanted].to_numpy()].reset_index(drop=True), concentrations, schema


# ---------------------------------------------------------------------------------------------
# the numbers behind a reliability plot
# ---------------------------------------------------------------------------------------------

def reliability_table(fractions, counts, schema, n_bins: int = 10) -> pd.DataFrame:
    """Predicted vote fraction against the observed fraction of votes, in bins of the prediction.

    Every vote is a 0/1 outcome for each answer of its question (1 for the answer given), predicted
    with that answer's vote fraction; :func:`zoobot.shared.plots.calibration_table`
    (:func:`sklearn.calibration.calibration_curve`) bins them. So ``observed_rate`` is the fraction of
    the votes in a bin that went to the answer, and a calibrated model lies on the diagonal.

    Parameters
    ----------
    fractions : array-like, (galaxy, answer)
        Predicted vote fractions; NaN rows are left out.
    counts : array-like, (galaxy, answer)
    schema : Schema
    n_bins : int

    Returns
    -------
    pandas.DataFrame
        As :func:`~zoobot.shared.plots.calibration_table`; ``count`` counts votes.

    Examples
    --------
    >>> from zoobot.shared.schemas import Schema
    >>> table = reliability_table([[0.7, 0.3]], [[3, 1]], Schema({'a': ['_x', '_y']}, {'a': None}), n_bins=2)
    >>> table[['count', 'mean_predicted', 'observed_rate']].values.tolist()
    [[4.0, 0.3, 0.25], [4.0, 0.7, 0.75]]
    """
    from zoobot.shared.plots import calibration_table

    fractions = _as_2d(fractions, schema, "fractions")
    counts = _counts_for(counts, fractions.shape[0], schema)
    valid = _valid_rows(fractions)
    fractions, counts = fractions[valid], counts[valid]
    n = _question_totals(counts, schema)[:, _question_of_answer(schema)]
    p = np.clip(fractions.ravel(), 0.0, 1.0)
    hits, misses = np.round(counts.ravel()).astype(np.int64), np.round((n - counts).ravel()).astype(np.int64)
    y_prob = np.concatenate([np.repeat(p, hits), np.repeat(p, misses)])
    y_true = np.concatenate([np.ones(hits.sum()), np.zeros(misses.sum())])
    return calibration_table(y_true, y_prob, n_bins)


#: Nominal levels of :func:`coverage_curve`.
COVERAGE_LEVELS = tuple(round(0.05 * k, 2) for k in range(1, 20))


def coverage_curve(concentrations, counts, schema, *, true_probs=None, levels=COVERAGE_LEVELS) -> pd.DataFrame:
    """Pooled interval coverage at a range of nominal levels: votes, and the truth when known.

    Parameters
    ----------
    concentrations : array-like, (galaxy, answer[, sample])
    counts : array-like, (galaxy, answer)
    schema : Schema
    true_probs : array-like, (galaxy, answer), optional
        Adds ``truth_coverage`` (reach-weighted, as :func:`truth_coverage`).
    levels : sequence of float
        Nominal interval widths in (0, 1).

    Returns
    -------
    pandas.DataFrame
        Columns ``nominal``, ``vote_coverage`` (randomised, as :func:`vote_coverage`'s default) and,
        with ``true_probs``, ``truth_coverage``; one row per level.

    Examples
    --------
    >>> from zoobot.shared.schemas import Schema
    >>> curve = coverage_curve([[1.0, 1.0]], [[1, 1]], Schema({'a': ['_x', '_y']}, {'a': None}), levels=[0.2, 0.5])
    >>> curve.round(3).values.tolist()  # one vote of each: the middle third of a uniform over 0, 1, 2 votes
    [[0.2, 0.6], [0.5, 1.0]]
    """
    levels = [_check_width(level) for level in levels]
    cdf_below, cdf_at = vote_cdf(concentrations, counts, schema)
    used = np.isfinite(cdf_at).astype(np.float64)
    table = {"nominal": levels, "vote_coverage": [
        _weighted_by_question(_inside(cdf_below, cdf_at, level, True), used, schema)[POOLED] for level in levels
    ]}
    if true_probs is not None:
        cdf = truth_cdf(concentrations, true_probs, schema)
        weights = _reach_weights(_as_2d(true_probs, schema, "true_probs"), schema)
        table["truth_coverage"] = [
            _weighted_by_question(_inside(cdf, cdf, level), weights, schema)[POOLED] for level in levels
        ]
    return pd.DataFrame(table)


# ---------------------------------------------------------------------------------------------
# the shortcut baseline of a binary label: brightness and size alone
# ---------------------------------------------------------------------------------------------

#: Columns of :func:`pixel_statistics`, in order.
PIXEL_STATISTICS = ("total_flux", "second_moment", "peak", "half_light_area")


def _image_statistics(image: np.ndarray) -> tuple[float, float, float, float]:
    """Brightness and size of one image (HWC), above the sky level (the median of the border pixels)."""
    grey = np.asarray(image, dtype=np.float64).mean(axis=-1)
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    light = np.clip(grey - np.median(border), 0.0, None)
    total = float(light.sum())
    if total <= 0:
        return 0.0, 0.0, 0.0, 0.0
    y, x = np.indices(light.shape, dtype=np.float64)
    cy, cx = (light * y).sum() / total, (light * x).sum() / total
    second_moment = float((light * ((y - cy) ** 2 + (x - cx) ** 2)).sum() / total)
    cumulative = np.cumsum(np.sort(light.ravel())[::-1])
    half_light_area = float(np.searchsorted(cumulative, 0.5 * total) + 1)
    return total, second_moment, float(light.max()), half_light_area


def pixel_statistics(file_locs) -> pd.DataFrame:
    """Brightness and size of each image, the cues a shortcut-taking classifier would use.

    Pixel values are averaged over channels and the sky level (median of the border pixels) is
    subtracted, negative values clipped to 0. Then: ``total_flux`` (sum), ``second_moment`` (flux-
    weighted mean squared distance from the flux centroid, pixels^2), ``peak`` (maximum) and
    ``half_light_area`` (fewest pixels holding half the flux).

    Parameters
    ----------
    file_locs : sequence of str or path-like
        Images :func:`zoobot.shared.images.load_image` reads.

    Returns
    -------
    pandas.DataFrame
        One row per image, columns :data:`PIXEL_STATISTICS` (float64).

    Examples
    --------
    >>> import tempfile, os
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), 'dot.png')
    >>> pixels = np.zeros((9, 9, 3), np.uint8); pixels[4, 4] = 200
    >>> Image.fromarray(pixels).save(path)
    >>> pixel_statistics([path]).values.tolist()
    [[200.0, 0.0, 200.0, 1.0]]
    """
    from zoobot.shared.images import load_image

    rows = [_image_statistics(load_image(loc)) for loc in file_locs]
    return pd.DataFrame(np.array(rows, dtype=np.float64).reshape(-1, len(PIXEL_STATISTICS)),
                        columns=list(PIXEL_STATISTICS))


def ring_baseline_auc(catalog: pd.DataFrame, label_col: str = "ring", *, features=("total_flux", "second_moment"),
                      n_splits: int = 5, seed: int = 0) -> float:
    """ROC AUC of a logistic regression on pixel statistics alone: the shortcut baseline of a binary label.

    If brightness and size predict the label (say rings drawn from bright, large galaxies), a
    classifier's AUC partly measures them; report this number next to the model's. Each galaxy is
    scored by a model that did not see it (stratified ``n_splits``-fold cross-validation of
    ``StandardScaler`` + ``LogisticRegression``), and the out-of-fold scores give one AUC.

    Parameters
    ----------
    catalog : pandas.DataFrame
        ``file_loc`` and the 0/1 ``label_col``; or, instead of ``file_loc``, the ``features`` as
        columns (e.g. catalog size and brightness, or precomputed :func:`pixel_statistics`).
    label_col : str
        The binary label.
    features : sequence of str
        Columns of :func:`pixel_statistics` (default: total flux and second moment; add ``'peak'`` and
        ``'half_light_area'`` for a stronger baseline), or catalog columns.
    n_splits : int
        Cross-validation folds (at most the size of the rarer class).
    seed : int
        Shuffles the folds.

    Returns
    -------
    float
        0.5 means the statistics carry no information about the label.

    Raises
    ------
    ValueError
        A label that is not 0/1 with both classes present, or too few of the rarer class for the folds;
        unknown feature names.
    MissingDependencyError
        Without scikit-learn (``pip install "zoobot[pca]"``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> table = pd.DataFrame({'ring': np.repeat([0, 1], 100), 'size': rng.normal(size=200)})
    >>> round(ring_baseline_auc(table, features=['size']), 1)
    0.5
    """
    labels = _binary_labels(catalog, label_col, n_splits)
    features = list(features)
    if all(f in catalog.columns for f in features):
        x = catalog[features].to_numpy(dtype=np.float64)
    elif "file_loc" in catalog.columns and set(features) <= set(PIXEL_STATISTICS):
        x = pixel_statistics(catalog["file_loc"])[features].to_numpy()
    else:
        raise ValueError(
            f"features {features} must all be catalog columns, or pixel statistics {list(PIXEL_STATISTICS)} of the "
            "images in 'file_loc'."
        )
    return _cross_validated_auc(x, labels, n_splits, seed)


def _binary_labels(catalog: pd.DataFrame, label_col: str, n_splits: int) -> np.ndarray:
    if label_col not in catalog.columns:
        raise ValueError(f"The catalog has no label column {label_col!r}; columns: {list(catalog.columns)[:10]}.")
    labels = catalog[label_col].to_numpy()
    if not np.isin(labels, [0, 1]).all():
        raise ValueError(f"Column {label_col!r} must hold 0/1 labels; found {sorted(set(labels.tolist()))[:5]}.")
    rarer = int(min((labels == 1).sum(), (labels == 0).sum()))
    if rarer < n_splits:
        raise ValueError(
            f"Column {label_col!r} has only {rarer} galaxies of its rarer class; {n_splits}-fold cross-validation "
            "needs at least one per fold. Use more galaxies or a smaller n_splits."
        )
    return labels.astype(np.int64)


def _cross_validated_auc(x: np.ndarray, labels: np.ndarray, n_splits: int, seed: int) -> float:
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedKFold, cross_val_predict
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        from zoobot.shared.errors import missing_dependency

        raise missing_dependency("scikit-learn", "The pixel-statistics baseline", "pca") from None
    model = make_pipeline(StandardScaler(), LogisticRegression())
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, x, labels, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, scores))
