"""The Dirichlet-multinomial loss, at its documented import path ``zoobot.pytorch.training.losses``.

The implementation lives in :mod:`zoobot.pytorch.estimators.losses` (below both ``estimators`` and
``training``); every name here is the same object. ``dirichlet_loss`` is the deprecated name of
:func:`single_question_dirichlet_loss`. See docs/components/training.md.

Examples
--------
>>> from zoobot.pytorch.training import losses
>>> losses.get_multiquestion_loss([(0, 1), (2, 4)]).n_questions
2
"""
from zoobot.pytorch._compat import losses_dirichlet_loss as dirichlet_loss
from zoobot.pytorch.estimators.losses import (
    MultiquestionLoss,
    calculate_multiquestion_loss,
    get_dirichlet_neg_log_prob,
    get_multiquestion_loss,
    single_question_dirichlet_loss,
    validate_question_index_groups,
)

__all__ = [
    "MultiquestionLoss",
    "get_multiquestion_loss",
    "calculate_multiquestion_loss",
    "single_question_dirichlet_loss",
    "dirichlet_loss",
    "get_dirichlet_neg_log_prob",
    "validate_question_index_groups",
]
