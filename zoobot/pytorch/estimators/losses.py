"""The Dirichlet-multinomial loss on Galaxy Zoo vote counts (PyTorch; see docs/components/training.md).

Per galaxy and question, the negative log Dirichlet-multinomial likelihood of the votes given the predicted
concentrations, multinomial coefficient included (it matches the float64 oracle
:func:`zoobot.shared.losses_reference.dirichlet_multinomial_nll`); exactly 0, value and gradient, where a
question has no votes. Galaxy loss = sum over questions; batch loss = mean over galaxies. All questions
are computed at once with one ``index_add`` along the answer axis. ``zoobot.pytorch.training.losses`` is
the documented import path of the same functions.

Examples
--------
>>> import torch
>>> loss_func = get_multiquestion_loss([(0, 1), (2, 4)])
>>> round(float(loss_func(torch.tensor([[3., 1., 0., 0., 0.]]), torch.full((1, 5), 2.0))), 4)
1.4759
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import nn

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
    "validate_question_index_groups",
]

_REDUCTIONS = ("mean", "sum", "none")


def get_dirichlet_neg_log_prob(labels_for_q: torch.Tensor, total_count: torch.Tensor,
                               concentrations_for_q: torch.Tensor) -> torch.Tensor:
    """Negative log Dirichlet-multinomial probability of one question's votes (no zero-vote masking).

    Parameters
    ----------
    labels_for_q : Tensor (B, n_answers_q)
        Vote counts of the question's answers.
    total_count : Tensor (B,)
        ``N_q``, the total votes of the question (``labels_for_q.sum(1)``).
    concentrations_for_q : Tensor (B, n_answers_q)
        Predicted Dirichlet concentrations (> 0).

    Returns
    -------
    Tensor (B,)
        The negative log likelihood including the multinomial coefficient (0 where ``N_q == 0``
        up to rounding, but use :func:`single_question_dirichlet_loss` for an exact zero and zero gradient).

    Examples
    --------
    >>> import torch
    >>> nll = get_dirichlet_neg_log_prob(torch.tensor([[1., 0.]]), torch.tensor([1.]), torch.tensor([[1., 1.]]))
    >>> round(float(nll), 4)  # one vote, flat Dirichlet: p = 1/2
    0.6931
    """
    labels_for_q = labels_for_q.to(concentrations_for_q.dtype)
    total_count = total_count.to(concentrations_for_q.dtype)
    total_concentration = concentrations_for_q.sum(dim=1)
    log_prob = (
        torch.lgamma(total_count + 1)
        - torch.lgamma(labels_for_q + 1).sum(dim=1)
        + torch.lgamma(total_concentration)
        - torch.lgamma(total_count + total_concentration)
        + (torch.lgamma(labels_for_q + concentrations_for_q) - torch.lgamma(concentrations_for_q)).sum(dim=1)
    )
    return -log_prob


def single_question_dirichlet_loss(labels_for_q: torch.Tensor, concentrations_for_q: torch.Tensor) -> torch.Tensor:
    """Dirichlet-multinomial loss of one question, exactly 0 (value and gradient) where it has no votes.

    Parameters
    ----------
    labels_for_q : Tensor (B, n_answers_q)
        Vote counts (int or float).
    concentrations_for_q : Tensor (B, n_answers_q)
        Predicted concentrations.

    Returns
    -------
    Tensor (B,)

    Examples
    --------
    >>> import torch
    >>> single_question_dirichlet_loss(torch.zeros(1, 3), torch.full((1, 3), 5.0))
    tensor([0.])
    """
    labels_for_q = labels_for_q.to(concentrations_for_q.dtype)
    total_count = labels_for_q.sum(dim=1)
    nll = get_dirichlet_neg_log_prob(labels_for_q, total_count, concentrations_for_q)
    # where() sends no gradient into the unselected branch; its terms are finite for alpha > 0
    return torch.where(total_count > 0, nll, torch.zeros_like(nll))


def _answer_to_question_index(groups: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Answer columns used by the groups, and the question each belongs to (as index tensors)."""
    columns, owners = answer_to_question_index(groups)
    return torch.tensor(columns, dtype=torch.long), torch.tensor(owners, dtype=torch.long)


