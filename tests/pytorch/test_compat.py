"""Old PyTorch names (zoobot.pytorch._compat): documented ones are plain aliases, renamed ones warn
DeprecationWarning naming the new name (docs/compatibility.md)."""
import warnings

import pytest
import torch

from zoobot.pytorch import _compat
from zoobot.pytorch.estimators import define_model, encoders, pretrained_encoders
from zoobot.pytorch.estimators import losses as estimator_losses
from zoobot.pytorch.training import losses


def test_upstream_documented_encoder_name_is_a_plain_alias():
    assert define_model.get_pytorch_encoder is encoders.get_encoder is define_model.get_encoder
    assert define_model.create_encoder is pretrained_encoders.create_encoder
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert define_model.get_pytorch_encoder("tiny_cnn", channels=1).num_features == 128


def test_describing_an_encoder_lives_in_encoders_and_is_re_exported():
    for name in ("encoder_architecture", "encoder_channels", "encoder_input_size", "encoder_build_kwargs",
                 "rebuild_encoder"):
        assert getattr(pretrained_encoders, name) is getattr(encoders, name), name
    encoder = encoders.rebuild_encoder("tiny_cnn", 3)
    assert encoders.encoder_architecture(encoder) == "tiny_cnn" and encoders.encoder_channels(encoder) == 3


@pytest.mark.parametrize("module, old, new", [
    (losses, "dirichlet_loss", "single_question_dirichlet_loss"),
    (define_model, "dirichlet_loss", "per_question_dirichlet_loss"),
])
def test_renamed_losses_warn_with_the_new_name_and_keep_the_signature(module, old, new):
    import inspect

    alias, replacement = getattr(module, old), getattr(estimator_losses, new)
    assert alias.__wrapped__ is replacement and alias in (_compat.losses_dirichlet_loss,
                                                          _compat.define_model_dirichlet_loss)
    assert inspect.signature(alias) == inspect.signature(replacement)
    votes, concentrations = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]), torch.full((2, 3), 2.0)
    args = (votes, concentrations) if module is losses else (concentrations, votes, [(0, 2)])
    with pytest.warns(DeprecationWarning, match=rf"\.{old} is deprecated: use .*\.{new} \(same result\)"):
        assert torch.equal(alias(*args), replacement(*args))
