"""``tiny_cnn``: a four-convolution encoder for tests, examples and smoke runs.

Defined identically in both backends (twin: ``zoobot.tensorflow.estimators.tiny_cnn``): 4 blocks of
[Conv 3x3 'same', no bias -> BatchNorm (eps 1e-5, momentum 0.1) -> ReLU -> MaxPool 2x2], channels
C -> 16 -> 32 -> 64 -> 128, global average pooling: 97 392 trainable parameters for C = 1, 97 680 for C = 3.

Examples
--------
>>> import torch
>>> encoder = TinyCNN(channels=1)
>>> encoder(torch.zeros(2, 1, 32, 32)).shape
torch.Size([2, 128])
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from zoobot.shared.validation import check_int

__all__ = ["TinyCNN", "TINY_CNN_WIDTHS"]

#: Output channels of the four blocks.
TINY_CNN_WIDTHS = (16, 32, 64, 128)


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)),
        ("bn", nn.BatchNorm2d(out_channels, eps=1e-5, momentum=0.1)),
        ("act", nn.ReLU(inplace=True)),
        ("pool", nn.MaxPool2d(kernel_size=2)),
    ]))


class TinyCNN(nn.Module):
    """The ``tiny_cnn`` encoder: (B, C, H, W) -> pooled features (B, 128).

    Parameters
    ----------
    channels : int
        Input channels (1 or 3).

    Attributes
    ----------
    blocks : nn.Sequential
        The four conv blocks, input side first (used by finetuning to pick blocks to train).
    num_features : int
        128, the pooled feature dimension (timm convention).
    """

    def __init__(self, channels: int = 1):
        super().__init__()
        channels = check_int("channels", channels, minimum=1)
        widths = (channels, *TINY_CNN_WIDTHS)
        self.channels = channels
        self.blocks = nn.Sequential(*[_block(widths[i], widths[i + 1]) for i in range(len(TINY_CNN_WIDTHS))])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = TINY_CNN_WIDTHS[-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map before pooling, (B, 128, H/16, W/16)."""
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.forward_features(x)), 1)
