"""Small randomly initialised models, patched with random gates, and their wfkern checkpoints, for the export tests."""
from __future__ import annotations

import torch
import torchvision

import wfkern

NUM_CLASSES = 10
IMAGE = 32
# timm's ViT-Tiny cut to two blocks with 4-px patches at 32 px: the architecture of vit_tiny, a fraction of the work.
VIT_KWARGS = {"depth": 2, "patch_size": 4}


def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=NUM_CLASSES).eval()


def vit_tiny():
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", num_classes=NUM_CLASSES, img_size=IMAGE, **VIT_KWARGS).eval()


BUILDERS = {"resnet18": (resnet18, "torchvision:resnet18", {}), "vit_tiny": (vit_tiny, "timm:vit_tiny_patch16_224",
                                                                           VIT_KWARGS)}


def scramble(wf, seed=0):
    """Gate logits N(0, 2): every class's gates differ, many far from the untraining start."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in wf.gate_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 2)
    return wf


def patched(name, seed=0):
    """(plain model, WF model with random gates) of ``name``."""
    model = BUILDERS[name][0]()
    return model, scramble(wfkern.patch(model, num_classes=NUM_CLASSES), seed)


def inputs(batch=4, seed=1):
    return torch.randn(batch, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


def write_checkpoint_and_filters(name, folder, seed=0):
    """(checkpoint path, filters path, WF model) of ``name`` saved the way ``wfkern import`` / ``unlearn`` save them."""
    model, wf = patched(name, seed)
    _, arch, kwargs = BUILDERS[name]
    checkpoint, filters = str(folder / f"{name}.safetensors"), str(folder / f"{name}_filters.safetensors")
    wfkern.save_model(model, checkpoint, arch=arch, image_size=IMAGE, dataset="cifar10", **kwargs)
    wf.save_gates(filters)
    return checkpoint, filters, wf
