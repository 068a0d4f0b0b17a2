"""VGG-16 with batch norm for small images (CIFAR style: 512-d head after global pooling)."""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

__all__ = ["CifarVGG16", "VGG16_CFG"]

# "M" = 2x2 max-pool; pools are skipped once the map is 1x1, so 8-32 px inputs all work.
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class CifarVGG16(nn.Module):
    """VGG-16-BN: 13 conv-BN-ReLU layers, five 2x2 pools (each only while the map is > 1 px), linear head.

    Args:
        num_classes: Nc.
        in_chans: input channels C.
        image_size: input side, used to drop pools that would shrink a 1x1 map.
    Shapes:
        x: (B, C, H, W) -> logits (B, Nc).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, image_size: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, side = in_chans, int(image_size)
        for width in VGG16_CFG:
            if width == "M":
                if side >= 2:
                    layers.append(nn.MaxPool2d(2))
                    side //= 2
                continue
            layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            cin = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))
