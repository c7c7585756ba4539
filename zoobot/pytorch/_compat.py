"""Old names of the PyTorch backend, in one place; each warns ``DeprecationWarning`` naming its replacement.

The modules that used to hold these names re-export them from here, so old code keeps running. Names
that the upstream documentation shows without deprecation (``get_pytorch_encoder``,
``get_pytorch_dirichlet_head``) are plain aliases in their modules, not here. See
docs/compatibility.md for the list of aliases in both backends.
"""
from __future__ import annotations

from zoobot.pytorch.estimators import losses as _losses
from zoobot.shared.deprecation import deprecated_alias

__all__ = ["losses_dirichlet_loss", "define_model_dirichlet_loss"]

#: ``zoobot.pytorch.training.losses.dirichlet_loss(labels_for_q, concentrations_for_q)``: one question's loss.
losses_dirichlet_loss = deprecated_alias(
    _losses.single_question_dirichlet_loss, "zoobot.pytorch.training.losses.dirichlet_loss",
    "zoobot.pytorch.training.losses.single_question_dirichlet_loss")

#: ``zoobot.pytorch.estimators.define_model.dirichlet_loss(preds, labels, question_index_groups, ...)``.
define_model_dirichlet_loss = deprecated_alias(
    _losses.per_question_dirichlet_loss, "zoobot.pytorch.estimators.define_model.dirichlet_loss",
    "zoobot.pytorch.estimators.define_model.per_question_dirichlet_loss")
