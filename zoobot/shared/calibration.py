"""Post-hoc calibration of Dirichlet concentrations: one scale per question (framework-free).

A Zoobot tree model predicts Dirichlet concentrations ``alpha`` per answer. Their ratios give the vote
fractions; their sum ``A_q`` per question says how sure the model is. Trained briefly on few galaxies, a
network tends to be overconfident (``A_q`` too large: intervals too narrow). Multiplying every
concentration of question ``q`` by one positive scale ``s_q`` keeps the vote fractions exactly and widens
(``s_q < 1``) or narrows (``s_q > 1``) the intervals. ``s_q`` is fitted by maximum likelihood of the
Dirichlet-multinomial on held-out volunteer votes (the validation set), which needs no true probabilities.

``train()`` (both backends) and tree finetuning fit it on the validation votes after training and store it
in the checkpoint (PyTorch key ``zoobot_calibration``; Keras: the model's ``zoobot_calibration``
metadata); ``predict(..., calibrate=True)`` applies it. See docs/guides/training_recipe.md.

Examples
--------
>>> import numpy as np
>>> from zoobot.shared.calibration import apply_concentration_scale
>>> apply_concentration_scale(np.array([[2.0, 6.0, 1.0, 1.0]]), [0.5, 3.0], [(0, 1), (2, 3)])
array([[1., 3., 3., 3.]])
"""
from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import gammaln

from zoobot.shared.losses_reference import check_question_index_groups

__all__ = ["fit_concentration_scale", "apply_concentration_scale", "calibration_record", "scale_from_record",
           "fit_record", "fit_record_from_batches", "model_scale", "scaled_rows", "CHECKPOINT_KEY", "SCALE_BOUNDS"]

logger = logging.getLogger(__name__)

#: Key of the calibration record in a checkpoint (PyTorch dict key; Keras metadata name).
CHECKPOINT_KEY = "zoobot_calibration"
#: Smallest and largest scale the fit may return.
SCALE_BOUNDS = (1e-3, 1e3)


def _groups(schema_or_groups, n_answers: int) -> list[tuple[int, int]]:
    groups = getattr(schema_or_groups, "question_index_groups", schema_or_groups)
    return check_question_index_groups(groups, n_answers)


def _question_nll(log_scale: float, k: np.ndarray, alpha: np.ndarray) -> float:
    """Summed Dirichlet-multinomial NLL of counts ``k`` (rows with votes) under ``exp(log_scale) * alpha``
    (the multinomial coefficient, constant in the scale, left out)."""
    a = np.exp(log_scale) * alpha
    total = a.sum(axis=1)
    n = k.sum(axis=1)
    log_likelihood = gammaln(total) - gammaln(n + total) + (gammaln(k + a) - gammaln(a)).sum(axis=1)
    return -float(log_likelihood.sum())


