"""Toy WF models for the metrics tests: a model whose relevant filter per class is known."""

import math

import torch
from torch import nn


class ToyWFLayer(nn.Module):
    """Minimal stand-in with the WF layer contract (``alpha_w`` (Nc, C), ``alpha_b`` None, ``base``)."""

    def __init__(self, base: nn.Conv2d, num_classes: int):
        super().__init__()
        self.base = base
        self.alpha_w = nn.Parameter(torch.full((num_classes, base.out_channels), 3.0))
        self.alpha_b = None
        self.forget = None

    def forward(self, x):
        y = self.base(x)
        if self.forget is None:
            return y
        mask = torch.ones(y.shape[0], y.shape[1], device=y.device)
        sel = self.forget >= 0
        mask[sel] = torch.sigmoid(self.alpha_w[self.forget[sel]])
        return y * mask[:, :, None, None]


class ToyWF(nn.Module):
    """The contract of ``wfkern.patch``'s model (``wf(x, forget=c)``, ``wf_layers()``) around one conv."""

    def __init__(self, model: nn.Sequential, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        model[0] = ToyWFLayer(model[0], num_classes)
        self.model = model

    def wf_layers(self):
        return {"0": self.model[0]}

    def alpha_parameters(self):
        return [self.model[0].alpha_w]

    def forward(self, x, forget=None):
        if forget is not None and not torch.is_tensor(forget):
            forget = torch.full((x.shape[0],), int(forget), dtype=torch.long)
        self.model[0].forget = forget
        try:
            return self.model(x)
        finally:
            self.model[0].forget = None


def known_filter_model(num_classes: int = 3, per_class: int = 4) -> tuple[nn.Sequential, torch.Tensor]:
    """A 1x1 conv with ``per_class`` filters per class; filter ``per_class*c`` alone carries class ``c``.

    Input x: (B, Nc, 1, 1), one-hot on the channel of its class. Filter ``p*c`` feeds logit ``c`` (weight 10);
    the other filters are zero. A background logit (index Nc, constant 5) wins when the class filter is
    closed. Returns the plain model ((B, Nc + 1) logits) and the (Nc, Nc*p) alpha rows of the "unlearned"
    state: the relevant filter of each class closed (-30), the rest open (+30).
    """
    nc, p = num_classes, per_class
    conv = nn.Conv2d(nc, nc * p, 1, bias=False)
    lin = nn.Linear(nc * p, nc + 1)
    alpha = torch.full((nc, nc * p), 30.0)
    with torch.no_grad():
        conv.weight.zero_()
        lin.weight.zero_()
        lin.bias.zero_()
        lin.bias[nc] = 5.0
        for c in range(nc):
            conv.weight[p * c, c] = 1.0
            lin.weight[c, p * c] = 10.0
            alpha[c, p * c] = -30.0
    return nn.Sequential(conv, nn.Flatten(), lin), alpha


def known_ratio(num_classes: int = 3) -> float:
    """Class confidence with its filter closed (logits 0.., background 5) over open (class logit 10)."""
    closed = 1.0 / (num_classes + math.exp(5.0))
    opened = math.exp(10.0) / (math.exp(10.0) + num_classes - 1 + math.exp(5.0))
    return closed / opened


def one_hot_images(num_classes: int, n_per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = nn.functional.one_hot(y, num_classes).float().reshape(-1, num_classes, 1, 1)
    return x, y
