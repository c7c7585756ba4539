"""The Dirichlet-multinomial loss on Galaxy Zoo vote counts, for Keras (see docs/components/training.md).

The twin of :mod:`zoobot.pytorch.estimators.losses`, in closed form with ``tf.math.lgamma`` (no TensorFlow
Probability): per galaxy and question, the negative log Dirichlet-multinomial likelihood of the votes,
multinomial coefficient included; exactly 0, value and gradient, where a question has no votes. Galaxy
loss = sum over questions; batch loss = mean over galaxies (Keras' ``'sum_over_batch_size'``, which
``tf.distribute`` scales per replica). ``zoobot.tensorflow.training.losses`` is the documented import path
of the same functions.

Examples
--------
>>> import numpy as np
>>> loss_func = get_multiquestion_loss([(0, 1), (2, 4)])
>>> round(float(loss_func(np.array([[3., 1., 0., 0., 0.]], 'float32'), np.full((1, 5), 2.0, 'float32'))), 4)
1.4759
"""
from __future__ import annotations

import warnings

import keras
import tensorflow as tf

from zoobot.shared.errors import unknown_option_error
from zoobot.shared.zoobot_tree_args import answer_to_question_index, validate_question_index_groups
from zoobot.shared.validation import check_bool

__all__ = [
    "MultiquestionLoss",
    "get_multiquestion_loss",
    "calculate_multiquestion_loss",
    "single_question_dirichlet_loss",
    "per_question_dirichlet_loss",
    "get_dirichlet_loss_func",
    "get_dirichlet_neg_log_prob",
    "vote_fraction_nll",
    "VoteFractionLoss",
    "validate_question_index_groups",
]

#: Accepted ``reduction`` values; ``'mean'`` (the PyTorch spelling) means ``'sum_over_batch_size'``.
REDUCTIONS = ("sum_over_batch_size", "sum", "none", "mean")


def get_dirichlet_neg_log_prob(labels_for_q, total_count, concentrations_for_q):
    """Negative log Dirichlet-multinomial probability of one question's votes (no zero-vote masking).

    Parameters
    ----------
    labels_for_q : tensor (B, n_answers_q)
        Vote counts of the question's answers.
    total_count : tensor (B,)
        ``N_q``, the question's total votes (``reduce_sum(labels_for_q, axis=1)``).
    concentrations_for_q : tensor (B, n_answers_q)
        Predicted Dirichlet concentrations (> 0).

    Returns
    -------
    tf.Tensor (B,)
        The negative log likelihood including the multinomial coefficient. Use
        :func:`single_question_dirichlet_loss` for an exact zero (and zero gradient) where ``N_q == 0``.

    Examples
    --------
    >>> nll = get_dirichlet_neg_log_prob([[1., 0.]], [1.], [[1., 1.]])
    >>> round(float(nll[0]), 4)   # one vote, flat Dirichlet: p = 1/2
    0.6931
    """
    concentrations_for_q = tf.convert_to_tensor(concentrations_for_q)
    dtype = concentrations_for_q.dtype if concentrations_for_q.dtype.is_floating else tf.float32
    concentrations_for_q = tf.cast(concentrations_for_q, dtype)
    labels_for_q = tf.cast(labels_for_q, dtype)
    total_count = tf.cast(total_count, dtype)
    total_concentration = tf.reduce_sum(concentrations_for_q, axis=1)
    log_prob = (
        tf.math.lgamma(total_count + 1.0)
        - tf.reduce_sum(tf.math.lgamma(labels_for_q + 1.0), axis=1)
        + tf.math.lgamma(total_concentration)
        - tf.math.lgamma(total_count + total_concentration)
        + tf.reduce_sum(tf.math.lgamma(labels_for_q + concentrations_for_q) - tf.math.lgamma(concentrations_for_q), axis=1)
    )
    return -log_prob


def single_question_dirichlet_loss(labels_for_q, concentrations_for_q):
    """Dirichlet-multinomial loss of one question, exactly 0 (value and gradient) where it has no votes.

    Parameters
    ----------
    labels_for_q : tensor (B, n_answers_q)
        Vote counts (int or float).
    concentrations_for_q : tensor (B, n_answers_q)
        Predicted concentrations.

    Returns
    -------
    tf.Tensor (B,)

    Examples
    --------
    >>> float(single_question_dirichlet_loss([[0., 0., 0.]], [[5., 5., 5.]])[0])
    0.0
    """
    concentrations_for_q = tf.convert_to_tensor(concentrations_for_q)
    dtype = concentrations_for_q.dtype if concentrations_for_q.dtype.is_floating else tf.float32
    concentrations_for_q = tf.cast(concentrations_for_q, dtype)
    labels_for_q = tf.cast(labels_for_q, dtype)
    total_count = tf.reduce_sum(labels_for_q, axis=1)
    nll = get_dirichlet_neg_log_prob(labels_for_q, total_count, concentrations_for_q)
    # where() sends no gradient into the unselected branch; its terms are finite for alpha > 0
    return tf.where(total_count > 0, nll, tf.zeros_like(nll))