def _check_widths(labels: torch.Tensor, predictions: torch.Tensor, width: int) -> None:
    if labels.ndim != 2 or predictions.ndim != 2:
        raise ValueError(
            f"labels and predictions must be 2-D (batch, answers); got shapes {tuple(labels.shape)} and "
            f"{tuple(predictions.shape)}"
        )
    for what, tensor in (("labels", labels), ("predictions", predictions)):
        if tensor.shape[1] != width:
            raise ValueError(
                f"{what} have {tensor.shape[1]} answer columns but question_index_groups expect {width} "
                f"(last group ends at column {width - 1}). Check that the label columns / model output_dim "
                "match the schema."
            )
    if labels.shape[0] != predictions.shape[0]:
        raise ValueError(
            f"labels have {labels.shape[0]} rows but predictions have {predictions.shape[0]}; they must be the same batch"
        )


def _multiquestion_nll(labels, predictions, columns, owners, n_questions) -> torch.Tensor:
    """(B, n_questions) loss, vectorised over questions with index_add on the answer axis."""
    if predictions.dtype in (torch.float16, torch.bfloat16):
        predictions = predictions.float()  # lgamma of vote totals needs float32 range and precision (mixed precision)
    dtype = predictions.dtype
    labels = labels.to(dtype)
    if columns.numel() != predictions.shape[1] or not bool(
        (columns == torch.arange(predictions.shape[1], device=columns.device)).all()
    ):
        labels = labels.index_select(1, columns)
        predictions = predictions.index_select(1, columns)
    batch = predictions.shape[0]

    def per_question(values):  # (B, answers) -> (B, questions)
        return torch.zeros(batch, n_questions, dtype=values.dtype, device=values.device).index_add_(1, owners, values)

    answer_terms = torch.lgamma(labels + predictions) - torch.lgamma(predictions) - torch.lgamma(labels + 1)
    total_count = per_question(labels)
    total_concentration = per_question(predictions)
    log_prob = (
        torch.lgamma(total_count + 1)
        + torch.lgamma(total_concentration)
        - torch.lgamma(total_count + total_concentration)
        + per_question(answer_terms)
    )
    nll = -log_prob
    return torch.where(total_count > 0, nll, torch.zeros_like(nll))


def _fraction_nll(labels, predictions, columns, owners, n_questions) -> torch.Tensor:
    """(B, n_questions) multinomial NLL of the votes under the mean fractions ``alpha / sum(alpha)``."""
    predictions = predictions.float() if predictions.dtype in (torch.float16, torch.bfloat16) else predictions
    labels = labels.to(predictions.dtype).index_select(1, columns)
    predictions = predictions.index_select(1, columns)
    batch = predictions.shape[0]

    def per_question(values):  # (B, answers) -> (B, questions)
        return torch.zeros(batch, n_questions, dtype=values.dtype, device=values.device).index_add_(1, owners, values)

    total_count = per_question(labels)
    log_fractions = torch.log(predictions) - torch.log(per_question(predictions)).index_select(1, owners)
    log_prob = (torch.lgamma(total_count + 1) - per_question(torch.lgamma(labels + 1))
                + per_question(labels * log_fractions))
    return -log_prob


def vote_fraction_nll(labels: torch.Tensor, predictions: torch.Tensor, question_index_groups) -> torch.Tensor:
    """Per-galaxy, per-question multinomial NLL of the votes under the predicted vote fractions.

    The fractions are the Dirichlet means ``alpha_a / sum(alpha)`` of each question, so the loss depends on
    the vote fractions only, never on the total concentration. ``train()`` adds it to the
    Dirichlet-multinomial loss (weight ``model.fraction_loss_weight``): for a question the network is unsure
    of, the Dirichlet-multinomial likelihood asks for a small total concentration, and then barely depends on
    the fractions; this term keeps teaching them (docs/guides/training_recipe.md).

    Parameters
    ----------
    labels : Tensor (B, n_answers)
        Vote counts, columns in schema ``label_cols`` order.
    predictions : Tensor (B, n_answers)
        Predicted concentrations (> 0).
    question_index_groups : sequence of (int, int)
        Inclusive answer index range of each question.

    Returns
    -------
    Tensor (B, n_questions)
        Multinomial coefficient included (``scipy.stats.multinomial.logpmf``); 0 where a question has no votes.

    Raises
    ------
    ValueError
        (E10) if the widths of labels/predictions do not match the groups.

    Examples
    --------
    >>> import torch
    >>> nll = vote_fraction_nll(torch.tensor([[3., 1.]]), torch.tensor([[6., 2.]]), [(0, 1)])
    >>> round(float(nll), 4)  # -log(4 * 0.75**3 * 0.25)
    0.863
    """
    groups = validate_question_index_groups(question_index_groups)
    columns, owners = _answer_to_question_index(groups)
    _check_widths(labels, predictions, groups[-1][1] + 1)
    return _fraction_nll(labels, predictions, columns.to(predictions.device), owners.to(predictions.device),
                         len(groups))


