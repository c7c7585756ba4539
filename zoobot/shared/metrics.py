"""How good are tree predictions? Metrics against volunteer votes and, where known, the truth.

A tree model predicts Dirichlet concentrations alpha per galaxy and answer (possibly per MC sample).
Every metric here is framework-free (numpy/scipy/pandas) and comes per question plus a ``'pooled'``
row, as a :class:`pandas.Series` indexed by question text. See ``docs/guides/evaluating.md``.

Against **volunteer votes** (all real data):

- :func:`vote_nll_dirichlet_multinomial`, :func:`vote_nll_multinomial`: negative log-likelihood of
  the observed votes per vote, under the Dirichlet-multinomial (mixed over samples) and under the
  multinomial of the mean vote fractions;
- :func:`vote_coverage`: how often the observed count of each answer lies in the central interval of
  its posterior predictive (beta-binomial) distribution;
- baselines: :func:`train_mean_fractions` (the training set's pooled vote fractions) and
  :func:`fit_constant_dirichlet` (one image-blind Dirichlet per question, maximum likelihood).

Against the **truth** (synthetic catalogs have ``{label_col}_true-prob`` columns, see
:func:`true_probabilities`):

- :func:`truth_mae`: reach-weighted mean absolute error of the vote fractions;
- :func:`truth_coverage`: how often the central interval of each answer's marginal
  Beta(alpha_a, A_q - alpha_a) contains the true probability.

**Reach** is the true probability that a question is asked at all (the product of the true answer
probabilities down the tree, :func:`zoobot.shared.stats.proportion_asked`): an error on the bar
question of a galaxy that is almost surely smooth matters little, so each (galaxy, answer) counts
with the reach of its question. Pooled values pool every (galaxy, answer) entry with those weights.

Rows of NaN predictions (images that failed to load) are left out of every metric.

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
from scipy.special import betainc

from zoobot.shared import stats

__all__ = [
    "POOLED",
    "TRUE_PROB_SUFFIX",
    "true_probabilities",
    "question_reach",
    "truth_mae",
    "truth_coverage",
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
        raise ValueError(f"Column {columns[col]!r}, row {row}: true probability {values[row, col]!r} is not in [0, 1].")
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
    totals = np.empty_like(alpha)
    for start, end in schema.question_index_groups:
        totals[:, start : end + 1] = alpha[:, start : end + 1].sum(axis=1, keepdims=True)
    rest = totals - alpha
    single = rest <= 0
    with np.errstate(invalid="ignore"):
        cdf = betainc(alpha, np.where(single, 1.0, rest), true_probs[:, :, None])
    cdf = np.where(single, 0.5, cdf).mean(axis=2)
    cdf[~_valid_rows(alpha)] = np.nan
    return cdf


def _inside(cdf_low: np.ndarray, cdf_high: np.ndarray, interval_width: float) -> np.ndarray:
    """1.0 where a value whose CDF lies in [cdf_low, cdf_high] is inside the central interval; NaN stays."""
    lower, upper = (1 - interval_width) / 2, (1 + interval_width) / 2
    inside = ((cdf_high >= lower) & (cdf_low < upper)).astype(np.float64)
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
