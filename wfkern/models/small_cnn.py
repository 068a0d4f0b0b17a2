"""Small CNNs for the embedded digits (8x8 or 16x16 inputs): cheap enough for a CPU demo."""

from __future__ import annotations

from typing import Sequence

import torch.nn as nn
from torch import Tensor

__all__ = ["SmallCNN", "SmallVGG"]


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Wide-but-shallow CNN: 3x3 conv-BN-ReLU blocks, one 2x2 max-pool, global average pool, linear head.

    The default ``widths=(96, 192, 192)`` pools after the first block; WF masks one gate per filter,
    so width (spare filters) is what lets one class's filters close while the others stay open
    (docs/untraining.md: 64/128/128 left about 1 point less Acc_r after untraining).

    Args:
        num_classes: Nc.
        in_chans: input channels C.
        widths: filters of each conv block.
        pool_after: indices of blocks followed by a 2x2 max-pool.
    Shapes:
        x: (B, C, H, W) -> logits (B, Nc).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, widths: Sequence[int] = (96, 192, 192),
                 pool_after: Sequence[int] = (0,)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_chans
        for i, w in enumerate(widths):
            layers.append(_conv_bn(cin, w))
            if i in pool_after:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


class SmallVGG(nn.Module):
    """A second small architecture: two conv stages (2 convs each, with bias, no BN) and an MLP head.

    Args:
        num_classes: Nc.
        in_chans: input channels C.
        widths: filters of the two stages.
        hidden: width of the hidden fully-connected layer.
    Shapes:
        x: (B, C, H, W), H = W divisible by 4 -> logits (B, Nc).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, widths: Sequence[int] = (64, 128),
                 hidden: int = 128) -> None:
        super().__init__()
        first, second = widths
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, first, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(first, first, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(first, second, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(second, second, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveMaxPool2d(1))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(second, hidden), nn.ReLU(inplace=True),
                                  nn.Dropout(0.2), nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