def calculate_multiquestion_loss(labels: torch.Tensor, predictions: torch.Tensor, question_index_groups,
                                 careful: bool = False, *, sum_over_questions: bool = False) -> torch.Tensor:
    """Per-galaxy, per-question Dirichlet-multinomial loss.

    Parameters
    ----------
    labels : Tensor (B, n_answers)
        Vote counts (int or float), columns in schema ``label_cols`` order.
    predictions : Tensor (B, n_answers)
        Predicted concentrations.
    question_index_groups : sequence of (int, int)
        Inclusive answer index range of each question.
    careful : bool
        Accepted for upstream compatibility only. Upstream replaced NaN losses with 0; zoobot never hides
        non-finite values (training stops with an error instead), so ``True`` only warns.
    sum_over_questions : bool, keyword-only, default False
        True: return one loss per galaxy (the sum over questions), shape (B,). The same keyword as the
        TensorFlow twin, so a call means the same thing in both backends.

    Returns
    -------
    Tensor (B, n_questions)
        0 exactly where a question has no votes; (B,) if ``sum_over_questions``.

    Raises
    ------
    ValueError
        (E10) if the widths of labels/predictions do not match the groups.

    Examples
    --------
    >>> import torch
    >>> calculate_multiquestion_loss(torch.zeros(2, 3), torch.ones(2, 3), [(0, 1), (2, 2)]).shape
    torch.Size([2, 2])
    """
    if careful:
        warnings.warn(
            "careful=True is accepted for upstream compatibility but ignored: zoobot does not replace NaN losses "
            "(non-finite predictions stop training with an error instead).",
            UserWarning,
            stacklevel=2,
        )
    groups = validate_question_index_groups(question_index_groups)
    columns, owners = _answer_to_question_index(groups)
    _check_widths(labels, predictions, groups[-1][1] + 1)
    loss = _multiquestion_nll(labels, predictions, columns.to(predictions.device), owners.to(predictions.device),
                              len(groups))
    return loss.sum(dim=1) if sum_over_questions else loss


