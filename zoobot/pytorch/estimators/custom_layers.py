"""The Dirichlet head and its layers: Monte Carlo dropout, the scaled sigmoid, and :func:`get_dirichlet_head`.

Examples
--------
>>> import torch
>>> layer = ScaledSigmoid()
>>> layer(torch.tensor([0.0])).item()
51.0
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from zoobot.shared.validation import check_fraction, check_int

__all__ = ["MCDropout", "PermaDropout", "ScaledSigmoid", "get_pytorch_dirichlet_head", "get_dirichlet_head"]


class MCDropout(nn.Dropout):
    """Dropout that stays active in evaluation mode (Monte Carlo dropout).

    Repeated predictions of the same image then differ; their spread approximates the model's
    uncertainty. Set ``mc_active = False`` to make it behave like ordinary dropout (off in ``eval()``):
    :class:`~zoobot.pytorch.estimators.define_model.ZoobotTree` does this during validation and testing.

    Parameters
    ----------
    p : float
        Probability of zeroing each feature.

    Examples
    --------
    >>> import torch
    >>> layer = MCDropout(0.5).eval()
    >>> bool((layer(torch.ones(1000)) == 0).any())   # still dropping in eval mode
    True
    """

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__(p=p, inplace=inplace)
        self.mc_active = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=self.training or self.mc_active, inplace=self.inplace)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mc_active={self.mc_active}"


#: Upstream (Zoobot v0/v1) name of :class:`MCDropout`.
PermaDropout = MCDropout


class ScaledSigmoid(nn.Module):
    """Map logits to Dirichlet concentrations: ``alpha = 1 + 100 * sigmoid(z)``, in (1, 101).

    Bounded concentrations keep the Dirichlet-multinomial loss well behaved: no concentration can
    collapse to 0 or explode.

    Examples
    --------
    >>> import torch
    >>> ScaledSigmoid()(torch.tensor([-50.0, 50.0])).tolist()
    [1.0, 101.0]
    """

    offset = 1.0
    scale = 100.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.offset + self.scale * torch.sigmoid(x)

    def extra_repr(self) -> str:
        return f"alpha = {self.offset:g} + {self.scale:g} * sigmoid(z)"


# ---------------------------------------------------------------------------------------------
# the Dirichlet head, built from these layers
# ---------------------------------------------------------------------------------------------

def get_pytorch_dirichlet_head(encoder_dim: int, output_dim: int, test_time_dropout: bool,
                               dropout_rate: float) -> nn.Sequential:
    """Dirichlet head: dropout -> Linear(encoder_dim, output_dim) -> ``1 + 100 * sigmoid``.

    Parameters
    ----------
    encoder_dim : int
        Input features.
    output_dim : int
        Answers (concentrations) to predict.
    test_time_dropout : bool
        Use :class:`~zoobot.pytorch.estimators.custom_layers.MCDropout` (active at inference, for
        Monte Carlo dropout) instead of ordinary dropout.
    dropout_rate : float
        Dropout probability in [0, 1).

    Returns
    -------
    torch.nn.Sequential

    Examples
    --------
    >>> import torch
    >>> head = get_pytorch_dirichlet_head(128, 34, test_time_dropout=False, dropout_rate=0.2).eval()
    >>> alpha = head(torch.randn(2, 128))
    >>> bool(((alpha >= 1) & (alpha <= 101)).all())
    True
    """
    encoder_dim = check_int("encoder_dim", encoder_dim, minimum=1)
    output_dim = check_int("output_dim", output_dim, minimum=1)
    dropout_rate = check_fraction("dropout_rate", dropout_rate, allow_one=False)
    dropout = MCDropout(p=dropout_rate) if test_time_dropout else nn.Dropout(p=dropout_rate)
    return nn.Sequential(dropout, nn.Linear(encoder_dim, output_dim), ScaledSigmoid())


#: Backend-neutral alias of :func:`get_pytorch_dirichlet_head`.
get_dirichlet_head = get_pytorch_dirichlet_head