def fit_concentration_scale(counts, concentrations, schema, bounds: tuple = SCALE_BOUNDS) -> np.ndarray:
    """Maximum-likelihood scale of each question's concentrations, given observed votes.

    For question ``q``, ``s_q`` maximises ``sum_g log DM(k_g | s_q * alpha_g)`` over the galaxies ``g`` whose
    question got votes (a bounded one-dimensional search in ``log s``).

    Parameters
    ----------
    counts : array-like, (galaxy, answer)
        Volunteer vote counts (e.g. the validation catalog's ``schema.label_cols``). NaN counts as 0.
    concentrations : array-like, (galaxy, answer) or (galaxy, answer, sample)
        Predicted concentrations of the same galaxies (raw, i.e. uncalibrated). Samples (MC dropout) are
        averaged first.
    schema : Schema or sequence of (start, end)
        The decision tree (``schema.question_index_groups``).
    bounds : (float, float)
        Smallest and largest scale allowed.

    Returns
    -------
    numpy.ndarray
        (question,) float64 scales; 1.0 for a question no galaxy has votes for.

    Raises
    ------
    ValueError
        Shapes differ; groups do not fit (E10); non-positive or non-finite concentrations; bad bounds.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> alpha = np.tile([4.0, 12.0], (4000, 1))        # the model claims a total concentration of 16
    >>> p = rng.dirichlet([1.0, 3.0], size=4000)       # but the votes follow one of 4: scale 0.25
    >>> yes = rng.binomial(40, p[:, 0])
    >>> scale = fit_concentration_scale(np.stack([yes, 40 - yes], axis=1), alpha, [(0, 1)])
    >>> bool(0.2 < scale[0] < 0.3)
    True
    """
    counts = np.nan_to_num(np.asarray(counts, dtype=np.float64))
    alpha = np.asarray(concentrations, dtype=np.float64)
    if alpha.ndim == 3:
        alpha = alpha.mean(axis=2)
    if counts.shape != alpha.shape or counts.ndim != 2:
        raise ValueError(f"counts and concentrations must both be (galaxy, answer); got {counts.shape} and "
                         f"{alpha.shape}")
    if not np.all(np.isfinite(alpha)) or np.any(alpha <= 0):
        raise ValueError("concentrations must be finite and > 0 (drop rows whose image failed to load first)")
    low, high = (float(b) for b in bounds)
    if not 0 < low < high:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds!r}")
    groups = _groups(schema, counts.shape[1])
    scales = np.ones(len(groups), dtype=np.float64)
    for q, (start, end) in enumerate(groups):
        k, a = counts[:, start:end + 1], alpha[:, start:end + 1]
        voted = k.sum(axis=1) > 0
        if not voted.any() or end == start:
            continue
        result = minimize_scalar(_question_nll, bounds=(np.log(low), np.log(high)), method="bounded",
                                 args=(k[voted], a[voted]), options={"xatol": 1e-4})
        scales[q] = float(np.exp(result.x))
    return scales


def apply_concentration_scale(concentrations, scale, schema) -> np.ndarray:
    """Multiply each question's concentrations by its scale (vote fractions unchanged).

    Parameters
    ----------
    concentrations : array-like, (galaxy, answer) or (galaxy, answer, sample)
    scale : array-like, (question,)
        From :func:`fit_concentration_scale`.
    schema : Schema or sequence of (start, end)

    Returns
    -------
    numpy.ndarray
        The same shape and dtype (float arrays) as ``concentrations``.

    Raises
    ------
    ValueError
        ``scale`` has the wrong length or non-positive values; groups do not fit (E10).
    """
    alpha = np.asarray(concentrations)
    if not np.issubdtype(alpha.dtype, np.floating):
        alpha = alpha.astype(np.float64)
    groups = _groups(schema, alpha.shape[1])
    per_answer = _per_answer_scale(scale, groups, alpha.shape[1]).astype(alpha.dtype)
    shape = (1, -1) + (1,) * (alpha.ndim - 2)
    return alpha * per_answer.reshape(shape)


def _per_answer_scale(scale, groups, n_answers: int) -> np.ndarray:
    scale = np.asarray(scale, dtype=np.float64).ravel()
    if len(scale) != len(groups):
        raise ValueError(f"scale has {len(scale)} values but the schema has {len(groups)} questions.")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(f"every scale must be finite and > 0, got {scale.tolist()}")
    out = np.ones(n_answers, dtype=np.float64)
    for s, (start, end) in zip(scale, groups):
        out[start:end + 1] = s
    return out


def calibration_record(scale, question_names, n_galaxies: int, fitted_on: str = "validation votes") -> dict:
    """The JSON-friendly record stored in checkpoints under :data:`CHECKPOINT_KEY`.

    Parameters
    ----------
    scale : array-like, (question,)
    question_names : sequence of str
        The model's questions, in order (``schema.questions``' texts).
    n_galaxies : int
        Galaxies the scale was fitted on.
    fitted_on : str
        What the votes were.

    Examples
    --------
    >>> calibration_record([0.5], ['smooth-or-featured'], n_galaxies=10)['concentration_scale']
    {'smooth-or-featured': 0.5}
    """
    names = [str(n) for n in question_names]
    scale = [float(v) for v in np.asarray(scale, dtype=np.float64).ravel()]
    if len(scale) != len(names):
        raise ValueError(f"scale has {len(scale)} values but the model has {len(names)} questions.")
    return {"concentration_scale": dict(zip(names, scale)), "fitted_on": fitted_on, "n_galaxies": int(n_galaxies),
            "method": "per-question maximum likelihood of the Dirichlet-multinomial"}


