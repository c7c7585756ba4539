"""From predicted Dirichlet concentrations to the numbers astronomers use (docs/guides/evaluating.md).

A tree model predicts, for each galaxy, answer and sample (MC-dropout pass or ensemble member),
a Dirichlet concentration alpha. This module turns them into:

- :func:`vote_fractions`: the expected fraction of volunteers giving each answer, given the question
  is asked: the mean over samples of ``alpha_a / A_q`` (``A_q`` = sum of the question's alphas);
- :func:`proportion_asked`: the probability each question is asked at all (the product of the
  fractions of the answers leading to it);
- :func:`get_expected_votes_ml`: expected votes per question = root votes x P(asked);
- :func:`get_confidence_intervals`: 90 % (or other) intervals of each fraction, from the per-sample
  Beta marginals of the Dirichlet, combined by the median over samples.

Rows of NaN (images that failed to load) stay NaN.
"""
from __future__ import annotations

import numpy as np
from scipy.special import betaincinv

from zoobot.shared.losses_reference import check_question_index_groups

__all__ = [
    "vote_fractions",
    "expected_value_of_dirichlet_mixture",
    "proportion_asked",
    "get_expected_votes_ml",
    "get_confidence_intervals",
]


def _groups(schema_or_groups, n_answers: int) -> list[tuple[int, int]]:
    groups = getattr(schema_or_groups, "question_index_groups", schema_or_groups)
    groups = check_question_index_groups(groups)
    if groups[-1][1] + 1 != n_answers:
        name = getattr(schema_or_groups, "name", None)
        raise ValueError(
            f"Width mismatch: the schema{f' {name!r}' if name else ''} has {groups[-1][1] + 1} answers, "
            f"expected width {groups[-1][1] + 1}, got width {n_answers}."
        )
    return groups


def _as_samples(concentrations) -> np.ndarray:
    """(galaxy, answer) or (galaxy, answer, sample) -> float64 (galaxy, answer, sample)."""
    alpha = np.asarray(concentrations, dtype=np.float64)
    if alpha.ndim == 2:
        alpha = alpha[:, :, None]
    if alpha.ndim != 3:
        raise ValueError(
            f"concentrations must be (galaxy, answer) or (galaxy, answer, sample), got shape {alpha.shape}"
        )
    return alpha


def _per_question_fractions(alpha: np.ndarray, groups) -> np.ndarray:
    """alpha_a / A_q for each sample: (galaxy, answer, sample)."""
    fractions = np.empty_like(alpha)
    for start, end in groups:
        block = alpha[:, start : end + 1]
        fractions[:, start : end + 1] = block / block.sum(axis=1, keepdims=True)
    return fractions


def vote_fractions(concentrations, schema) -> np.ndarray:
    """Expected vote fraction of each answer, given its question is asked.

    ``f_a = mean over samples of alpha_a / A_q``.

    Parameters
    ----------
    concentrations : array-like
        (galaxy, answer) or (galaxy, answer, sample).
    schema : Schema or sequence of (start, end)
        Anything with ``question_index_groups``, or the groups themselves.

    Returns
    -------
    numpy.ndarray
        (galaxy, answer) float64; the fractions of each question sum to 1.

    Raises
    ------
    ValueError
        (E10) if the answer axis does not match the schema.

    Examples
    --------
    >>> vote_fractions(np.array([[3.0, 1.0, 2.0, 2.0]]), [(0, 1), (2, 3)])
    array([[0.75, 0.25, 0.5 , 0.5 ]])
    """
    alpha = _as_samples(concentrations)
    groups = _groups(schema, alpha.shape[1])
    return _per_question_fractions(alpha, groups).mean(axis=2)


#: Upstream (v1) name of :func:`vote_fractions`.
expected_value_of_dirichlet_mixture = vote_fractions