class MultiquestionLoss(nn.Module):
    """Sum of per-question Dirichlet-multinomial losses. Build it with :func:`get_multiquestion_loss`.

    Call as ``loss(labels, predictions)``: labels (B, n_answers) vote counts, predictions (B, n_answers)
    concentrations. Picklable; holds no parameters or persistent state.

    Parameters
    ----------
    question_index_groups : sequence of (int, int)
        Inclusive answer index range of each question (``schema.question_index_groups``).
    sum_over_questions : bool
        True: one loss per galaxy (sum over questions). False: keep the question axis.
    reduction : {'mean', 'sum', 'none'}
        Over the batch axis: mean, sum, or none (returns (B,) or (B, n_questions)).
    """

    def __init__(self, question_index_groups, sum_over_questions: bool = True, reduction: str = "mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            from zoobot.shared.errors import unknown_option_error

            raise unknown_option_error("reduction", reduction, _REDUCTIONS)
        sum_over_questions = check_bool("sum_over_questions", sum_over_questions)
        self.question_index_groups = validate_question_index_groups(question_index_groups)
        self.sum_over_questions = sum_over_questions
        self.reduction = reduction
        self.n_questions = len(self.question_index_groups)
        self.n_answers = self.question_index_groups[-1][1] + 1
        columns, owners = _answer_to_question_index(self.question_index_groups)
        # not persistent: never written into a model's state_dict, but moved by .to(device)
        self.register_buffer("_columns", columns, persistent=False)
        self.register_buffer("_owners", owners, persistent=False)

    def forward(self, labels: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
        _check_widths(labels, predictions, self.n_answers)
        columns, owners = self._columns, self._owners
        if columns.device != predictions.device:
            columns, owners = columns.to(predictions.device), owners.to(predictions.device)
        loss = _multiquestion_nll(labels, predictions, columns, owners, self.n_questions)
        if self.sum_over_questions:
            loss = loss.sum(dim=1)
        if self.reduction == "mean":
            return loss.mean(dim=0)
        if self.reduction == "sum":
            return loss.sum(dim=0)
        return loss

    def vote_fraction_nll(self, labels: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
        """:func:`vote_fraction_nll` with this loss's question groups, (B, n_questions), unreduced."""
        _check_widths(labels, predictions, self.n_answers)
        columns, owners = self._columns, self._owners
        if columns.device != predictions.device:
            columns, owners = columns.to(predictions.device), owners.to(predictions.device)
        return _fraction_nll(labels, predictions, columns, owners, self.n_questions)

    def extra_repr(self) -> str:
        return (f"n_questions={self.n_questions}, n_answers={self.n_answers}, "
                f"sum_over_questions={self.sum_over_questions}, reduction={self.reduction!r}")


def get_multiquestion_loss(question_index_groups, sum_over_questions: bool = True,
                           reduction: str = "mean") -> MultiquestionLoss:
    """Build the multi-question Dirichlet-multinomial loss.

    Parameters
    ----------
    question_index_groups : sequence of (int, int)
        ``schema.question_index_groups``: inclusive (first, last) answer column of each question.
    sum_over_questions : bool, default True
        Sum the per-question losses of each galaxy (False keeps a question axis).
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        Reduction over galaxies.

    Returns
    -------
    MultiquestionLoss
        Call as ``loss(labels, predictions)``.

    Raises
    ------
    TypeError, ValueError
        If the groups are malformed (checked here); (E10) widths that disagree are reported at call time.

    Examples
    --------
    >>> from zoobot.shared import schemas  # doctest: +SKIP
    >>> loss = get_multiquestion_loss(schemas.decals_dr5_ortho_schema.question_index_groups)  # doctest: +SKIP
    >>> get_multiquestion_loss([(0, 1)], reduction='none').n_questions
    1
    """
    return MultiquestionLoss(question_index_groups, sum_over_questions=sum_over_questions, reduction=reduction)


def per_question_dirichlet_loss(preds: torch.Tensor, labels: torch.Tensor, question_index_groups,
                                sum_over_questions: bool = False) -> torch.Tensor:
    """Loss per galaxy and question, not reduced over the batch; predictions first (the upstream v2 order).

    :func:`calculate_multiquestion_loss` with the first two arguments swapped.

    Parameters
    ----------
    preds : Tensor (B, n_answers)
        Predicted concentrations.
    labels : Tensor (B, n_answers)
        Vote counts.
    question_index_groups : sequence of (int, int)
        Inclusive answer index range per question.
    sum_over_questions : bool, default False
        Sum over questions, giving (B,).

    Returns
    -------
    Tensor (B, n_questions) or (B,)

    Examples
    --------
    >>> per_question_dirichlet_loss(torch.ones(2, 3), torch.zeros(2, 3), [(0, 2)], sum_over_questions=True)
    tensor([0., 0.])
    """
    return calculate_multiquestion_loss(labels, preds, question_index_groups, sum_over_questions=sum_over_questions)


def get_dirichlet_loss_func(question_index_groups):
    """:func:`per_question_dirichlet_loss` with the groups bound: ``loss_func(preds, labels) -> (B, n_questions)``.

    Picklable (a ``functools.partial``).

    Examples
    --------
    >>> import pickle
    >>> f = get_dirichlet_loss_func([(0, 1)])
    >>> pickle.loads(pickle.dumps(f)).keywords['question_index_groups']
    [(0, 1)]
    """
    import functools

    groups = validate_question_index_groups(question_index_groups)
    return functools.partial(per_question_dirichlet_loss, question_index_groups=groups)
