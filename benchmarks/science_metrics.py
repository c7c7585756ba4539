"""Scores of ``bench_science.py``: reach-weighted MAE and 90 % coverage against truth, DM NLL per vote.

Framework-free (numpy/scipy); built on ``zoobot.shared.stats`` and ``zoobot.shared.losses_reference``.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import digamma, gammaln

from zoobot.shared.losses_reference import dirichlet_multinomial_nll
from zoobot.shared.stats import get_confidence_intervals, proportion_asked, vote_fractions


def counts_and_truth(catalog, schema):
    counts = np.nan_to_num(catalog[schema.label_cols].to_numpy(dtype=np.float64))
    truth = catalog[[f"{c}_true-prob" for c in schema.label_cols]].to_numpy(dtype=np.float64)
    return counts, truth


def _per_question(values_ga, weights_gq, groups):
    """Mean over each question's answers of values (galaxy, answer) -> (galaxy, question)."""
    return np.stack([values_ga[:, s:e + 1].mean(axis=1) for s, e in groups], axis=1)


def _weighted(values_gq, weights_gq):
    per_q = (values_gq * weights_gq).sum(axis=0) / weights_gq.sum(axis=0)
    pooled = (values_gq * weights_gq).sum() / weights_gq.sum()
    return per_q, float(pooled)


def _multinomial_nll(counts, probs, groups):
    out = np.zeros((counts.shape[0], len(groups)))
    for q, (s, e) in enumerate(groups):
        k, p = counts[:, s:e + 1], np.clip(probs[:, s:e + 1], 1e-12, 1)
        n = k.sum(axis=1)
        out[:, q] = -(gammaln(n + 1) - gammaln(k + 1).sum(axis=1) + (k * np.log(p)).sum(axis=1))
    return out


def _per_vote(nll_gq, votes_gq):
    per_q = nll_gq.sum(axis=0) / np.maximum(votes_gq.sum(axis=0), 1)
    return per_q, float(nll_gq.sum() / votes_gq.sum())


def _votes(counts, groups):
    return np.stack([counts[:, s:e + 1].sum(axis=1) for s, e in groups], axis=1)


def mae_and_coverage(truth, fractions, lower, upper, schema):
    groups = schema.question_index_groups
    reach = proportion_asked(truth, schema)
    mae_q, mae = _weighted(_per_question(np.abs(fractions - truth), reach, groups), reach)
    inside = ((truth >= lower) & (truth <= upper)).astype(np.float64)
    cov_q, cov = _weighted(_per_question(inside, reach, groups), reach)
    return mae_q, mae, cov_q, cov


def report(counts, truth, alpha, schema) -> dict:
    groups = schema.question_index_groups
    fractions = vote_fractions(alpha, schema)
    lower, upper = get_confidence_intervals(alpha, schema, 0.9)
    mae_q, mae, cov_q, cov = mae_and_coverage(truth, fractions, lower, upper, schema)
    votes = _votes(counts, groups)
    nll_q, nll = _per_vote(dirichlet_multinomial_nll(counts, alpha, groups), votes)
    names = [q.text for q in schema.questions]
    return {"pooled": {"mae": mae, "coverage90": cov, "dm_nll": nll},
            "per_question": {n: {"mae": float(mae_q[i]), "coverage90": float(cov_q[i]), "dm_nll": float(nll_q[i])}
                             for i, n in enumerate(names)}}


def fit_constant_dirichlet(counts, schema) -> np.ndarray:
    """One Dirichlet per question (same for every galaxy), maximum likelihood of the DM on ``counts``."""
    alpha = np.ones(counts.shape[1])
    for s, e in schema.question_index_groups:
        k = counts[:, s:e + 1]
        k = k[k.sum(axis=1) > 0]
        n = k.sum(axis=1)

        def nll(log_a):
            a = np.exp(log_a)
            value = -(gammaln(a.sum()) - gammaln(n + a.sum()) + (gammaln(k + a) - gammaln(a)).sum(axis=1)).sum()
            grad_a = -(digamma(a.sum()) - digamma(n + a.sum())[:, None] + digamma(k + a) - digamma(a)).sum(axis=0)
            return value, grad_a * a

        start = np.log(np.maximum(k.mean(axis=0) / max(n.mean(), 1) * 5, 0.05))
        alpha[s:e + 1] = np.exp(minimize(nll, start, jac=True, method="L-BFGS-B").x)
    return alpha


def train_mean_fractions(train_counts, schema) -> np.ndarray:
    """Vote fractions of the whole training set (total votes per answer / total votes per question)."""
    totals = train_counts.sum(axis=0)
    out = np.empty_like(totals)
    for s, e in schema.question_index_groups:
        out[s:e + 1] = totals[s:e + 1] / totals[s:e + 1].sum()
    return out


def baseline_report(counts, truth, constant_alpha, train_mean, schema) -> dict:
    """MAE of the training mean; coverage and DM NLL of the constant Dirichlet; multinomial NLL of the
    training mean and of the truth."""
    groups = schema.question_index_groups
    alpha = np.tile(constant_alpha, (len(counts), 1))
    mean_fractions = np.tile(train_mean, (len(counts), 1))
    lower, upper = get_confidence_intervals(alpha, schema, 0.9)
    mae_q, mae, cov_q, cov = mae_and_coverage(truth, mean_fractions, lower, upper, schema)
    votes = _votes(counts, groups)
    dm_q, dm = _per_vote(dirichlet_multinomial_nll(counts, alpha, groups), votes)
    mean_q, mean = _per_vote(_multinomial_nll(counts, mean_fractions, groups), votes)
    truth_q, truth_nll = _per_vote(_multinomial_nll(counts, truth, groups), votes)
    names = [q.text for q in schema.questions]
    return {"pooled": {"mae": mae, "coverage90": cov, "dm_nll": dm, "mean_nll": mean, "truth_nll": truth_nll},
            "per_question": {n: {"mae": float(mae_q[i]), "coverage90": float(cov_q[i]), "dm_nll": float(dm_q[i]),
                                 "mean_nll": float(mean_q[i]), "truth_nll": float(truth_q[i])}
                             for i, n in enumerate(names)}}
