"""Benchmark sizes per device: small on the 2-core CPU machine, the issue's sizes on a GPU."""
from __future__ import annotations

import torch

# model name -> (batch, resolution) per device; GPU: bf16, batch 256, 224 px (issue #5)
MODEL_SIZES = {
    "cpu": {"resnet18": (32, 64), "vit_small": (32, 64)},
    "cuda": {"resnet18": (256, 224), "resnet50": (256, 224), "vit_small": (256, 224)},
}
DTYPE = {"cpu": torch.float32, "cuda": torch.bfloat16}
ROUNDS = {"cpu": dict(rounds=15, warmup_rounds=3), "cuda": dict(rounds=50, warmup_rounds=10)}
NUM_CLASSES = 10


def build_model(name: str, resolution: int):
    import torchvision

    if name == "resnet18":
        return torchvision.models.resnet18(num_classes=NUM_CLASSES)
    if name == "resnet50":
        return torchvision.models.resnet50(num_classes=NUM_CLASSES)
    if name == "vit_small":
        import timm

        return timm.create_model("vit_small_patch16_224", num_classes=NUM_CLASSES, img_size=resolution)
    raise ValueError(name)


def make_workload(name: str, device: str):
    """(plain model, WF model with random gates, input batch, mixed labels) for a benchmark."""
    import wfkern

    batch, resolution = MODEL_SIZES[device][name]
    torch.manual_seed(0)
    model = build_model(name, resolution).eval().to(device, DTYPE[device]).requires_grad_(False)
    wf = wfkern.patch(model, NUM_CLASSES)  # frozen like the plain model: the floor is bwd-to-input only
    with torch.no_grad():
        for p in wf.alpha_parameters():
            p.normal_(0, 3)
    x = torch.randn(batch, 3, resolution, resolution, device=device, dtype=DTYPE[device])
    labels = torch.randint(-1, NUM_CLASSES, (batch,), device=device)
    return model, wf, x, labels