def proportion_asked(fractions, schema) -> np.ndarray:
    """Probability that each question is asked, from the vote fractions.

    For a question asked after answer ``p``: ``schema.joint_p(fractions, p)`` (the product of the
    fractions along the dependency chain); 1 for questions asked of everyone.

    Parameters
    ----------
    fractions : array-like, (galaxy, answer)
        From :func:`vote_fractions`.
    schema : Schema

    Returns
    -------
    numpy.ndarray
        (galaxy, question) float64.

    Examples
    --------
    >>> from zoobot.shared.schemas import Schema
    >>> s = Schema({'a': ['_x', '_y'], 'b': ['_u', '_v']}, {'a': None, 'b': 'a_x'})
    >>> proportion_asked(np.array([[0.8, 0.2, 0.5, 0.5]]), s)
    array([[1. , 0.8]])
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    _groups(schema, fractions.shape[1] if fractions.ndim == 2 else -1)
    out = np.ones((fractions.shape[0], len(schema.questions)), dtype=np.float64)
    for q, question in enumerate(schema.questions):
        if question.asked_after is not None:
            out[:, q] = schema.joint_p(fractions, question.asked_after.text)
    out[np.isnan(fractions).any(axis=1)] = np.nan
    return out


def get_expected_votes_ml(fractions, question, votes_for_base_question, schema, round_votes: bool = False) -> np.ndarray:
    """Expected number of votes a question gets: root votes x P(question asked).

    Parameters
    ----------
    fractions : array-like, (galaxy, answer)
        From :func:`vote_fractions`.
    question : Question or str
        The question (object or its text).
    votes_for_base_question : float or array-like (galaxy,)
        Volunteers who answered the first question (e.g. 40 for GZ DECaLS).
    schema : Schema
    round_votes : bool
        Round to whole votes (NaN stays NaN).

    Returns
    -------
    numpy.ndarray
        (galaxy,) float64.

    Examples
    --------
    >>> from zoobot.shared.schemas import Schema
    >>> s = Schema({'a': ['_x', '_y'], 'b': ['_u', '_v']}, {'a': None, 'b': 'a_x'})
    >>> get_expected_votes_ml(np.array([[0.8, 0.2, 0.5, 0.5]]), 'b', 40, s)
    array([32.])
    """
    text = question if isinstance(question, str) else question.text
    schema_question = schema.get_question(text)
    index = schema.questions.index(schema_question)
    asked = proportion_asked(fractions, schema)[:, index]
    votes = np.asarray(votes_for_base_question, dtype=np.float64) * asked
    return np.round(votes) if round_votes else votes


def get_confidence_intervals(concentrations, schema, interval_width: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Credible interval of each vote fraction.

    For each sample, the fraction of answer a given its question follows Beta(alpha_a, A_q - alpha_a)
    (the marginal of the Dirichlet); its ``(1 - w) / 2`` and ``(1 + w) / 2`` quantiles are taken, then
    the median over samples. A question with a single answer has fraction 1 exactly.

    Parameters
    ----------
    concentrations : array-like
        (galaxy, answer) or (galaxy, answer, sample).
    schema : Schema or sequence of (start, end)
    interval_width : float
        In (0, 1); 0.9 gives the 5th and 95th percentiles.

    Returns
    -------
    (lower, upper) : tuple of numpy.ndarray
        Each (galaxy, answer) float64.

    Examples
    --------
    >>> lower, upper = get_confidence_intervals(np.array([[2.0, 2.0]]), [(0, 1)])
    >>> bool(lower[0, 0] < 0.5 < upper[0, 0])
    True
    """
    if not 0 < interval_width < 1:
        raise ValueError(f"interval_width must be in (0, 1), got {interval_width!r}")
    alpha = _as_samples(concentrations)
    groups = _groups(schema, alpha.shape[1])
    totals = np.empty_like(alpha)
    for start, end in groups:
        totals[:, start : end + 1] = alpha[:, start : end + 1].sum(axis=1, keepdims=True)
    rest = totals - alpha
    single = rest == 0
    with np.errstate(invalid="ignore"):
        safe_rest = np.where(single, 1.0, rest)
        lower = betaincinv(alpha, safe_rest, (1 - interval_width) / 2)
        upper = betaincinv(alpha, safe_rest, (1 + interval_width) / 2)
    lower[single], upper[single] = 1.0, 1.0
    lower[np.isnan(alpha)], upper[np.isnan(alpha)] = np.nan, np.nan
    return np.median(lower, axis=2), np.median(upper, axis=2)