def scale_from_record(record, question_names) -> np.ndarray | None:
    """The (question,) scales of a stored record, in the model's question order (None if no record).

    Raises
    ------
    ValueError
        The record names other questions than the model (it belongs to another tree).

    Examples
    --------
    >>> scale_from_record({'concentration_scale': {'b': 2.0, 'a': 0.5}}, ['a', 'b'])
    array([0.5, 2. ])
    """
    if not record:
        return None
    stored = record["concentration_scale"]
    names = [str(n) for n in question_names]
    if sorted(stored) != sorted(names):
        raise ValueError(f"The calibration record covers questions {sorted(stored)}, not the model's "
                         f"{sorted(names)}; refit it with zoobot.shared.calibration.fit_concentration_scale.")
    return np.array([float(stored[name]) for name in names], dtype=np.float64)


def fit_record(counts, concentrations, question_names, question_index_groups, save_dir=None) -> dict:
    """Fit the scales (:func:`fit_concentration_scale`) and return their checkpoint record; with
    ``save_dir``, also write it to ``save_dir/calibration.json`` and log one line (the report)."""
    scale = fit_concentration_scale(counts, concentrations, question_index_groups)
    record = calibration_record(scale, question_names, n_galaxies=len(np.asarray(counts)))
    if save_dir is not None:
        import json
        from pathlib import Path

        path = Path(save_dir) / "calibration.json"
        path.write_text(json.dumps(record, indent=2))
        logger.info(
            "Calibration: concentration scale per question fitted on %d validation galaxies (median %.3f, "
            "range %.3f-%.3f), written to %s", record["n_galaxies"], float(np.median(scale)), float(scale.min()),
            float(scale.max()), path)
    return record


def fit_record_from_batches(batches, question_names, question_index_groups) -> dict | None:
    """:func:`fit_record` of ``(concentrations, counts)`` batches, e.g. one validation epoch of a finetuned tree.

    Parameters
    ----------
    batches : iterable of (array-like, array-like)
        Per batch: concentrations (galaxy, answer) and vote counts (galaxy, answer), any array type
        ``numpy.asarray`` reads (framework tensors on the CPU included).
    question_names, question_index_groups
        As in :func:`fit_record`.

    Returns
    -------
    dict or None
        The checkpoint record; None when there were no galaxies (nothing to fit on).

    Examples
    --------
    >>> record = fit_record_from_batches([(np.full((4, 2), 5.0), np.array([[3, 0], [0, 3], [3, 0], [0, 3]]))],
    ...                                  ['ring'], [(0, 1)])
    >>> record['n_galaxies'], round(record['concentration_scale']['ring'], 2) < 1  # votes are surer than 50/50 says
    (4, True)
    """
    alphas, counts = [], []
    for alpha, count in batches:
        alphas.append(np.asarray(alpha, dtype=np.float64))
        counts.append(np.asarray(count, dtype=np.float64))
    if not alphas or sum(len(a) for a in alphas) == 0:
        return None
    return fit_record(np.concatenate(counts), np.concatenate(alphas), question_names, question_index_groups)


def model_scale(model, calibrate) -> np.ndarray | None:
    """The scale ``predict`` applies to ``model``'s concentrations: its ``concentration_scale`` attribute
    (set by ``train()``, tree finetuning or a loaded calibrated checkpoint) when ``calibrate`` is True.

    Raises
    ------
    ValueError
        ``calibrate`` is not True or False.
    """
    if not isinstance(calibrate, bool):
        raise ValueError(f"calibrate must be True or False, got {calibrate!r}")
    scale = getattr(model, "concentration_scale", None)
    if not calibrate or scale is None:
        return None
    return np.asarray(scale, dtype=np.float64)


def scaled_rows(predict_rows, scale, schema):
    """Wrap a prediction runner's ``predict_rows`` so that every batch of concentrations
    (``(positions, predictions, failures)``) comes out calibrated; unchanged when ``scale`` is None."""
    if scale is None:
        return predict_rows

    def calibrated(rows):
        for positions, predictions, failures in predict_rows(rows):
            yield positions, apply_concentration_scale(predictions, scale, schema), failures

    return calibrated