def _check_widths(labels, predictions, width: int) -> None:
    """E10: static width checks (run while tracing; shapes are static in Keras models)."""
    if labels.shape.rank is not None and labels.shape.rank != 2 or predictions.shape.rank is not None and (
        predictions.shape.rank != 2
    ):
        raise ValueError(
            f"labels and predictions must be 2-D (batch, answers); got shapes {tuple(labels.shape)} and "
            f"{tuple(predictions.shape)}"
        )
    for what, tensor in (("labels", labels), ("predictions", predictions)):
        got = tensor.shape[-1]
        if got is not None and got != width:
            raise ValueError(
                f"{what} have {got} answer columns but question_index_groups expect {width} "
                f"(last group ends at column {width - 1}). Check that the label columns / model output_dim "
                "match the schema."
            )
    if labels.shape[0] is not None and predictions.shape[0] is not None and labels.shape[0] != predictions.shape[0]:
        raise ValueError(
            f"labels have {labels.shape[0]} rows but predictions have {predictions.shape[0]}; they must be the same batch"
        )


def _multiquestion_nll(labels, predictions, columns, owners, n_questions):
    """(B, n_questions) loss, vectorised over questions with a segment sum along the answer axis."""
    predictions = tf.convert_to_tensor(predictions)
    if not predictions.dtype.is_floating:
        predictions = tf.cast(predictions, tf.float32)
    labels = tf.cast(labels, predictions.dtype)
    width = predictions.shape[-1]
    if width is None or columns != list(range(width)):
        labels = tf.gather(labels, columns, axis=1)
        predictions = tf.gather(predictions, columns, axis=1)
    owners_t = tf.constant(owners, dtype=tf.int32)

    def per_question(values):  # (B, answers) -> (B, questions)
        return tf.transpose(tf.math.unsorted_segment_sum(tf.transpose(values), owners_t, n_questions))

    answer_terms = tf.math.lgamma(labels + predictions) - tf.math.lgamma(predictions) - tf.math.lgamma(labels + 1.0)
    total_count = per_question(labels)
    total_concentration = per_question(predictions)
    log_prob = (
        tf.math.lgamma(total_count + 1.0)
        + tf.math.lgamma(total_concentration)
        - tf.math.lgamma(total_count + total_concentration)
        + per_question(answer_terms)
    )
    nll = -log_prob
    return tf.where(total_count > 0, nll, tf.zeros_like(nll))


def _fraction_nll(labels, predictions, columns, owners, n_questions):
    """(B, n_questions) multinomial NLL of the votes under the mean fractions ``alpha / sum(alpha)``."""
    predictions = tf.convert_to_tensor(predictions)
    if not predictions.dtype.is_floating:
        predictions = tf.cast(predictions, tf.float32)
    labels = tf.gather(tf.cast(labels, predictions.dtype), columns, axis=1)
    predictions = tf.gather(predictions, columns, axis=1)
    owners_t = tf.constant(owners, dtype=tf.int32)

    def per_question(values):  # (B, answers) -> (B, questions)
        return tf.transpose(tf.math.unsorted_segment_sum(tf.transpose(values), owners_t, n_questions))

    total_count = per_question(labels)
    log_fractions = tf.math.log(predictions) - tf.gather(tf.math.log(per_question(predictions)), owners_t, axis=1)
    log_prob = (tf.math.lgamma(total_count + 1.0) - per_question(tf.math.lgamma(labels + 1.0))
                + per_question(labels * log_fractions))
    return -log_prob


def vote_fraction_nll(labels, predictions, question_index_groups):
    """Per-galaxy, per-question multinomial NLL of the votes under the predicted vote fractions.

    The fractions are the Dirichlet means ``alpha_a / sum(alpha)`` of each question, so the loss depends on
    the vote fractions only, never on the total concentration. ``train()`` adds it to the
    Dirichlet-multinomial loss (weight ``model.fraction_loss_weight``): for a question the network is unsure
    of, the Dirichlet-multinomial likelihood asks for a small total concentration, and then barely depends on
    the fractions; this term keeps teaching them (docs/guides/training_recipe.md).

    Parameters
    ----------
    labels : tensor (B, n_answers)
        Vote counts, columns in schema ``label_cols`` order.
    predictions : tensor (B, n_answers)
        Predicted concentrations (> 0).
    question_index_groups : sequence of (int, int)
        Inclusive answer index range of each question.

    Returns
    -------
    tf.Tensor
        (B, n_questions), multinomial coefficient included (``scipy.stats.multinomial.logpmf``); 0 where a
        question has no votes.

    Raises
    ------
    ValueError
        (E10) if the widths of labels/predictions do not match the groups.

    Examples
    --------
    >>> import numpy as np
    >>> nll = vote_fraction_nll(np.array([[3., 1.]]), np.array([[6., 2.]]), [(0, 1)])
    >>> round(float(nll[0, 0]), 4)  # -log(4 * 0.75**3 * 0.25)
    0.863
    """
    groups = validate_question_index_groups(question_index_groups)
    columns, owners = answer_to_question_index(groups)
    predictions = tf.convert_to_tensor(predictions)
    labels = tf.convert_to_tensor(labels)
    _check_widths(labels, predictions, groups[-1][1] + 1)
    return _fraction_nll(labels, predictions, columns, owners, len(groups))


