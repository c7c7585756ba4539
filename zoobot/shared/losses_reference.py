"""The float64 reference ("oracle") of the Dirichlet-multinomial loss (docs/api/shared/errors.md).

Both backends' losses are tested against :func:`dirichlet_multinomial_nll`. It is written for
clarity, not speed: numpy + ``scipy.special.gammaln`` in float64.

For one galaxy and one question q with answers a (columns ``start..end`` inclusive), vote counts
k_a, concentrations alpha_a, N = sum k_a and A = sum alpha_a::

    NLL_q = -[ lnG(N + 1) - sum_a lnG(k_a + 1)                       (multinomial coefficient)
               + lnG(A) - lnG(N + A) + sum_a (lnG(k_a + alpha_a) - lnG(alpha_a)) ]

and ``NLL_q = 0`` exactly where N = 0 (questions nobody answered carry no information).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.special import gammaln

from zoobot.shared.validation import is_int

__all__ = ["dirichlet_multinomial_nll", "vote_fraction_nll", "check_question_index_groups"]


def check_question_index_groups(question_index_groups, n_answers: int | None = None) -> list[tuple[int, int]]:
    """Validate inclusive ``(start, end)`` groups: integers, ``start <= end``, ascending, non-overlapping,
    and (if ``n_answers`` is given) ``end < n_answers``.

    Returns
    -------
    list of (int, int)

    Raises
    ------
    ValueError
        Naming the bad group; E10 when the groups need more columns than ``n_answers``.

    Examples
    --------
    >>> check_question_index_groups([(0, 1), (2, 4)], n_answers=5)
    [(0, 1), (2, 4)]
    """
    groups = []
    previous_end = -1
    for i, group in enumerate(question_index_groups):
        try:
            start, end = group
        except (TypeError, ValueError):
            raise ValueError(f"question_index_groups[{i}] must be a (start, end) pair, got {group!r}") from None
        if not (is_int(start) and is_int(end)):
            raise ValueError(f"question_index_groups[{i}] must hold integers, got {group!r}")
        start, end = int(start), int(end)
        if start > end or start < 0:
            raise ValueError(f"question_index_groups[{i}] = {group!r}: need 0 <= start <= end (end is inclusive)")
        if start <= previous_end:
            raise ValueError(
                f"question_index_groups[{i}] = {group!r} overlaps or precedes the previous group "
                "(groups must be ascending and non-overlapping)"
            )
        previous_end = end
        groups.append((start, end))
    if not groups:
        raise ValueError("question_index_groups is empty")
    if n_answers is not None and groups[-1][1] >= n_answers:
        raise ValueError(
            f"Width mismatch: question_index_groups need at least {groups[-1][1] + 1} answer columns, "
            f"got width {n_answers}."
        )
    return groups


def dirichlet_multinomial_nll(
    counts, concentrations, question_index_groups: Sequence[tuple[int, int]]
) -> np.ndarray:
    """Per-question negative log Dirichlet-multinomial likelihood, in float64.

    Parameters
    ----------
    counts : array-like, (batch, n_answers)
        Vote counts (>= 0; need not be integers). A 1-D array is one galaxy.
    concentrations : array-like, (batch, n_answers)
        Dirichlet concentrations (> 0).
    question_index_groups : sequence of (start, end)
        Inclusive column ranges of each question (``schema.question_index_groups``).

    Returns
    -------
    numpy.ndarray
        (batch, n_questions) float64; exactly 0.0 where a question has no votes.

    Raises
    ------
    ValueError
        Shapes differ, or the groups do not fit the width (E10).

    Examples
    --------
    >>> nll = dirichlet_multinomial_nll([[1, 0, 0, 0]], [[1.0, 1.0, 5.0, 5.0]], [(0, 1), (2, 3)])
    >>> float(np.round(nll[0, 0], 6)), float(nll[0, 1])  # -log(1/2): one vote, flat prior
    (0.693147, 0.0)
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    concentrations = np.atleast_2d(np.asarray(concentrations, dtype=np.float64))
    if counts.shape != concentrations.shape or counts.ndim != 2:
        raise ValueError(
            f"counts and concentrations must both be (batch, n_answers); got {counts.shape} and {concentrations.shape}"
        )
    groups = check_question_index_groups(question_index_groups, counts.shape[1])
    out = np.empty((counts.shape[0], len(groups)), dtype=np.float64)
    for q, (start, end) in enumerate(groups):
        k = counts[:, start : end + 1]
        alpha = concentrations[:, start : end + 1]
        n = k.sum(axis=1)
        a = alpha.sum(axis=1)
        log_likelihood = (
            gammaln(n + 1)
            - gammaln(k + 1).sum(axis=1)
            + gammaln(a)
            - gammaln(n + a)
            + (gammaln(k + alpha) - gammaln(alpha)).sum(axis=1)
        )
        out[:, q] = np.where(n > 0, -log_likelihood, 0.0)
    return out


def vote_fraction_nll(counts, concentrations, question_index_groups) -> np.ndarray:
    """Float64 reference of the backends' ``vote_fraction_nll``: per galaxy and question, minus
    ``scipy.stats.multinomial.logpmf`` of the votes at the Dirichlet mean ``alpha / sum(alpha)``; 0 where a
    question has no votes. One scipy call per galaxy and question: slow, for tests.

    Examples
    --------
    >>> round(float(vote_fraction_nll(np.array([[3, 1]]), np.array([[6.0, 2.0]]), [(0, 1)])[0, 0]), 4)
    0.863
    """
    from scipy import stats

    counts = np.asarray(counts, dtype=np.float64)
    concentrations = np.asarray(concentrations, dtype=np.float64)
    groups = check_question_index_groups(question_index_groups, counts.shape[1])
    out = np.zeros((counts.shape[0], len(groups)))
    for i in range(counts.shape[0]):
        for q, (start, end) in enumerate(groups):
            votes, alpha = counts[i, start:end + 1], concentrations[i, start:end + 1]
            if votes.sum() > 0:
                out[i, q] = -stats.multinomial.logpmf(votes, n=votes.sum(), p=alpha / alpha.sum())
    return out
