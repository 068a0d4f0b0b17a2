"""Toy models for the metrics tests: a model whose relevant filter per class is known."""

import math

import torch
from torch import nn


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


def evaluated_wf(insdel_steps: int) -> dict:
    """``evaluate`` of the known-filter model as a WF model with its "unlearned" gates (acc, ZRF, insertion /
    deletion over every class), its filter-class relations and a one-run cost record: the WF-Net results of the
    report tests."""
    from torch.utils.data import TensorDataset

    from wfkern.metrics import EvalSettings, evaluate, filter_class_relations
    from wfkern.patch import patch

    model, alpha = known_filter_model(3, 4)
    wf = patch(model, num_classes=3)
    with torch.no_grad():
        wf.wf_layers()["0"].alpha_w.copy_(alpha)
    x, y = one_hot_images(3, 4)
    res = evaluate(wf, TensorDataset(x, y), progress=False, class_names=["zero", "one", "two"],
                   settings=EvalSettings(metrics=("acc", "zrf", "insdel"), insdel_steps=insdel_steps))
    res["relations"] = filter_class_relations(wf, top_k=2, min_classes=1)
    res["cost"] = {"method": "wfnet", "all_classes_runs": 1, "all_classes_seconds": 12.0, "all_classes_bytes": 2048}
    return res