@keras.saving.register_keras_serializable(package="zoobot")
class VoteFractionLoss(keras.losses.Loss):
    """:func:`vote_fraction_nll` summed over questions, a Keras loss (mean over galaxies; scaled like any
    Keras loss under ``tf.distribute``). ``ZoobotTree.compute_loss`` adds it while training when
    ``fraction_loss_weight`` is set.

    Parameters
    ----------
    question_index_groups : sequence of (int, int)
        Inclusive answer index range of each question (``schema.question_index_groups``).
    name : str
        Name of the loss.
    """

    def __init__(self, question_index_groups, name="vote_fraction_loss", dtype=None):
        super().__init__(name=name, reduction="sum_over_batch_size", dtype=dtype)
        self.question_index_groups = validate_question_index_groups(question_index_groups)
        self.n_questions = len(self.question_index_groups)
        self.n_answers = self.question_index_groups[-1][1] + 1
        self._columns, self._owners = answer_to_question_index(self.question_index_groups)

    def call(self, y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = tf.convert_to_tensor(y_true)
        _check_widths(y_true, y_pred, self.n_answers)
        return tf.reduce_sum(_fraction_nll(y_true, y_pred, self._columns, self._owners, self.n_questions), axis=1)

    def get_config(self):
        config = super().get_config()
        config.update(question_index_groups=[list(group) for group in self.question_index_groups])
        config.pop("reduction", None)
        return config


def calculate_multiquestion_loss(labels, predictions, question_index_groups, careful=False, *,
                                 sum_over_questions=False):
    """Per-galaxy Dirichlet-multinomial loss of every question.

    Parameters
    ----------
    labels : tensor (B, n_answers)
        Vote counts (int or float), columns in schema ``label_cols`` order.
    predictions : tensor (B, n_answers)
        Predicted concentrations.
    question_index_groups : sequence of (int, int)
        Inclusive answer index range of each question.
    careful : bool, default False
        Accepted for upstream compatibility (the same position as in the PyTorch twin) and ignored
        with a warning: non-finite predictions stop training with an error instead.
    sum_over_questions : bool, default False
        True: return one loss per galaxy (sum over questions).

    Returns
    -------
    tf.Tensor
        (B, n_questions), 0 exactly where a question has no votes; (B,) if ``sum_over_questions``.

    Raises
    ------
    ValueError
        (E10) if the widths of labels/predictions do not match the groups.

    Examples
    --------
    >>> import numpy as np
    >>> calculate_multiquestion_loss(np.zeros((2, 3)), np.ones((2, 3)), [(0, 1), (2, 2)]).shape
    TensorShape([2, 2])
    """
    if careful:
        warnings.warn(
            "careful=True is accepted for upstream compatibility but ignored: zoobot does not replace NaN losses "
            "(non-finite predictions stop training with an error instead).",
            UserWarning,
            stacklevel=2,
        )
    groups = validate_question_index_groups(question_index_groups)
    columns, owners = answer_to_question_index(groups)
    predictions = tf.convert_to_tensor(predictions)
    labels = tf.convert_to_tensor(labels)
    _check_widths(labels, predictions, groups[-1][1] + 1)
    loss = _multiquestion_nll(labels, predictions, columns, owners, len(groups))
    if sum_over_questions:
        loss = tf.reduce_sum(loss, axis=1)
    return loss


@keras.saving.register_keras_serializable(package="zoobot")
class MultiquestionLoss(keras.losses.Loss):
    """Sum of per-question Dirichlet-multinomial losses. Build it with :func:`get_multiquestion_loss`.

    Call as ``loss(y_true, y_pred)``: ``y_true`` (B, n_answers) vote counts, ``y_pred`` (B, n_answers)
    concentrations. Serialisable (``get_config``), so compiled models save to ``.keras``.

    Parameters
    ----------
    question_index_groups : sequence of (int, int)
        Inclusive answer index range of each question (``schema.question_index_groups``).
    sum_over_questions : bool
        Only matters with ``reduction='none'``: True gives (B,) (one loss per galaxy), False keeps
        the question axis, (B, n_questions). Reduced losses always sum over questions first.
    reduction : {'sum_over_batch_size', 'sum', 'none'}
        Over galaxies: mean (Keras' name; ``'mean'`` is accepted too), sum, or none.
    name : str
        Name of the loss (Keras logs it as ``loss``).
    """

    def __init__(self, question_index_groups, sum_over_questions=True, reduction="sum_over_batch_size",
                 name="multiquestion_loss", dtype=None):
        if reduction not in REDUCTIONS:
            raise unknown_option_error("reduction", reduction, REDUCTIONS)
        sum_over_questions = check_bool("sum_over_questions", sum_over_questions)
        keras_reduction = "sum_over_batch_size" if reduction == "mean" else reduction
        super().__init__(name=name, reduction=keras_reduction, dtype=dtype)
        self.question_index_groups = validate_question_index_groups(question_index_groups)
        self.sum_over_questions = sum_over_questions
        self.n_questions = len(self.question_index_groups)
        self.n_answers = self.question_index_groups[-1][1] + 1
        self._columns, self._owners = answer_to_question_index(self.question_index_groups)

    def call(self, y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = tf.convert_to_tensor(y_true)
        _check_widths(y_true, y_pred, self.n_answers)
        loss = _multiquestion_nll(y_true, y_pred, self._columns, self._owners, self.n_questions)
        if self.reduction != "none" or self.sum_over_questions:
            loss = tf.reduce_sum(loss, axis=1)
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(
            question_index_groups=[list(group) for group in self.question_index_groups],
            sum_over_questions=self.sum_over_questions,
        )
        return config

    def __repr__(self):
        return (f"MultiquestionLoss(n_questions={self.n_questions}, n_answers={self.n_answers}, "
                f"sum_over_questions={self.sum_over_questions}, reduction={self.reduction!r})")


def get_multiquestion_loss(question_index_groups, sum_over_questions=True, reduction="sum_over_batch_size"):
    """Build the multi-question Dirichlet-multinomial loss.

    Parameters
    ----------
    question_index_groups : sequence of (int, int)
        ``schema.question_index_groups``: inclusive (first, last) answer column of each question.
    sum_over_questions : bool, default True
        With ``reduction='none'``: sum the per-question losses of each galaxy (False keeps a
        question axis).
    reduction : {'sum_over_batch_size', 'sum', 'none'}, default 'sum_over_batch_size'
        Reduction over galaxies: the mean (``'mean'`` accepted as a synonym), the sum, or none.

    Returns
    -------
    MultiquestionLoss
        A ``keras.losses.Loss``; pass it to ``model.compile(loss=...)`` or call
        ``loss(labels, predictions)``.

    Raises
    ------
    TypeError, ValueError
        If the groups are malformed or the reduction unknown (E13), checked here; (E10) widths
        that disagree are reported at call time.

    Examples
    --------
    >>> from zoobot.shared import schemas
    >>> loss = get_multiquestion_loss(schemas.decals_dr5_ortho_schema.question_index_groups)
    >>> loss.n_questions
    10
    """
    return MultiquestionLoss(question_index_groups, sum_over_questions=sum_over_questions, reduction=reduction)


def per_question_dirichlet_loss(preds, labels, question_index_groups, sum_over_questions: bool = False):
    """Loss per galaxy and question, not reduced over the batch; predictions first (the upstream v2 order).

    :func:`calculate_multiquestion_loss` with the first two arguments swapped.

    Parameters
    ----------
    preds : tensor (B, n_answers)
        Predicted concentrations.
    labels : tensor (B, n_answers)
        Vote counts.
    question_index_groups : sequence of (int, int)
        Inclusive answer index range per question.
    sum_over_questions : bool, default False
        Sum over questions, giving (B,).

    Returns
    -------
    tf.Tensor (B, n_questions) or (B,)

    Examples
    --------
    >>> import numpy as np
    >>> per_question_dirichlet_loss(np.ones((2, 3), 'float32'), np.zeros((2, 3), 'float32'), [(0, 2)],
    ...                             sum_over_questions=True).numpy()
    array([0., 0.], dtype=float32)
    """
    return calculate_multiquestion_loss(labels, preds, question_index_groups, sum_over_questions=sum_over_questions)


def get_dirichlet_loss_func(question_index_groups):
    """:func:`per_question_dirichlet_loss` with the groups bound: ``loss_func(preds, labels) -> (B, n_questions)``.

    Picklable (a ``functools.partial``).

    Examples
    --------
    >>> get_dirichlet_loss_func([(0, 1)]).keywords['question_index_groups']
    [(0, 1)]
    """
    import functools

    groups = validate_question_index_groups(question_index_groups)
    return functools.partial(per_question_dirichlet_loss, question_index_groups=groups)
